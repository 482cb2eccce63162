package metrics

import (
	"strings"
	"sync/atomic"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/celluster/celluster/core/fabric"
)

// Each fabric counter comes out under its own name and label, read anew on
// every scrape; without a fabric there is no celluster_fabric_ metric.
func TestFabricMetrics(t *testing.T) {
	var have atomic.Bool
	var base atomic.Uint64
	m := New(nil, nil)
	m.WatchFabric(func() (fabric.Stats, bool) {
		b := base.Load()
		return fabric.Stats{
			PacketsSent: b + 1, PacketsReceived: b + 2, BytesSent: b + 3, BytesReceived: b + 4,
			DatagramsSent: b + 5, DatagramsReceived: b + 6,
			GossipSent: b + 7, GossipReceived: b + 8, GossipDropped: b + 9,
			StreamsOpened: b + 10, StreamsAccepted: b + 11,
			Dials: b + 12, Accepts: b + 13, DialFailures: b + 14, Connections: b + 15,
		}, have.Load()
	})
	m.WatchFabric(func() (fabric.Stats, bool) {
		t.Error("a second WatchFabric was registered")
		return fabric.Stats{}, true
	})
	url := serve(t, m)

	mfs, _ := scrape(t, url)
	for name := range mfs {
		if strings.HasPrefix(name, "celluster_fabric_") {
			t.Errorf("%s without a fabric", name)
		}
	}

	have.Store(true)
	for _, b := range []uint64{0, 100} {
		base.Store(b)
		mfs, _ = scrape(t, url)
		v := func(n uint64) float64 { return float64(b + n) }
		sent, received := map[string]string{"direction": "sent"}, map[string]string{"direction": "received"}
		c := dto.MetricType_COUNTER
		wantValue(t, mfs, "celluster_fabric_packets_total", sent, c, v(1))
		wantValue(t, mfs, "celluster_fabric_packets_total", received, c, v(2))
		wantValue(t, mfs, "celluster_fabric_bytes_total", sent, c, v(3))
		wantValue(t, mfs, "celluster_fabric_bytes_total", received, c, v(4))
		wantValue(t, mfs, "celluster_fabric_datagrams_total", sent, c, v(5))
		wantValue(t, mfs, "celluster_fabric_datagrams_total", received, c, v(6))
		wantValue(t, mfs, "celluster_fabric_gossip_packets_total", sent, c, v(7))
		wantValue(t, mfs, "celluster_fabric_gossip_packets_total", received, c, v(8))
		wantValue(t, mfs, "celluster_fabric_gossip_dropped_total", nil, c, v(9))
		wantValue(t, mfs, "celluster_fabric_streams_total", sent, c, v(10))
		wantValue(t, mfs, "celluster_fabric_streams_total", received, c, v(11))
		wantValue(t, mfs, "celluster_fabric_connections_opened_total", map[string]string{"side": "dial"}, c, v(12))
		wantValue(t, mfs, "celluster_fabric_connections_opened_total", map[string]string{"side": "accept"}, c, v(13))
		wantValue(t, mfs, "celluster_fabric_dial_failures_total", nil, c, v(14))
		wantValue(t, mfs, "celluster_fabric_connections", nil, dto.MetricType_GAUGE, v(15))
	}
}
