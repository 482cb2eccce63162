//go:build linux

package kernel

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/celluster/celluster/sdk/plugin"
)

// Info describes the plugin.
var Info = plugin.Info{
	Name:        "kernel",
	Version:     "0.1.0",
	Description: "TCP retransmits and resets, listen-queue overflows, accepts and run-queue latency, read in the kernel by eBPF programs the core loads for it",
}

// Event kinds, as bpf/cel.h numbers them in the per-port maps (see
// bpf/README.md). This kernel refuses fentry/fexit, so the listen kinds
// come from BTF tracepoints: kfree_skb at a listener and sk_data_ready.
const (
	kindRetrans     = 1  // tcp: segment retransmitted (local port)
	kindRstSent     = 2  // tcp: RST sent (local port)
	kindRstRecv     = 3  // tcp: RST received (local port)
	kindSynRetrans  = 8  // tcp: SYN resent by a connecting socket (REMOTE port: the listener's)
	kindListenDrop  = 9  // listen: packet dropped at a listener: accept queue full
	kindQueued      = 10 // listen: handshake done, child queued for accept()
	kindQueueFilled = 11 // listen: a queued child filled the accept queue
)

// objects are the BPF objects the plugin ships, by the name it loads them
// under, and the maps it reads from each.
var objects = []struct {
	name  string
	bytes func() []byte
}{
	{"tcp", func() []byte { return _TcpBytes }},
	{"listen", func() []byte { return _ListenBytes }},
	{"runq", func() []byte { return _RunqBytes }},
}

// Signals the plugin reports. Counts are per second over the last interval.
var signals = []plugin.Signal{
	{Name: "kernel.tcp.retransmits", Unit: "1/s", Kind: plugin.Rate, Help: "TCP segments retransmitted per second, by local port (label port)"},
	{Name: "kernel.tcp.resets", Unit: "1/s", Kind: plugin.Rate, Help: "TCP resets per second, by local port and direction (labels port, direction=sent|received)"},
	{Name: "kernel.listen.overflows", Unit: "1/s", Kind: plugin.Rate, Help: "listen-queue overflows per second, by listening port: packets a listener dropped because its accept queue was full, plus the times a queued connection filled it"},
	{Name: "kernel.listen.drops", Unit: "1/s", Kind: plugin.Rate, Help: "dropped SYNs per second, by listening port: SYNs this host's clients had to resend to that port (a SYN dropped at a full queue is seen only as its resend)"},
	{Name: "kernel.accepts", Unit: "1/s", Kind: plugin.Rate, Help: "connections per second completing their handshake and queued for accept(), by listening port"},
	{Name: "kernel.runq.p99", Unit: "seconds", Kind: plugin.Gauge, Help: "99th percentile run-queue latency (wakeup to running) over the last interval, log2 buckets (upper bound); label scope=node or scope=celcore"},
}

// portKey is bpf/cel.h's struct cel_port_key: u16 port (host order), u8
// kind, u8 pad.
type portKey struct {
	port uint16
	kind uint8
}

// Source turns the kernel's counters into signals. It asks the core to
// load the objects (the core holds the privilege) and reads their maps
// through the host API.
type Source struct {
	mu     sync.Mutex
	host   plugin.Host
	ids    map[string]string // object name -> id
	prev   map[string]map[portKey]uint64
	prevRQ map[string][]uint64
	// lastRead is when each map was last read: rates cover the time since.
	lastRead map[string]time.Time
	loaded   time.Time
	log      *slog.Logger
	retryIn  time.Duration
}

// New returns the kernel telemetry source.
func New() *Source {
	return &Source{log: slog.New(slog.NewTextHandler(os.Stderr, nil)), retryIn: 30 * time.Second}
}

// Configure implements plugin.Configurer: it keeps the host handle.
func (s *Source) Configure(_ context.Context, _ plugin.Config, host plugin.Host) error {
	s.mu.Lock()
	s.host = host
	s.mu.Unlock()
	return nil
}

// Signals implements plugin.TelemetrySource.
func (s *Source) Signals(context.Context) ([]plugin.Signal, error) { return signals, nil }

// Stream implements plugin.TelemetrySource: it loads the objects, then
// every interval reads the maps and sends rates and percentiles. When the
// core cannot load them (no privilege, no BTF) it says why once and tries
// again every 30s, sending nothing meanwhile.
func (s *Source) Stream(ctx context.Context, interval time.Duration, send func([]plugin.Sample) error) error {
	s.mu.Lock()
	host := s.host
	s.mu.Unlock()
	if host == nil {
		return plugin.ErrNoHost
	}
	for {
		err := s.load(ctx, host)
		if err == nil {
			break
		}
		s.log.Warn("kernel signals unavailable: the core could not load the BPF objects; retrying", "err", err, "in", s.retryIn)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.retryIn):
		}
	}
	defer s.unload(host)
	// TCP events wake the stream at once through the object's ring buffer;
	// everything is also read every interval.
	events := make(chan [][]byte, 16)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go s.watch(wctx, host, events)
	t := time.NewTicker(interval)
	defer t.Stop()
	// A first read sets the baselines.
	if _, err := s.sample(ctx, host); err != nil {
		return err
	}
	for {
		var samples []plugin.Sample
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			samples, err = s.sample(ctx, host)
		case recs := <-events:
			samples = s.fromEvents(recs, time.Now())
		}
		if err != nil {
			return err
		}
		if len(samples) > 0 {
			if err := send(samples); err != nil {
				return err
			}
		}
	}
}

// watch waits on the TCP object's ring buffer and hands each batch of
// records to the stream, until ctx ends.
func (s *Source) watch(ctx context.Context, host plugin.Host, events chan<- [][]byte) {
	s.mu.Lock()
	id := s.ids["tcp"]
	s.mu.Unlock()
	for ctx.Err() == nil {
		recs, err := host.WaitBPFEvents(ctx, id, "cel_tcp_events", 5*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("waiting for TCP events; falling back to the interval", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		if len(recs) > 0 {
			select {
			case events <- recs:
			case <-ctx.Done():
				return
			}
		}
	}
}

func (s *Source) load(ctx context.Context, host plugin.Host) error {
	ids := map[string]string{}
	for _, o := range objects {
		obj, err := host.LoadBPF(ctx, o.name, o.bytes(), nil)
		if err != nil {
			for _, id := range ids {
				_ = host.UnloadBPF(context.Background(), id)
			}
			return fmt.Errorf("loading BPF object %s: %w", o.name, err)
		}
		ids[o.name] = obj.ID
	}
	s.mu.Lock()
	s.ids = ids
	s.prev = map[string]map[portKey]uint64{}
	s.prevRQ = map[string][]uint64{}
	s.lastRead = map[string]time.Time{}
	s.loaded = time.Now()
	s.mu.Unlock()
	return nil
}

func (s *Source) unload(host plugin.Host) {
	s.mu.Lock()
	ids := s.ids
	s.ids = nil
	s.mu.Unlock()
	for _, id := range ids {
		_ = host.UnloadBPF(context.Background(), id)
	}
}

// fromEvents turns ring buffer records (struct cel_port_key, one per
// event) into samples at once, without a map read: for each series the
// events counted over the time since its previous event sample (or since
// the objects loaded). The tick's reads of the counters stay the reference;
// these only bring the first sign of trouble forward.
func (s *Source) fromEvents(recs [][]byte, now time.Time) []plugin.Sample {
	counts := map[portKey]uint64{}
	for _, r := range recs {
		if len(r) != 4 {
			continue
		}
		counts[portKey{port: binary.LittleEndian.Uint16(r), kind: r[2]}]++
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []plugin.Sample
	for k, c := range counts {
		p := strconv.Itoa(int(k.port))
		var name string
		labels := map[string]string{"port": p}
		switch k.kind {
		case kindRetrans:
			name = "kernel.tcp.retransmits"
		case kindRstSent:
			name, labels["direction"] = "kernel.tcp.resets", "sent"
		case kindRstRecv:
			name, labels["direction"] = "kernel.tcp.resets", "received"
		case kindSynRetrans:
			name = "kernel.listen.drops"
		default:
			continue
		}
		key := "event/" + name + "/" + p + "/" + labels["direction"]
		last, ok := s.lastRead[key]
		if !ok {
			last = s.loaded
		}
		s.lastRead[key] = now
		dt := max(now.Sub(last), time.Millisecond)
		out = append(out, plugin.Sample{Signal: name, Labels: labels, Value: float64(c) / dt.Seconds(), Time: now})
	}
	return out
}

// sample reads every map and returns rates over the time since each
// map's previous read, for every port seen, zeros included; a map's first
// read only sets its baseline.
func (s *Source) sample(ctx context.Context, host plugin.Host) ([]plugin.Sample, error) {
	const mode = "tick/"
	s.mu.Lock()
	ids := s.ids
	s.mu.Unlock()
	var out []plugin.Sample
	now := time.Now()
	var dt time.Duration
	rate := func(name string, labels map[string]string, delta uint64) {
		if dt > 0 {
			out = append(out, plugin.Sample{Signal: name, Labels: labels, Value: float64(delta) / dt.Seconds(), Time: now})
		}
	}
	since := func(mapName string) time.Duration {
		s.mu.Lock()
		defer s.mu.Unlock()
		last, ok := s.lastRead[mode+mapName]
		s.lastRead[mode+mapName] = now
		if !ok {
			return 0
		}
		return now.Sub(last)
	}
	maps := []struct{ object, mapName string }{{"tcp", "cel_tcp_counts"}, {"listen", "cel_listen_cnt"}}
	for _, m := range maps {
		es, err := host.ReadBPFMap(ctx, ids[m.object], m.mapName)
		if err != nil {
			return nil, fmt.Errorf("reading %s/%s: %w", m.object, m.mapName, err)
		}
		cur, err := decodePortCounts(es)
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", m.object, m.mapName, err)
		}
		deltas := s.deltas(mode+m.mapName, cur)
		dt = since(m.mapName)
		ports := map[uint16]bool{}
		for k := range cur {
			ports[k.port] = true
		}
		for _, port := range sortedPorts(ports) {
			p := strconv.Itoa(int(port))
			switch m.object {
			case "tcp":
				rate("kernel.tcp.retransmits", map[string]string{"port": p}, deltas[portKey{port, kindRetrans}])
				// A SYN resent to this port: dropped at its listener (or lost).
				rate("kernel.listen.drops", map[string]string{"port": p}, deltas[portKey{port, kindSynRetrans}])
				rate("kernel.tcp.resets", map[string]string{"port": p, "direction": "sent"}, deltas[portKey{port, kindRstSent}])
				rate("kernel.tcp.resets", map[string]string{"port": p, "direction": "received"}, deltas[portKey{port, kindRstRecv}])
			case "listen":
				rate("kernel.listen.overflows", map[string]string{"port": p}, deltas[portKey{port, kindListenDrop}]+deltas[portKey{port, kindQueueFilled}])
				rate("kernel.accepts", map[string]string{"port": p}, deltas[portKey{port, kindQueued}])
			}
		}
	}
	for _, h := range []struct{ mapName, scope string }{{"cel_runq_node", "node"}, {"cel_runq_tgid", "celcore"}} {
		es, err := host.ReadBPFMap(ctx, ids["runq"], h.mapName)
		if err != nil {
			return nil, fmt.Errorf("reading runq/%s: %w", h.mapName, err)
		}
		cur, err := decodeHistogram(es)
		if err != nil {
			return nil, fmt.Errorf("runq/%s: %w", h.mapName, err)
		}
		s.mu.Lock()
		prev, seen := s.prevRQ[h.mapName]
		s.prevRQ[h.mapName] = cur
		s.mu.Unlock()
		if seen {
			delta := make([]uint64, len(cur))
			for i := range cur {
				if i < len(prev) && cur[i] >= prev[i] {
					delta[i] = cur[i] - prev[i]
				} else {
					delta[i] = cur[i]
				}
			}
			out = append(out, plugin.Sample{Signal: "kernel.runq.p99", Labels: map[string]string{"scope": h.scope}, Value: Log2Quantile(delta, 0.99), Time: now})
		}
	}
	return out, nil
}

// deltas returns cur minus the previous read of the same map (a counter
// that went backwards, e.g. a reloaded object, counts from zero) and keeps
// cur as the next baseline.
func (s *Source) deltas(mapName string, cur map[portKey]uint64) map[portKey]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.prev[mapName]
	out := make(map[portKey]uint64, len(cur))
	for k, v := range cur {
		if p, ok := prev[k]; ok && v >= p {
			out[k] = v - p
		} else if ok {
			out[k] = v
		} else if prev != nil {
			out[k] = v
		}
	}
	s.prev[mapName] = cur
	return out
}

func sortedPorts(m map[uint16]bool) []uint16 {
	out := make([]uint16, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// decodePortCounts sums the per-CPU u64 values of a cel_port_key map.
func decodePortCounts(es []plugin.BPFMapEntry) (map[portKey]uint64, error) {
	out := make(map[portKey]uint64, len(es))
	for _, e := range es {
		if len(e.Key) != 4 {
			return nil, fmt.Errorf("key of %d bytes, want 4 (struct cel_port_key)", len(e.Key))
		}
		k := portKey{port: binary.LittleEndian.Uint16(e.Key[0:2]), kind: e.Key[2]}
		var sum uint64
		for _, v := range e.Values {
			if len(v) != 8 {
				return nil, fmt.Errorf("value of %d bytes, want 8 (u64)", len(v))
			}
			sum += binary.LittleEndian.Uint64(v)
		}
		out[k] += sum
	}
	return out, nil
}

// decodeHistogram sums a per-CPU array of u64 log2 slots.
func decodeHistogram(es []plugin.BPFMapEntry) ([]uint64, error) {
	var out []uint64
	for _, e := range es {
		if len(e.Key) != 4 {
			return nil, fmt.Errorf("key of %d bytes, want 4 (u32 slot)", len(e.Key))
		}
		slot := int(binary.LittleEndian.Uint32(e.Key))
		if slot >= 64 {
			return nil, fmt.Errorf("slot %d out of range", slot)
		}
		for len(out) <= slot {
			out = append(out, 0)
		}
		for _, v := range e.Values {
			if len(v) != 8 {
				return nil, fmt.Errorf("value of %d bytes, want 8 (u64)", len(v))
			}
			out[slot] += binary.LittleEndian.Uint64(v)
		}
	}
	return out, nil
}

// Log2Quantile returns the q-quantile, in seconds, of a histogram whose
// slot 0 counts 0 µs and slot k counts [2^(k-1), 2^k) µs: the upper bound
// of the slot the quantile falls in (0 for an empty histogram).
func Log2Quantile(slots []uint64, q float64) float64 {
	var total uint64
	for _, c := range slots {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for k, c := range slots {
		seen += c
		if seen >= rank {
			if k == 0 {
				return 1e-6
			}
			return math.Ldexp(1, k) * 1e-6
		}
	}
	return math.Ldexp(1, len(slots)) * 1e-6
}
