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
// writing). Peer.Request is the client side of one request/response exchange.
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
// The defaults (Membership) are tuned for a LAN, tested on loopback:
//
//	ProbeInterval            200ms  each node probes one member per interval
//	ProbeTimeout             100ms  direct ack deadline; indirect probes get the rest of the interval
//	SuspicionMult            3      suspicion timeout = 3 × max(1, log10 N) × ProbeInterval = 600ms for N ≤ 10
//	SuspicionMaxTimeoutMult  3      an unconfirmed suspicion lasts up to 3 × 600ms = 1.8s
//	GossipInterval           50ms   gossip to 3 random members every 50ms
//	PushPullInterval         5s     full state sync with one member
//	GossipToTheDeadTime      5s     a node declared dead still hears gossip for 5s, to refute it
//	TCPTimeout               5s     push/pull streams (Config.DialTimeout)
//	DisableTcpPings          true   the stream fallback would ride the same QUIC connection
//	UDPBufferSize            1100   memberlist packets fit a QUIC datagram
//
// What that gives for a node that stops answering, in a cluster of N ≤ 10:
// some member probes it within (N-1) × 200ms (round-robin over the others;
// sooner with several observers); that probe fails after one ProbeInterval
// (200ms: 100ms direct, then indirect probes); the node is suspect from then
// on and declared dead after the suspicion timeout: 600ms once another member
// confirms the suspicion (N ≥ 3), at most 1.8s unconfirmed. So a failure is
// detected in about 1.0s to 2.4s for N = 3 (worst case (N-1) × 200ms + 200ms
// + 1.8s), and the death is gossiped to everyone within a few GossipIntervals.
// memberlist stretches the probe interval up to 8× (AwarenessMaxMultiplier)
// while the local node itself misses acks: a starved node slows its own
// detection rather than accusing healthy peers.
//
// QUIC connections send a keep-alive every 5s and close after 15s without
// hearing from the peer (MaxIdleTimeout); a peer may open 1024 streams at
// once.
//
// Members reports each member as Alive, Suspect or Dead. memberlist does not
// publish its own suspect state, so Suspect here means memberlist still lists
// the member but the fabric has lost its connection to it (the last
// connection closed or the last dial failed): the window between a node
// closing and memberlist declaring it dead. A node that crashes leaves its
// connections open until their idle timeout (15s), far longer than
// detection takes, so it goes from Alive straight to Dead. memberlist
// reports a graceful Leave and a failure alike; both are Dead here. When a
// member is declared dead the fabric closes its connection to it.
//
// A peer that stops acknowledging must not stall memberlist: packets to each
// peer go through a queue of 64 drained by a goroutine of the peer's, and
// are dropped (as UDP would drop them) when it is full; a packet for a peer
// still being dialed waits behind the dial.
//
// memberlist logs go to the fabric's slog.Logger with component=memberlist,
// at the level memberlist gave them.
package fabric
