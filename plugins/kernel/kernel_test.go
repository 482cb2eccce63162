//go:build linux

package kernel

import (
	"context"
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/celluster/celluster/sdk/plugin"
	"github.com/celluster/celluster/sdk/plugin/plugintest"
)

func portEntry(port uint16, kind uint8, perCPU ...uint64) plugin.BPFMapEntry {
	k := make([]byte, 4)
	binary.LittleEndian.PutUint16(k, port)
	k[2] = kind
	e := plugin.BPFMapEntry{Key: k}
	for _, v := range perCPU {
		e.Values = append(e.Values, binary.LittleEndian.AppendUint64(nil, v))
	}
	return e
}

func slotEntry(slot uint32, perCPU ...uint64) plugin.BPFMapEntry {
	e := plugin.BPFMapEntry{Key: binary.LittleEndian.AppendUint32(nil, slot)}
	for _, v := range perCPU {
		e.Values = append(e.Values, binary.LittleEndian.AppendUint64(nil, v))
	}
	return e
}

func TestDecodePortCountsSumsCPUs(t *testing.T) {
	got, err := decodePortCounts([]plugin.BPFMapEntry{portEntry(8080, kindRetrans, 2, 3), portEntry(22, kindQueued, 1, 0)})
	if err != nil || got[portKey{8080, kindRetrans}] != 5 || got[portKey{22, kindQueued}] != 1 {
		t.Fatalf("decode = %v, %v", got, err)
	}
	if _, err := decodePortCounts([]plugin.BPFMapEntry{{Key: []byte{1, 2}}}); err == nil {
		t.Fatal("short key accepted")
	}
	if _, err := decodePortCounts([]plugin.BPFMapEntry{{Key: make([]byte, 4), Values: [][]byte{{1}}}}); err == nil {
		t.Fatal("short value accepted")
	}
}

func TestLog2Quantile(t *testing.T) {
	// 98 samples in slot 3 ([4,8) µs), 2 in slot 11 ([1024,2048) µs).
	slots := make([]uint64, 32)
	slots[3], slots[11] = 98, 2
	if got := Log2Quantile(slots, 0.99); math.Abs(got-2048e-6) > 1e-12 {
		t.Fatalf("p99 = %v, want 2.048ms", got)
	}
	if got := Log2Quantile(slots, 0.5); math.Abs(got-8e-6) > 1e-12 {
		t.Fatalf("p50 = %v, want 8µs", got)
	}
	if got := Log2Quantile(make([]uint64, 32), 0.99); got != 0 {
		t.Fatalf("empty p99 = %v", got)
	}
}

// TestStreamRates runs the source against a recording host whose maps
// move between reads: the rates are the deltas over the interval.
func TestStreamRates(t *testing.T) {
	h := &plugintest.RecordingHost{BPFMaps: map[string][]plugin.BPFMapEntry{
		"tcp/cel_tcp_counts":    {portEntry(8080, kindRetrans, 1, 1)},
		"listen/cel_listen_cnt": {portEntry(8080, kindQueued, 5)},
		"runq/cel_runq_node":    {slotEntry(3, 10)},
		"runq/cel_runq_tgid":    {slotEntry(3, 1)},
	}}
	s := New()
	if err := s.Configure(context.Background(), plugin.Config{}, h); err != nil {
		t.Fatal(err)
	}
	if err := s.load(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	if out, err := s.sample(context.Background(), h); err != nil || len(out) != 0 {
		t.Fatalf("baseline read = %v, %v", out, err)
	}
	h.BPFMaps["tcp/cel_tcp_counts"] = []plugin.BPFMapEntry{portEntry(8080, kindRetrans, 5, 7), portEntry(9090, kindRstSent, 4), portEntry(8080, kindSynRetrans, 2)}
	h.BPFMaps["listen/cel_listen_cnt"] = []plugin.BPFMapEntry{portEntry(8080, kindQueued, 9), portEntry(8080, kindListenDrop, 2)}
	h.BPFMaps["runq/cel_runq_node"] = []plugin.BPFMapEntry{slotEntry(3, 10), slotEntry(10, 1, 1)}
	// Two seconds pass.
	s.mu.Lock()
	for k, v := range s.lastRead {
		s.lastRead[k] = v.Add(-2 * time.Second)
	}
	s.mu.Unlock()
	out, err := s.sample(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, smp := range out {
		got[smp.Signal+"/"+smp.Labels["port"]+smp.Labels["direction"]+smp.Labels["scope"]] = smp.Value
	}
	for k, want := range map[string]float64{
		"kernel.tcp.retransmits/8080":    5, // (12-2)/2s
		"kernel.tcp.resets/9090sent":     2, // a new key counts from zero
		"kernel.accepts/8080":            2, // (9-5)/2s
		"kernel.listen.overflows/8080":   1, // 2/2s
		"kernel.listen.drops/8080":       1,
		"kernel.runq.p99/node":           1024e-6,
		"kernel.runq.p99/celcore":        0, // nothing new
		"kernel.tcp.retransmits/9090":    0,
		"kernel.tcp.resets/8080received": 0,
	} {
		if v, ok := got[k]; !ok || math.Abs(v-want) > 1e-3*max(want, 1e-3) { // wall time adds microseconds to the 2s
			t.Errorf("%s = %v (present %v), want %v", k, v, ok, want)
		}
	}
}

// TestSignalsDescribed: every signal has a unit, a kind and help.
func TestSignalsDescribed(t *testing.T) {
	sigs, err := New().Signals(context.Background())
	if err != nil || len(sigs) != 6 {
		t.Fatalf("Signals = %d, %v", len(sigs), err)
	}
	for _, s := range sigs {
		if s.Help == "" || s.Unit == "" || s.Kind == 0 {
			t.Errorf("signal %s is not fully described", s.Name)
		}
	}
}

// TestFromEvents: ring buffer records become samples at once, one per
// series, as events over the time since that series' previous one.
func TestFromEvents(t *testing.T) {
	s := New()
	s.lastRead = map[string]time.Time{}
	s.loaded = time.Unix(100, 0)
	rec := func(port uint16, kind uint8) []byte { return portEntry(port, kind).Key }
	out := s.fromEvents([][]byte{rec(8080, kindRetrans), rec(8080, kindRetrans), rec(9090, kindRstSent), {1, 2}}, time.Unix(102, 0))
	got := map[string]float64{}
	for _, smp := range out {
		got[smp.Signal+"/"+smp.Labels["port"]+smp.Labels["direction"]] = smp.Value
	}
	if len(out) != 2 || got["kernel.tcp.retransmits/8080"] != 1 || got["kernel.tcp.resets/9090sent"] != 0.5 {
		t.Fatalf("fromEvents = %v", got)
	}
	out = s.fromEvents([][]byte{rec(8080, kindRetrans)}, time.Unix(102, 500_000_000))
	if len(out) != 1 || out[0].Value != 2 {
		t.Fatalf("second event half a second later = %+v, want 2/s", out)
	}
}
