package cell

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/celluster/celluster/core/wasm"
)

// These tests use testdata/hold.wasm (from hold.wat): a reactor whose
// instance counts the requests it answered and returns the count as six
// digits ("000001", ...), except that a request whose path contains "spin"
// logs "spinning" and never returns, holding its instance until the request
// is canceled.

// spinLog is a log handler counting the "spinning" lines of hold.wasm: how
// many requests have taken an instance and spin on it.
type spinLog struct{ n atomic.Int64 }

func (h *spinLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *spinLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *spinLog) WithGroup(string) slog.Handler            { return h }
func (h *spinLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "spinning" {
		h.n.Add(1)
	}
	return nil
}

// holdCell returns testdata/hold.wasm loaded as the cell "hold" of a
// registry of its own, whose log counts spinning requests.
func holdCell(t *testing.T, limits Limits) (*Cell, *spinLog) {
	t.Helper()
	ctx := context.Background()
	sl := &spinLog{}
	log := slog.New(sl)
	eng, err := wasm.NewEngine(ctx, wasm.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	reg := NewRegistry(eng, log, limits)
	t.Cleanup(func() {
		reg.Close(ctx)
		eng.Close(ctx)
	})
	return loadCell(t, reg, "hold", "hold.wasm"), sl
}

// call serves one GET of /<cell><path> through c and returns what it wrote.
func call(c *Cell, path string) (int, string) {
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/"+c.Name()+path, nil))
	return rec.Code, rec.Body.String()
}

type reply struct {
	code int
	body string
}

// goCall serves one request in the background.
func goCall(c *Cell, path string) <-chan reply {
	ch := make(chan reply, 1)
	go func() {
		code, body := call(c, path)
		ch <- reply{code, body}
	}()
	return ch
}

// spinner is a request to a hold cell's /spin path: it occupies one replica
// until stopped (its client goes away).
type spinner struct {
	cancel context.CancelFunc
	done   chan string
	once   sync.Once
	body   string
}

// spin starts a spinning request and returns once it holds an instance; it
// is stopped at the latest when the test ends (before the registry drains).
func spin(t *testing.T, c *Cell, sl *spinLog) *spinner {
	t.Helper()
	before := sl.n.Load()
	ctx, cancel := context.WithCancel(context.Background())
	s := &spinner{cancel: cancel, done: make(chan string, 1)}
	go func() {
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, "/"+c.Name()+"/spin", nil))
		s.done <- rec.Body.String()
	}()
	t.Cleanup(func() { s.stop() })
	waitFor(t, "a request to spin", func() bool { return sl.n.Load() > before })
	return s
}

// stop cancels the request and returns what it wrote: nothing, when the
// cell noticed the client had gone.
func (s *spinner) stop() string {
	s.once.Do(func() {
		s.cancel()
		s.body = <-s.done
	})
	return s.body
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func shaOf(src []byte) string {
	s := sha256.Sum256(src)
	return hex.EncodeToString(s[:])
}

// loadCell loads testdata/<file> as the cell name and returns it.
func loadCell(t *testing.T, reg *Registry, name, file string) *Cell {
	t.Helper()
	if err := reg.Load(context.Background(), name, module(t, file), file); err != nil {
		t.Fatal(err)
	}
	return reg.Lookup(name)
}

func TestReplicasBoundParallelism(t *testing.T) {
	// The concurrency limit (8) is not what bounds parallelism here: the
	// replicas are.
	c, sl := holdCell(t, Limits{Concurrency: 8, QueueTimeout: 30 * time.Second, RequestTimeout: 30 * time.Second})
	ctx := context.Background()
	if err := c.SetPolicy(Policy{Min: 1, Max: 4, Warm: 1}); err != nil {
		t.Fatal(err)
	}
	if n := c.Info().Replicas; n != 1 {
		t.Fatalf("replicas after load = %d, want 1", n)
	}

	// One replica, held: three more requests wait for it instead of
	// getting instances of their own.
	s := spin(t, c, sl)
	var replies []<-chan reply
	for range 3 {
		replies = append(replies, goCall(c, "/hold"))
	}
	waitFor(t, "three queued requests", func() bool { return c.Info().Queued == 3 })
	if in := c.Info(); in.Replicas != 1 || in.InFlight != 4 {
		t.Fatalf("while queued: replicas %d in flight %d, want 1 and 4", in.Replicas, in.InFlight)
	}
	if body := s.stop(); body != "" {
		t.Fatalf("canceled request wrote %q", body)
	}
	// The canceled request's instance is replaced by one fresh instance,
	// which answers the three in turn: counts 1, 2, 3.
	var bodies []string
	for _, ch := range replies {
		r := <-ch
		if r.code != 200 {
			t.Fatalf("queued request: %d %q", r.code, r.body)
		}
		bodies = append(bodies, r.body)
	}
	slices.Sort(bodies)
	if want := []string{"000001", "000002", "000003"}; !slices.Equal(bodies, want) {
		t.Fatalf("queued requests answered %q, want %q: served one at a time by one instance", bodies, want)
	}
	if in := c.Info(); in.Replicas != 1 || in.Queued != 0 || in.InFlight != 0 {
		t.Fatalf("after the queue drained: %+v", in)
	}

	// Max bounds spawning (below the concurrency limit); Min bounds
	// draining.
	if n, err := c.SpawnReplicas(ctx, 3); err != nil || n != 4 {
		t.Fatalf("SpawnReplicas(3) = %d, %v; want 4", n, err)
	}
	if n := c.Info().Replicas; n != 4 {
		t.Fatalf("info replicas = %d, want 4", n)
	}
	if n, err := c.SpawnReplicas(ctx, 10); err != nil || n != 4 {
		t.Fatalf("SpawnReplicas(10) = %d, %v; want the policy maximum 4", n, err)
	}
	if n, err := c.DrainReplicas(ctx, 2); err != nil || n != 2 {
		t.Fatalf("DrainReplicas(2) = %d, %v; want 2", n, err)
	}
	if n, err := c.DrainReplicas(ctx, 10); err != nil || n != 1 {
		t.Fatalf("DrainReplicas(10) = %d, %v; want the minimum 1", n, err)
	}
	if err := c.SetPolicy(Policy{Min: 2, Max: 4, Warm: 1}); err != nil {
		t.Fatal(err)
	}
	if n, err := c.SpawnReplicas(ctx, 10); err != nil || n != 4 {
		t.Fatalf("SpawnReplicas(10) = %d, %v; want 4", n, err)
	}
	if n, err := c.DrainReplicas(ctx, 10); err != nil || n != 2 {
		t.Fatalf("DrainReplicas(10) with Min 2 = %d, %v; want 2", n, err)
	}

	// Four replicas run four requests at once; a fifth waits for one.
	if n, err := c.SpawnReplicas(ctx, 2); err != nil || n != 4 {
		t.Fatalf("SpawnReplicas(2) = %d, %v; want 4", n, err)
	}
	var spinners []*spinner
	for range 4 {
		spinners = append(spinners, spin(t, c, sl))
	}
	if in := c.Info(); in.InFlight != 4 || in.Queued != 0 {
		t.Fatalf("four spinning requests: in flight %d queued %d, want 4 and 0", in.InFlight, in.Queued)
	}
	fifth := goCall(c, "/hold")
	waitFor(t, "the fifth request to queue", func() bool { return c.Info().Queued == 1 })
	if in := c.Info(); in.Replicas != 4 || in.InFlight != 5 {
		t.Fatalf("with a request queued: replicas %d in flight %d, want 4 and 5", in.Replicas, in.InFlight)
	}
	spinners[0].stop()
	if r := <-fifth; r.code != 200 {
		t.Fatalf("fifth request: %d %q", r.code, r.body)
	}
	for _, s := range spinners {
		s.stop()
	}
	if in := c.Info(); in.Errors != 0 || in.Queued != 0 || in.InFlight != 0 {
		t.Fatalf("final info: %+v", in)
	}
}

func TestQueueTimeoutWaitingForReplica(t *testing.T) {
	c, sl := holdCell(t, Limits{Concurrency: 4, QueueTimeout: 20 * time.Millisecond, RequestTimeout: 30 * time.Second})
	s := spin(t, c, sl)
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/hold", nil))
	body := rec.Body.String()
	if rec.Code != 503 || !strings.Contains(body, "no replica free") {
		t.Fatalf("request behind a busy replica: %d %q", rec.Code, body)
	}
	if ra := rec.Header().Get("Retry-After"); ra != "1" {
		t.Fatalf("Retry-After = %q", ra)
	}
	if in := c.Info(); in.Queued != 0 || in.Requests != 1 || in.Errors != 1 || in.Replicas != 1 {
		t.Fatalf("after the timeout: %+v", in)
	}
	// The refusal is the cell's capacity, not the version's error: an
	// upgrade watching the version's errors must not see it.
	if vs := c.Info().Versions; len(vs) != 1 || vs[0].Errors != 0 || vs[0].Requests != 0 {
		t.Fatalf("version after a refusal for want of a replica: %+v", vs)
	}
	s.stop()
	if code, body := call(c, "/hold"); code != 200 {
		t.Fatalf("after the replica was freed: %d %q", code, body)
	}
}

func TestDecayToZeroAndWake(t *testing.T) {
	c, sl := holdCell(t, Limits{Concurrency: 4, QueueTimeout: 5 * time.Second, RequestTimeout: 30 * time.Second})
	ctx := context.Background()
	if err := c.SetPolicy(Policy{Min: 1, Warm: 2, DecayIdle: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if code, _ := call(c, "/hold"); code != 200 {
		t.Fatal(code)
	}
	// Not idle long enough: the floor is Min.
	if f := c.Floor(); f != 1 {
		t.Fatalf("Floor before DecayIdle = %d, want Min 1", f)
	}
	if n, err := c.DrainReplicas(ctx, 10); err != nil || n != 1 {
		t.Fatalf("DrainReplicas before DecayIdle = %d, %v; want Min 1", n, err)
	}

	if err := c.SetPolicy(Policy{Min: 1, Warm: 2, DecayIdle: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	// Idle since the last answer, but with a request in flight: no decay.
	s := spin(t, c, sl)
	waitFor(t, "DecayIdle to pass", func() bool { return c.Idle() >= time.Millisecond })
	if f := c.Floor(); f != 1 {
		t.Fatalf("Floor with a request in flight = %d, want Min 1", f)
	}
	if n, err := c.DrainReplicas(ctx, 10); err != nil || n != 1 {
		t.Fatalf("DrainReplicas with a request in flight = %d, %v; want Min 1", n, err)
	}
	s.stop()
	// The canceled request's instance was discarded; a request served
	// afterwards leaves its replacement idle.
	if code, body := call(c, "/hold"); code != 200 {
		t.Fatalf("after the spinning request: %d %q", code, body)
	}

	// Idle: down to zero, the module kept.
	waitFor(t, "DecayIdle to pass", func() bool { return c.Idle() >= time.Millisecond })
	if f := c.Floor(); f != 0 {
		t.Fatalf("Floor after DecayIdle = %d, want 0", f)
	}
	if n, err := c.DrainReplicas(ctx, 10); err != nil || n != 0 {
		t.Fatalf("DrainReplicas after DecayIdle = %d, %v; want 0", n, err)
	}
	if in := c.Info(); in.Replicas != 0 || in.State != StateServing || len(in.Versions) != 1 {
		t.Fatalf("decayed cell: %+v", in)
	}

	// A request wakes it on a fresh instance.
	if code, body := call(c, "/hold"); code != 200 || body != "000001" {
		t.Fatalf("waking request: %d %q", code, body)
	}
	if n := c.Info().Replicas; n < 1 {
		t.Fatalf("replicas after wake = %d", n)
	}
	// The woken pool keeps the wake count, max(Warm, Min) = 2: with its one
	// instance busy, the next request starts a second one instead of
	// queueing.
	s = spin(t, c, sl)
	if code, body := call(c, "/hold"); code != 200 {
		t.Fatalf("request beside a busy woken instance: %d %q", code, body)
	}
	if n := c.Info().Replicas; n != 2 {
		t.Fatalf("replicas = %d, want the wake count 2", n)
	}
	s.stop()
}

// withCustomSection returns src with a custom section holding payload
// appended: the same module, another sha256.
func withCustomSection(src, payload []byte) []byte {
	const name = "celluster-test"
	body := append([]byte{byte(len(name))}, name...)
	body = append(body, payload...)
	out := append(append([]byte(nil), src...), 0)
	out = binary.AppendUvarint(out, uint64(len(body))) // LEB128
	return append(out, body...)
}

// prefixTwins returns two variants of src whose sha256 share their first
// 8 hex digits (a birthday search over 32 bits: ~1e5 hashes).
func prefixTwins(t *testing.T, src []byte) (a, b []byte) {
	t.Helper()
	seen := make(map[[4]byte]uint64)
	for i := uint64(0); i < 1<<22; i++ {
		m := withCustomSection(src, binary.LittleEndian.AppendUint64(nil, i))
		s := sha256.Sum256(m)
		k := [4]byte(s[:4])
		if j, ok := seen[k]; ok {
			return withCustomSection(src, binary.LittleEndian.AppendUint64(nil, j)), m
		}
		seen[k] = i
	}
	t.Fatal("no sha256 prefix collision found")
	return nil, nil
}

// versionRequests returns the Requests counter of each routed version.
func versionRequests(c *Cell) map[string]uint64 {
	out := make(map[string]uint64)
	for _, v := range c.Info().Versions {
		out[v.SHA256] = v.Requests
	}
	return out
}

func TestVersionsStageWeightsRetirePromote(t *testing.T) {
	reg, _ := newTestRegistry(t, Limits{})
	ctx := context.Background()
	v1, v2 := module(t, "v1.wasm"), module(t, "v2.wasm")
	sha1, sha2 := shaOf(v1), shaOf(v2)
	c := loadCell(t, reg, "app", "v1.wasm")
	answers := func(n int) map[string]int {
		t.Helper()
		got := make(map[string]int)
		for range n {
			code, body := call(c, "/")
			if code != 200 {
				t.Fatalf("request: %d %q", code, body)
			}
			got[body]++
		}
		return got
	}

	// Stage: a second version at weight 0, the first still primary.
	sha, staged, err := c.Stage(ctx, v2, "v2.wasm")
	if err != nil || sha != sha2 || !staged {
		t.Fatalf("Stage(v2) = %.12s, %v, %v; want %.12s, true", sha, staged, err, sha2)
	}
	in := c.Info()
	if len(in.Versions) != 2 || in.SHA256 != sha1 || in.Source != "v1.wasm" {
		t.Fatalf("after staging: %+v", in)
	}
	if p, s := in.Versions[0], in.Versions[1]; p.SHA256 != sha1 || p.Weight != 100 || s.SHA256 != sha2 || s.Weight != 0 || s.Source != "v2.wasm" || s.Replicas < 1 {
		t.Fatalf("versions after staging: %+v", in.Versions)
	}
	if got := answers(20); got["v1"] != 20 {
		t.Fatalf("with v2 staged at weight 0: %v", got)
	}
	if r := versionRequests(c); r[sha1] != 20 || r[sha2] != 0 {
		t.Fatalf("per-version requests: %v", r)
	}

	// Staging a module already routed adds nothing.
	sha, staged, err = c.Stage(ctx, v2, "v2.wasm")
	if err != nil || sha != sha2 || staged || len(c.Info().Versions) != 2 {
		t.Fatalf("Stage(v2) again = %.12s, %v, %v; %d versions", sha, staged, err, len(c.Info().Versions))
	}

	// All weight to v2.
	if err := c.SetWeights(map[string]uint32{sha2[:12]: 100, sha1[:12]: 0}); err != nil {
		t.Fatal(err)
	}
	if got := answers(20); got["v2"] != 20 {
		t.Fatalf("with all weight on v2: %v", got)
	}
	if in := c.Info(); in.SHA256 != sha2 || in.Versions[0].SHA256 != sha2 || in.Versions[0].Weight != 100 || in.Versions[1].Weight != 0 {
		t.Fatalf("primary after shifting weight: %+v", in.Versions)
	}

	// 50/50: the weighted round robin is deterministic, so 100 sequential
	// requests split exactly. Prefixes are case-insensitive.
	if err := c.SetWeights(map[string]uint32{strings.ToUpper(sha1[:12]): 50, sha2[:8]: 50}); err != nil {
		t.Fatal(err)
	}
	before := versionRequests(c)
	if got := answers(100); got["v1"] != 50 || got["v2"] != 50 {
		t.Fatalf("100 requests at 50/50: %v", got)
	}
	after := versionRequests(c)
	if d1, d2 := after[sha1]-before[sha1], after[sha2]-before[sha2]; d1 != 50 || d2 != 50 {
		t.Fatalf("per-version request counts at 50/50: v1 +%d v2 +%d", d1, d2)
	}

	// Bad weights and names are refused and change nothing.
	if err := c.SetWeights(map[string]uint32{sha1: 0, sha2: 0}); err == nil {
		t.Fatal("all-zero weights accepted")
	}
	unknown := strings.Repeat("0", 12)
	if sha1[:12] == unknown || sha2[:12] == unknown {
		t.Fatal("test sha collides with the unknown one")
	}
	if err := c.SetWeights(map[string]uint32{unknown: 1}); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("unknown version: %v", err)
	}
	if err := c.SetWeights(map[string]uint32{sha1[:7]: 1}); err == nil || errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("7-digit prefix: %v", err)
	}
	if err := c.RetireVersion(unknown); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("retiring an unknown version: %v", err)
	}
	if err := c.Promote(unknown); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("promoting an unknown version: %v", err)
	}
	for _, v := range c.Info().Versions {
		if v.Weight != 50 {
			t.Fatalf("refused changes altered the weights: %+v", c.Info().Versions)
		}
	}

	// Retiring the only version with weight is refused.
	if err := c.SetWeights(map[string]uint32{sha1: 100, sha2: 0}); err != nil {
		t.Fatal(err)
	}
	if err := c.RetireVersion(sha1); err == nil {
		t.Fatal("retired the only version with weight")
	}
	// Retire v1 once its weight has moved.
	if err := c.SetWeights(map[string]uint32{sha1: 0, sha2: 100}); err != nil {
		t.Fatal(err)
	}
	if err := c.RetireVersion(sha1[:12]); err != nil {
		t.Fatal(err)
	}
	if in := c.Info(); len(in.Versions) != 1 || in.SHA256 != sha2 {
		t.Fatalf("after retiring v1: %+v", in.Versions)
	}
	if got := answers(10); got["v2"] != 10 {
		t.Fatalf("after retiring v1: %v", got)
	}
	if err := c.RetireVersion(sha2); err == nil {
		t.Fatal("retired the last version")
	}

	// Two versions whose sha256 share 8 hex digits: that prefix is
	// ambiguous, longer ones are not.
	a, b := prefixTwins(t, v1)
	shaA, shaB := shaOf(a), shaOf(b)
	for _, m := range [][]byte{a, b} {
		if _, staged, err := c.Stage(ctx, m, "twin.wasm"); err != nil || !staged {
			t.Fatalf("staging a twin: %v, %v", staged, err)
		}
	}
	if n := len(c.Info().Versions); n != 3 {
		t.Fatalf("%d versions, want 3", n)
	}
	err = c.SetWeights(map[string]uint32{shaA[:8]: 1})
	if err == nil || errors.Is(err, ErrUnknownVersion) || !strings.Contains(err.Error(), "ambiguous") {
		t.Fatalf("ambiguous prefix %s: %v", shaA[:8], err)
	}
	if err := c.Promote(shaB[:8]); err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Fatalf("promoting by an ambiguous prefix: %v", err)
	}
	if err := c.SetWeights(map[string]uint32{shaA: 1}); err != nil {
		t.Fatal(err)
	}

	// Promote: one version left, all weight on it.
	upgrades := c.Info().Upgrades
	if err := c.Promote(shaB); err != nil {
		t.Fatal(err)
	}
	in = c.Info()
	if len(in.Versions) != 1 || in.SHA256 != shaB || in.Versions[0].Weight != 100 || in.Upgrades != upgrades+1 {
		t.Fatalf("after Promote: %+v", in)
	}
	if got := answers(10); got["v1"] != 10 {
		t.Fatalf("after promoting a v1 twin: %v", got)
	}

	// Load (not Stage) of a staged module promotes it.
	if _, staged, err := c.Stage(ctx, v2, "v2.wasm"); err != nil || !staged {
		t.Fatalf("Stage(v2): %v, %v", staged, err)
	}
	if got := answers(10); got["v1"] != 10 {
		t.Fatalf("with v2 staged: %v", got)
	}
	if err := c.Load(ctx, v2, "v2.wasm"); err != nil {
		t.Fatal(err)
	}
	in = c.Info()
	if len(in.Versions) != 1 || in.SHA256 != sha2 || in.Versions[0].Weight != 100 || in.Upgrades != upgrades+2 {
		t.Fatalf("after loading the staged version: %+v", in)
	}
	if got := answers(10); got["v2"] != 10 {
		t.Fatalf("after loading the staged version: %v", got)
	}
	// Loading it again changes nothing.
	if err := c.Load(ctx, v2, "v2.wasm"); err != nil {
		t.Fatal(err)
	}
	if in := c.Info(); len(in.Versions) != 1 || in.Upgrades != upgrades+2 || in.Errors != 0 {
		t.Fatalf("after loading the same module again: %+v", in)
	}
}

func TestTakeVersionWindows(t *testing.T) {
	reg, _ := newTestRegistry(t, Limits{})
	ctx := context.Background()
	v2 := module(t, "v2.wasm")
	sha1, sha2 := shaOf(module(t, "v1.wasm")), shaOf(v2)
	c := loadCell(t, reg, "app", "v1.wasm")
	if w := c.TakeVersionWindows(); w != nil {
		t.Fatalf("one version: %+v, want nil", w)
	}
	if _, _, err := c.Stage(ctx, v2, "v2.wasm"); err != nil {
		t.Fatal(err)
	}
	if err := c.SetWeights(map[string]uint32{sha1: 1, sha2: 1}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if code, body := call(c, "/"); code != 200 {
			t.Fatalf("%d %q", code, body)
		}
	}
	ws := c.TakeVersionWindows()
	if len(ws) != 2 {
		t.Fatalf("two versions: %+v", ws)
	}
	for _, w := range ws {
		if (w.SHA256 != sha1 && w.SHA256 != sha2) || w.Requests != 5 || w.Errors != 0 || w.P99 <= 0 {
			t.Fatalf("version windows at 1:1 over 10 requests: %+v", ws)
		}
	}
	if ws[0].SHA256 == ws[1].SHA256 {
		t.Fatalf("the same version twice: %+v", ws)
	}
	for _, w := range c.TakeVersionWindows() {
		if w.Requests != 0 || w.P99 != 0 {
			t.Fatalf("windows not restarted: %+v", w)
		}
	}
	if err := c.Promote(sha2); err != nil {
		t.Fatal(err)
	}
	if w := c.TakeVersionWindows(); w != nil {
		t.Fatalf("after Promote: %+v, want nil", w)
	}
}

func TestSetLimitsAndPolicy(t *testing.T) {
	c, sl := holdCell(t, Limits{Concurrency: 2, Warm: 2, QueueTimeout: 50 * time.Millisecond, RequestTimeout: 30 * time.Second})
	ctx := context.Background()
	if n := c.Info().Replicas; n != 2 {
		t.Fatalf("replicas = %d, want 2", n)
	}

	// Concurrency 1: with one request running, the next is refused by the
	// limiter although a replica is idle.
	lim := Limits{Concurrency: 1, QueueTimeout: 50 * time.Millisecond, RequestTimeout: 30 * time.Second}
	if reload, err := c.SetLimits(lim); err != nil || reload {
		t.Fatalf("SetLimits(concurrency 1) = %v, %v", reload, err)
	}
	if got := c.Limits(); got.Concurrency != 1 || got.QueueTimeout != 50*time.Millisecond {
		t.Fatalf("limits = %+v", got)
	}
	s := spin(t, c, sl)
	if code, body := call(c, "/hold"); code != 503 || !strings.Contains(body, "over its concurrency limit") {
		t.Fatalf("second request at concurrency 1: %d %q", code, body)
	}
	// Concurrency 2: the next request takes the idle replica.
	lim.Concurrency = 2
	if reload, err := c.SetLimits(lim); err != nil || reload {
		t.Fatalf("SetLimits(concurrency 2) = %v, %v", reload, err)
	}
	if code, body := call(c, "/hold"); code != 200 {
		t.Fatalf("second request at concurrency 2: %d %q", code, body)
	}
	s.stop()

	// A new memory limit asks for a reload, until the module is loaded
	// again under it.
	lim.Memory = 64 << 20
	if reload, err := c.SetLimits(lim); err != nil || !reload {
		t.Fatalf("SetLimits(memory 64 MiB) = %v, %v; want reload", reload, err)
	}
	upgrades := c.Info().Upgrades
	if err := c.Load(ctx, module(t, "hold.wasm"), "hold.wasm"); err != nil {
		t.Fatal(err)
	}
	if in := c.Info(); in.Upgrades != upgrades+1 || len(in.Versions) != 1 {
		t.Fatalf("reload under the new memory limit: %+v", in)
	}
	if reload, err := c.SetLimits(lim); err != nil || reload {
		t.Fatalf("SetLimits(same limits) after reload = %v, %v", reload, err)
	}
	if code, body := call(c, "/hold"); code != 200 {
		t.Fatalf("after reload: %d %q", code, body)
	}

	// Invalid limits are refused and change nothing.
	if _, err := c.SetLimits(Limits{Memory: 1000}); err == nil {
		t.Fatal("a 1000-byte memory limit accepted")
	}
	if got := c.Limits(); got.Memory != 64<<20 || got.Concurrency != 2 {
		t.Fatalf("limits after a refused change: %+v", got)
	}

	// Policy: Min above Max, or negative, is refused; Max is capped by the
	// concurrency limit (as is Warm by Max); Max 0 means that limit.
	want := c.Policy()
	if err := c.SetPolicy(Policy{Min: 3, Max: 2}); err == nil {
		t.Fatal("Min > Max accepted")
	}
	if err := c.SetPolicy(Policy{Min: -1, Max: 2}); err == nil {
		t.Fatal("negative Min accepted")
	}
	if got := c.Policy(); got != want {
		t.Fatalf("policy after refused changes: %+v, want %+v", got, want)
	}
	if err := c.SetPolicy(Policy{Min: 1, Max: 100, Warm: 10}); err != nil {
		t.Fatal(err)
	}
	if got := c.Policy(); got.Max != 2 || got.Min != 1 || got.Warm != 2 {
		t.Fatalf("policy with Max above concurrency: %+v, want Max and Warm 2", got)
	}
	if err := c.SetPolicy(Policy{Min: 1}); err != nil {
		t.Fatal(err)
	}
	if got := c.Policy(); got.Max != 2 {
		t.Fatalf("policy with Max 0: %+v, want Max 2", got)
	}
	if n, err := c.SpawnReplicas(ctx, 10); err != nil || n != 2 {
		t.Fatalf("SpawnReplicas(10) = %d, %v; want 2", n, err)
	}
}

func TestVersionChangesUnderConcurrentRequests(t *testing.T) {
	reg, _ := newTestRegistry(t, Limits{Concurrency: 16, QueueTimeout: 30 * time.Second})
	ctx := context.Background()
	v1, v2 := module(t, "v1.wasm"), module(t, "v2.wasm")
	sha1, sha2 := shaOf(v1), shaOf(v2)
	c := loadCell(t, reg, "app", "v1.wasm")
	if _, err := c.SpawnReplicas(ctx, 3); err != nil {
		t.Fatal(err)
	}

	var (
		stop          atomic.Bool
		wg            sync.WaitGroup
		served        atomic.Int64
		seen1, seen2  atomic.Int64
		queueRefusals atomic.Int64
		failures      atomic.Int64
		firstFailure  atomic.Value
	)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				code, body := call(c, "/")
				served.Add(1)
				switch {
				case code == 200 && body == "v1":
					seen1.Add(1)
				case code == 200 && body == "v2":
					seen2.Add(1)
				case code == 503 && (strings.Contains(body, "no replica free") || strings.Contains(body, "concurrency limit")):
					queueRefusals.Add(1)
				default:
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, body)
				}
			}
		}()
	}
	// Each change waits for a few requests, so every table is served.
	step := func(what string, err error) {
		t.Helper()
		if err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("%s: %v", what, err)
		}
		n := served.Load()
		waitFor(t, "requests after "+what, func() bool { return served.Load() >= n+5 })
	}
	for range 20 {
		sha, staged, err := c.Stage(ctx, v2, "v2.wasm")
		if err == nil && (sha != sha2 || !staged) {
			err = errors.New("not staged")
		}
		step("Stage(v2)", err)
		step("SetWeights 50/50", c.SetWeights(map[string]uint32{sha1[:12]: 50, sha2[:12]: 50}))
		_ = c.TakeVersionWindows()
		step("SetWeights 0/100", c.SetWeights(map[string]uint32{sha1[:12]: 0, sha2[:12]: 100}))
		step("RetireVersion(v1)", c.RetireVersion(sha1))
		sha, staged, err = c.Stage(ctx, v1, "v1.wasm")
		if err == nil && (sha != sha1 || !staged) {
			err = errors.New("not staged")
		}
		step("Stage(v1)", err)
		step("SetWeights 30/70", c.SetWeights(map[string]uint32{sha1: 30, sha2: 70}))
		_ = c.Info()
		step("Promote(v1)", c.Promote(sha1[:12]))
	}
	stop.Store(true)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed; first: %v", n, served.Load(), firstFailure.Load())
	}
	if n := queueRefusals.Load(); n > 0 {
		t.Fatalf("%d requests refused by the queue despite its 30s timeout", n)
	}
	if seen1.Load() == 0 || seen2.Load() == 0 {
		t.Fatalf("answers: v1 %d, v2 %d; want both", seen1.Load(), seen2.Load())
	}
	in := c.Info()
	if len(in.Versions) != 1 || in.SHA256 != sha1 || in.Errors != 0 || in.State != StateServing {
		t.Fatalf("final info: %+v", in)
	}
	if code, body := call(c, "/"); code != 200 || body != "v1" {
		t.Fatalf("after the changes: %d %q", code, body)
	}
}

func TestLatencyBuckets(t *testing.T) {
	var b bucketCounts
	for _, d := range []time.Duration{100 * time.Microsecond, 3 * time.Millisecond, 3 * time.Millisecond, 20 * time.Second} {
		b.record(d)
	}
	counts, sum, count := b.cumulative()
	if count != 4 || counts[0] != 1 || counts[2] != 1 || counts[3] != 3 || counts[len(counts)-1] != 3 {
		t.Fatalf("counts %v count %d", counts, count)
	}
	if want := (20*time.Second + 6100*time.Microsecond).Seconds(); sum < want-1e-9 || sum > want+1e-9 {
		t.Fatalf("sum %v, want %v", sum, want)
	}
}
