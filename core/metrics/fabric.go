package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/celluster/celluster/core/fabric"
)

// WatchFabric exports a node's fabric counters, read with stats on every
// scrape, as celluster_fabric_* metrics. stats returns false while the node
// has no fabric; the metrics are then absent. Only the first call counts.
func (m *Metrics) WatchFabric(stats func() (fabric.Stats, bool)) {
	m.fabricOnce.Do(func() { m.reg.MustRegister(newFabricCollector(stats)) })
}

// fabricCollector reports fabric.Stats as const metrics.
type fabricCollector struct {
	stats func() (fabric.Stats, bool)

	packets, bytes, datagrams, gossip, streams *prometheus.Desc
	gossipDropped, dials, dialFailures         *prometheus.Desc
	connections                                *prometheus.Desc
}

var _ prometheus.Collector = (*fabricCollector)(nil)

func newFabricCollector(stats func() (fabric.Stats, bool)) *fabricCollector {
	dir := []string{"direction"}
	return &fabricCollector{
		stats: stats,
		packets: prometheus.NewDesc("celluster_fabric_packets_total",
			"QUIC packets the node's fabric sent or received (direction), all connections, handshakes and acknowledgements included.", dir, nil),
		bytes: prometheus.NewDesc("celluster_fabric_bytes_total",
			"Bytes of the QUIC packets the node's fabric sent or received (direction), without UDP and IP headers.", dir, nil),
		datagrams: prometheus.NewDesc("celluster_fabric_datagrams_total",
			"QUIC datagrams the node's fabric sent or received (direction), gossip and application alike.", dir, nil),
		gossip: prometheus.NewDesc("celluster_fabric_gossip_packets_total",
			"Membership (memberlist) packets the node's fabric sent or received (direction).", dir, nil),
		streams: prometheus.NewDesc("celluster_fabric_streams_total",
			"QUIC streams the node opened (direction=sent) or its peers opened (direction=received).", dir, nil),
		gossipDropped: prometheus.NewDesc("celluster_fabric_gossip_dropped_total",
			"Membership packets dropped: a peer's queue or memberlist's was full, or the peer could not be reached.", nil, nil),
		dials: prometheus.NewDesc("celluster_fabric_connections_opened_total",
			"Connections established, by who opened them (side=dial: this node; side=accept: a peer).", []string{"side"}, nil),
		dialFailures: prometheus.NewDesc("celluster_fabric_dial_failures_total",
			"Connection attempts of this node that failed.", nil, nil),
		connections: prometheus.NewDesc("celluster_fabric_connections",
			"Connections open now.", nil, nil),
	}
}

// Describe sends every metric's description.
func (c *fabricCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.packets, c.bytes, c.datagrams, c.gossip, c.streams, c.gossipDropped, c.dials, c.dialFailures, c.connections} {
		ch <- d
	}
}

// Collect reads the counters and sends them.
func (c *fabricCollector) Collect(ch chan<- prometheus.Metric) {
	s, ok := c.stats()
	if !ok {
		return
	}
	pair := func(d *prometheus.Desc, sent, received uint64) {
		send(ch, d, prometheus.CounterValue, float64(sent), "sent")
		send(ch, d, prometheus.CounterValue, float64(received), "received")
	}
	pair(c.packets, s.PacketsSent, s.PacketsReceived)
	pair(c.bytes, s.BytesSent, s.BytesReceived)
	pair(c.datagrams, s.DatagramsSent, s.DatagramsReceived)
	pair(c.gossip, s.GossipSent, s.GossipReceived)
	pair(c.streams, s.StreamsOpened, s.StreamsAccepted)
	send(ch, c.gossipDropped, prometheus.CounterValue, float64(s.GossipDropped))
	send(ch, c.dials, prometheus.CounterValue, float64(s.Dials), "dial")
	send(ch, c.dials, prometheus.CounterValue, float64(s.Accepts), "accept")
	send(ch, c.dialFailures, prometheus.CounterValue, float64(s.DialFailures))
	send(ch, c.connections, prometheus.GaugeValue, float64(s.Connections))
}
