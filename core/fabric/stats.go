package fabric

import "sync/atomic"

// Stats are a fabric's counters since Listen. Packets and bytes are QUIC's
// (every packet on every connection, handshakes, acknowledgements and
// retransmissions included, UDP and IP headers not); the rest count what
// the fabric itself sent and received.
type Stats struct {
	// PacketsSent and PacketsReceived count QUIC packets, BytesSent and
	// BytesReceived their bytes, over all connections, closed ones
	// included.
	PacketsSent, PacketsReceived uint64
	BytesSent, BytesReceived     uint64
	// DatagramsSent and DatagramsReceived count QUIC datagrams, gossip and
	// Peer.SendDatagram alike.
	DatagramsSent, DatagramsReceived uint64
	// GossipSent and GossipReceived count memberlist packets (as datagrams
	// or, when too large, as streams); GossipDropped the ones dropped
	// because a peer's queue or memberlist's was full, or the peer could
	// not be reached.
	GossipSent, GossipReceived, GossipDropped uint64
	// StreamsOpened and StreamsAccepted count QUIC streams this node
	// opened and its peers opened.
	StreamsOpened, StreamsAccepted uint64
	// Dials counts connections this node opened (handshake and hello
	// done), Accepts the ones peers opened; DialFailures the attempts that
	// failed.
	Dials, Accepts, DialFailures uint64
	// Connections is the number of connections open now.
	Connections uint64
}

// counters are the fabric's own counts, updated as things happen.
type counters struct {
	datagramsSent, datagramsReceived          atomic.Uint64
	gossipSent, gossipReceived, gossipDropped atomic.Uint64
	streamsOpened, streamsAccepted            atomic.Uint64
	dials, accepts, dialFailures              atomic.Uint64
	// QUIC's counts of connections that have closed.
	closedPacketsSent, closedPacketsReceived atomic.Uint64
	closedBytesSent, closedBytesReceived     atomic.Uint64
}

// Stats returns the fabric's counters. It is cheap enough to call on every
// metrics scrape.
func (f *Fabric) Stats() Stats {
	c := &f.stats
	s := Stats{
		DatagramsSent:     c.datagramsSent.Load(),
		DatagramsReceived: c.datagramsReceived.Load(),
		GossipSent:        c.gossipSent.Load(),
		GossipReceived:    c.gossipReceived.Load(),
		GossipDropped:     c.gossipDropped.Load(),
		StreamsOpened:     c.streamsOpened.Load(),
		StreamsAccepted:   c.streamsAccepted.Load(),
		Dials:             c.dials.Load(),
		Accepts:           c.accepts.Load(),
		DialFailures:      c.dialFailures.Load(),
	}
	// A connection's counts move from the live sum to the closed one under
	// f.mu (removePeer), so none is counted twice or missed.
	f.mu.Lock()
	s.PacketsSent = c.closedPacketsSent.Load()
	s.PacketsReceived = c.closedPacketsReceived.Load()
	s.BytesSent = c.closedBytesSent.Load()
	s.BytesReceived = c.closedBytesReceived.Load()
	for p := range f.all {
		cs := p.conn.ConnectionStats()
		s.PacketsSent += cs.PacketsSent
		s.PacketsReceived += cs.PacketsReceived
		s.BytesSent += cs.BytesSent
		s.BytesReceived += cs.BytesReceived
	}
	s.Connections = uint64(len(f.all))
	f.mu.Unlock()
	return s
}
