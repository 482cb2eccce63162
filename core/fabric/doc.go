// Package fabric is the node-to-node network of Celluster: QUIC (quic-go) on
// one UDP socket per node, mutual TLS bound to SPIFFE node identities, and
// membership with failure detection (hashicorp/memberlist) carried over the
// same authenticated connections.
//
// # Connections and identity
//
// Listen binds one UDP socket and runs one quic.Transport on it for both
// accepting and dialing, so a node's connections all come from its listen
// address and a connection a peer opened to us is reused when we talk to that
// peer. Every handshake is TLS 1.3 with ALPN "celluster/1" and a client
// certificate. The TLS configurations come from Config.TLSServer and
// Config.TLSClient (core/identity's ServerConfig and ClientConfig), fetched
// anew for every handshake so a renewed certificate is used at once. Chain
// verification belongs to the TLS configurations; the fabric refuses a server
// configuration that verifies no client certificate and a client
// configuration that skips verification without a hook of its own. After
// the handshake, Config.VerifyPeer maps the connection to the peer's node
// name (identity.PeerNode) or refuses it.
//
// Every refusal is logged by the side that refused, with the peer's address,
// the SPIFFE ID it claimed and the reason. To make that possible for a server
// configuration with ClientAuth RequireAndVerifyClientCert (where crypto/tls
// would reject a bad chain before any hook runs), the fabric performs the same
// verification crypto/tls would (x509 Verify with ClientCAs, the config's
// Time, client-auth key usage) inside VerifyConnection, then runs the
// configuration's own VerifyPeerCertificate and VerifyConnection hooks; the
// verified chains are passed to those hooks but are not in the connection
// state afterwards. Session tickets are disabled: every handshake is a full
// one.
//
// A dialer learns that the listener accepted its certificate only when the
// listener answers: in TLS 1.3 the client finishes its handshake before the
// server has checked the client certificate. So Dial opens a first stream
// with a frame.TypeHello and waits for the listener's TypeHello. A refused
// dialer gets the refusal from Dial — the listener's TLS alert ("bad
// certificate") when its TLS configuration refused, or application error 1
// when VerifyPeer did — instead of a connection that dies a moment later.
// The reason itself stays in the listener's log.
//
// # Streams and datagrams
//
// A stream starts with a frame (package frame). The fabric peeks at the first
// frame's header and hands the stream, first frame unread, to the handler
// registered for its type with HandleStream; a stream of a type without a
// handler is reset. When the handler returns the fabric ends the stream (FIN
// on the write side, STOP_SENDING on the read side if the peer is still
// writing).
//
// Requests (one frame in, one answer frame out) have handlers of their own,
// registered with HandleRequest, and travel on lanes: a stream that opens
// with a frame.TypeLane frame and then carries one request after another,
// each answered before the next is sent. Peer.Request takes an idle lane
// (opening one when none is idle, its lane frame and first request in one
// write) and puts it back when the answer has come (up to 8 idle per
// peer); a request that fails or whose context ends resets its lane. A
// request is then one packet each way, acknowledgements riding on the next
// ones: a stream per request costs its set-up and a FIN each way (4 packets
// per round trip instead of 2 on loopback). BenchmarkRoundTrip shows it
// beside gRPC with mutual TLS on TCP, same certificates: at 64 bytes a
// lane round trip takes 0.82× gRPC's time (47.7 µs vs 58.2 µs; a stream
// per request 82.6 µs, 1.42×). At 16 KiB it takes 1.45× (268 µs vs
// 185 µs; a stream per request 302 µs): QUIC's packets are at most 1452
// bytes in quic-go, so 16 KiB is 12 packets each way, each sealed on its
// own and segmented by the kernel (GSO), where TCP on loopback moves it
// as one 64 KiB segment. A request of a type with no request handler is
// answered with a frame.TypeError; a peer that opens a stream per request
// is served by the same handlers.
//
// A datagram's first byte says who it is for: 0 memberlist, 1 the handler set
// with HandleDatagram. Datagrams are unreliable and limited to what fits in
// one QUIC packet (1242 bytes on the 1280-byte path QUIC starts with, more
// once path MTU discovery raises it); Peer.SendDatagram reports a larger
// payload as an error naming the limit.
//
// # Membership
//
// Each Fabric runs a memberlist whose Transport is the fabric: memberlist
// packets travel as QUIC datagrams (or, when one does not fit, as a
// frame.TypeGossipPacket stream) and memberlist streams as QUIC streams that
// start with a frame.TypeGossip frame. All gossip is therefore authenticated
// by the same mutual TLS, and a member's gossiped name must match the
// certificate of the connection at its address.
//
// # Failure detection
//
// The aim: a member that crashes is declared dead by every other member
// within 2s at N = 10, and a member that is alive but slow — its host's CPUs
// all taken, its own goroutines busy serving — is never declared dead. The
// two pull against each other (a member silent for longer than the
// suspicion timeout cannot be told from a dead one), so the defaults use
// memberlist's Lifeguard machinery to make a suspicion hard to turn into a
// death, rather than slow probing:
//
//	ProbeInterval            250ms  each member probes one other per interval (round robin)
//	ProbeTimeout             150ms  direct ack deadline; 3 indirect probes get the last 100ms
//	IndirectChecks           3      members asked to probe a member that missed its direct probe
//	SuspicionMult            4      confirmed suspicion: 4 × max(1, log10 N) × 250ms; needs 4-2 = 2 confirmations
//	SuspicionMaxTimeoutMult  8      unconfirmed suspicion: 8 × the confirmed one
//	AwarenessMaxMultiplier   8      a member that itself misses acks probes up to 8× less often
//	GossipInterval           100ms  queued gossip to 3 random members; nothing is sent when nothing is queued
//	PushPullInterval         15s    full state sync with one random member (memberlist stretches it beyond 32)
//	GossipToTheDeadTime      5s     a member declared dead still hears gossip for 5s, to refute it
//	DisableTcpPings          true   the stream fallback would ride the same QUIC connection
//	UDPBufferSize            1100   memberlist packets fit a QUIC datagram
//
// How a suspicion ends (memberlist v0.7.0, state.go suspectNode and
// suspicion.go). A member whose direct probe and indirect probes all fail is
// suspect; the prober gossips it. Every member starts a timer at
// max = 8 × min, where min = 4 × max(1, log10 N) × 250ms (1.0s for N ≤ 10,
// 1.38s at 24, 2s at 100, 3s at 1000). Each further member that suspects it
// independently — its own probe failed too — is a confirmation, and after
// c of the k = 4-2 = 2 wanted the timer is
//
//	max - (max-min) × log(c+1)/log(k+1)   = 8s, 3.6s, 1.0s for c = 0, 1, 2 (N ≤ 10)
//
// (k is 0, and the timer min at once, when fewer than k members could
// confirm: N < 4). The suspect refutes by raising its incarnation as soon as
// it hears the suspicion — piggy-backed on the next probe it gets, or by
// gossip — and the refutation spreads in a few GossipIntervals.
//
// A crash at N = 10: the 9 survivors each probe the victim once per 9
// intervals, at random phases, so the first probe comes after 9/10 of an
// interval on average (0.23s; within 4 intervals with probability 0.995);
// it fails one interval later (0.25s); the others' probes fail at the same
// rate, giving the 2 confirmations well within min; the victim is declared
// dead min = 1.0s after the first suspicion and the news reaches everyone in
// about two gossip rounds (0.2s). Expected: 0.23 + 0.25 + 1.0 + 0.2 ≈ 1.7s.
// The gossip interval barely shows in detection but wakes every member
// each interval, queued gossip or not: with 12 crashes each at N = 10,
// BenchmarkFailureDetection measured 1.57s mean (p50 1.47s) at 50ms,
// 1.55s (1.38s) at 100ms and 1.60s (1.55s) at 200ms, while an idle node
// with its plugins spent 12ms/s less CPU at 200ms than at 50ms. 100ms
// keeps refutations quick (they spread by gossip) at half the wake-ups.
// Before that change, BenchmarkFailureDetection measured 1.55s mean, 1.94s slowest of 5 at
// N = 10 (1.60s at N = 3), beside 5.9s for memberlist's own LAN timing (1s
// probes, 4× suspicion, 6× unconfirmed) over the same fabric.
//
// A live member is declared dead only when three things hold at once: one
// probe and its 3 indirect probes miss their acks (150ms, then 100ms more via
// three other members); two other members' probes miss too (otherwise the
// suspicion lasts 3.6 to 8s); and the member does not refute within 1s of
// the first suspicion. Lifeguard's local health (HealthScore) weighs on the
// other side: a member that misses acks and nacks itself, as a starved one
// does, raises its score and stretches its own probe interval up to 8×
// (2s), so a starved prober raises fewer suspicions; a member that has to
// refute raises its score too. The previous defaults (200ms probes, 100ms
// timeout, suspicion 3× with one confirmation, 3× unconfirmed: 600ms to
// refute) declared live members dead within seconds on a CPU-hogged host;
// TestMembershipNoFalseDeathUnderCPUHog runs five members beside busy
// processes twice the host's cores and a busy goroutine in their own
// process, and fails on any OnLeave.
//
// The fabric adds no loss of its own on this path, and counts what it
// drops (Stats.GossipDropped, 0 in the CPU hog test): a memberlist packet is
// one QUIC datagram (packed ahead of stream data), queued per peer (64) so a
// peer that stops acknowledging stalls only its own queue. QUIC datagrams
// are not retransmitted, like the UDP memberlist was designed for.
//
// Members reports each member as Alive, Suspect or Dead. memberlist does not
// publish its own suspect state, so Suspect here means memberlist still lists
// the member but the fabric has lost its connection to it (the last
// connection closed or the last dial failed): the window between a node
// closing and memberlist declaring it dead. A node that crashes leaves its
// connections open until their idle timeout (60s), far longer than
// detection takes, so it goes from Alive straight to Dead. memberlist
// reports a graceful Leave and a failure alike; both are Dead here.
//
// A peer that stops acknowledging must not stall memberlist: packets to each
// peer go through a queue of 64 drained by a goroutine of the peer's, and
// are dropped (as UDP would drop them) when it is full; a packet for a peer
// still being dialed waits behind the dial.
//
// # Making takeover safe
//
// Membership.OnLeave fires only on a confirmed death, never on a suspicion.
// A member declared dead by mistake that refutes comes back through OnJoin
// with a higher Member.Generation, so a consumer that took over its work
// fences that work by generation and hands it back. A consumer may also
// defer such decisions while HealthScore is above 0: a starved node is the
// likeliest to be wrong. When a member is declared dead the fabric sends a
// probe datagram on the connection to it and closes the connection only if
// nothing arrives within a second: a crashed member's connection goes, a
// live member's streams in flight are not cut.
//
// # Idle cost
//
// memberlist's idle traffic per member is constant in N: one probe and its
// ack per interval each way (4 + 4 datagrams/s), no gossip when nothing
// changes, one push/pull per 15s. The fabric adds QUIC's acknowledgements
// (about one packet per datagram) and, before, a keep-alive on every
// connection every 5s — per member, packets in proportion to N. The fabric
// now sends no keep-alives (Config.KeepAlivePeriod sets one, for NAT):
// probes keep a connection open while its peer is probed at least once per
// MaxIdleTimeout (60s); each pair exchanges probes every (N-1) × 250ms each
// way, so connections stay up to about 240 members; beyond, a connection
// idle for 60s closes and the next probe redials it (one handshake, at most
// 4 per second per member, still flat in N). A member holds at most the
// connections of the peers it probed or was probed by in the last minute.
// BenchmarkIdleCost (members in one process, QUIC packets sent per member
// per second; CPU per member):
//
//	members  no keep-alive       5s keep-alive (before)
//	4        15.3 pkt/s  5.0ms/s  15.4 pkt/s  5.1ms/s
//	12       17.1 pkt/s  2.9ms/s  17.9 pkt/s  3.3ms/s
//	24       16.2 pkt/s  3.0ms/s  22.5 pkt/s  3.1ms/s
//
// Fabric.Stats counts packets, bytes, datagrams, gossip packets, streams,
// dials and drops; core/metrics exports them as celluster_fabric_*.
//
// # Toward internet scale
//
// What each member does is bounded whatever N: one probe per interval (and
// its ack), gossip only of what changed, to 3 members per round, and a
// push/pull with one member per 15s (stretched by memberlist to
// 15s × (ceil(log2 N - 5) + 1) beyond 32 members, because its payload, the
// whole member list, grows with N). What grows is logarithmic: the
// suspicion timeout (× log10 N: 1s at 10, 2s at 100, 3s at 1000, so
// detection takes about 1.6s, 2.6s and 3.6s), the gossip rounds a rumour
// needs (log3 N × 100ms) and the retransmissions of each rumour
// (4 × ceil(log10(N+1))). Connections are bounded by the peers probed in a
// MaxIdleTimeout, not by N.
//
// The simulation (sim_test.go) runs members in one process on an in-memory
// network with exactly this configuration (Membership.apply). To fit many
// members into the test machine's CPU it can dilate protocol time k times
// (every interval and timeout × k; results divided back). Measured on the
// shared 2-core machine (protocol time):
//
//	N    k  msgs/s/member  bytes/s/member  join converged  crash detected  known to all
//	10   2  8.0            396             0.16s           1.60s           1.64s
//	20   2  8.0            396             0.30s           1.75s           1.85s
//	40   2  8.3            421             30.5s           2.66s           3.63s
//	50   1  8.0            396             10.1s           2.53s           2.66s
//	50   10 8.2            417             44.2s           2.09s           2.19s
//	100  4  8.0            396             1.3s            2.48s           2.58s
//	100  10 8.0            408             57.1s           2.46s           2.55s
//
// Those rows predate the join catch-up: a member that has just joined
// pulls a random member's state at 2s and 6s (joinCatchUp), because the
// rumours of the members that joined just before it were spent before
// anyone knew of it, and memberlist's periodic push/pull, which would
// repair that, stretches with N (45s at 100 members, 90s at 1000). With
// it:
//
//	N    k  msgs/s/member  bytes/s/member  join converged  crash detected  known to all
//	10   2  8.0            396             0.11s           1.40s           1.45s
//	40   2  8.0            396             2.02s           2.09s           2.19s
//	250  10 8.8            750             2.04s           2.86s           2.96s
//	500  10 17.3           5000            3.78s           3.17s           3.28s
//
// Idle messages per member stay at 8/s (4 probes, 4 acks) from 10 to 250
// members, and a crash reaches everyone 0.05 to 1s after the first member
// declares it. At 500 the simulation process used about 1.3 of the
// machine's 2 CPUs and the traffic per member doubled; which part of that
// is the protocol (more suspicion and refutation rumours) and which is
// members starved inside one process has not been separated. At 1000
// members, k = 10 is not enough on this machine: after 10 minutes of wall
// time (60s of protocol time) members saw 816 to 967 of the 1000. make
// sim runs 50 to 1000 members (SIM_NODES, SIM_DILATION) and prints the
// same table. Undilated (k = 1) on this machine
// under a load average above 10, 80 members did not converge in 3 minutes:
// the process got the CPU too late for 250ms probes, the same false
// suspicions as on a starved host. So the plan beyond a few hundred
// members: keep the per-member probe rate; make metadata changes small
// broadcasts, never pulls from every peer; and beyond a few thousand, where
// each push/pull carries N × ~100 bytes, split the fleet into zones, each
// its own memberlist on the LAN timing, joined by a few members per zone
// in a second memberlist on WAN timing (as Consul does), so no member's
// state or traffic grows with the size of the whole fleet.
//
// memberlist logs go to the fabric's slog.Logger with component=memberlist,
// at the level memberlist gave them.
package fabric
