package webui

import (
	"encoding/json"
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/celluster/celluster/core/admin"
	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/journal"
)

// snapshot is what event "snapshot" carries: the node as it is now.
type snapshot struct {
	Time    time.Time          `json:"time"`
	Node    nodeView           `json:"node"`
	Fabric  *fabricView        `json:"fabric,omitempty"`
	Cells   []cellView         `json:"cells"`
	Plugins []pluginView       `json:"plugins"`
	Kernel  kernelView         `json:"kernel"`
	Points  map[string][]point `json:"points,omitempty"` // plot points since the last snapshot
}

type nodeView struct {
	Name         string    `json:"name"`
	Version      string    `json:"version"`
	Started      time.Time `json:"started"`
	HTTP         string    `json:"http"`
	Metrics      string    `json:"metrics,omitempty"`
	GoVersion    string    `json:"go"`
	Wazero       string    `json:"wazero"`
	Compilations int       `json:"compilations"`
}

type fabricView struct {
	Addr        string         `json:"addr"`
	TrustDomain string         `json:"trust_domain"`
	Nodes       []fabricMember `json:"nodes"`
}

type fabricMember struct {
	Name    string   `json:"name"`
	Address string   `json:"address"`
	State   string   `json:"state"`
	HTTP    string   `json:"http,omitempty"`
	Cells   []string `json:"cells"`
	Load    int64    `json:"load"`
	Self    bool     `json:"self,omitempty"`
}

type cellView struct {
	Name     string        `json:"name"`
	SHA256   string        `json:"sha256"`
	ABI      string        `json:"abi"`
	State    string        `json:"state"`
	Error    string        `json:"error,omitempty"`
	Replicas int           `json:"replicas"`
	Min      int           `json:"min"`
	Max      int           `json:"max"`
	Warm     int           `json:"warm"`
	InFlight int64         `json:"in_flight"`
	Queued   int64         `json:"queued"`
	Requests uint64        `json:"requests"`
	Errors   uint64        `json:"errors"`
	P50Ms    num           `json:"p50_ms"`
	P99Ms    num           `json:"p99_ms"`
	LastUsed *time.Time    `json:"last_used,omitempty"`
	Versions []versionView `json:"versions"`
	Snapshot snapshotView  `json:"snapshot"`
	Intent   *intentView   `json:"intent,omitempty"`
}

type versionView struct {
	SHA256   string `json:"sha256"`
	Weight   uint32 `json:"weight"`
	Replicas int    `json:"replicas"`
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
	P99Ms    num    `json:"p99_ms"`
}

type snapshotView struct {
	Init       int        `json:"init"`
	NoSnapshot string     `json:"no_snapshot,omitempty"`
	Kept       bool       `json:"kept"`
	ID         string     `json:"id,omitempty"`
	Size       int        `json:"size"`
	Taken      *time.Time `json:"taken,omitempty"`
	How        string     `json:"how,omitempty"`
	Note       string     `json:"note,omitempty"`
}

type intentView struct {
	Origin     string     `json:"origin"`
	Source     string     `json:"source,omitempty"` // the file's base name, not its path
	Parser     string     `json:"parser,omitempty"`
	Text       string     `json:"text"`
	Applied    *time.Time `json:"applied,omitempty"`
	Error      string     `json:"error,omitempty"`
	Warnings   []string   `json:"warnings,omitempty"`
	KeepState  bool       `json:"keep_state,omitempty"`
	StateEvery string     `json:"state_every,omitempty"`
	Rules      []ruleView `json:"rules"`
}

type ruleView struct {
	Name       string     `json:"name"`
	Text       string     `json:"text"`
	Origin     string     `json:"origin,omitempty"`
	Verb       string     `json:"verb"`
	Holding    bool       `json:"holding"`
	Since      *time.Time `json:"since,omitempty"`
	LastValue  num        `json:"last_value"`
	LastSeen   *time.Time `json:"last_seen,omitempty"`
	LastFired  *time.Time `json:"last_fired,omitempty"`
	QuietUntil *time.Time `json:"quiet_until,omitempty"`
}

type pluginView struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Version   string `json:"version"`
	API       uint32 `json:"api"`
	State     string `json:"state"`
	PID       int    `json:"pid"`
	Restarts  int    `json:"restarts"`
	LastError string `json:"last_error,omitempty"`
	Builtin   bool   `json:"builtin"`
}

type kernelView struct {
	Available bool         `json:"available"`
	Error     string       `json:"error,omitempty"`
	Programs  []bpfProgram `json:"programs"`
}

type bpfProgram struct {
	Object string `json:"object"`
	Name   string `json:"name"`
	Type   string `json:"type"`
	Attach string `json:"attach"`
	ID     uint32 `json:"id"`
}

// entryView is one journal entry as event "journal" carries it (the
// fields of celctl journal -o json).
type entryView struct {
	Seq        uint64          `json:"seq"`
	Time       time.Time       `json:"time"`
	Cell       string          `json:"cell"`
	Verb       string          `json:"verb"`
	Args       []string        `json:"args,omitempty"`
	Rule       string          `json:"rule"`
	Origin     string          `json:"origin,omitempty"`
	Condition  string          `json:"condition,omitempty"`
	Manual     bool            `json:"manual,omitempty"`
	Values     []journal.Value `json:"values,omitempty"`
	Outcome    string          `json:"outcome"`
	Message    string          `json:"message,omitempty"`
	DurationMs num             `json:"duration_ms"`
	Plugin     string          `json:"plugin,omitempty"`
	TraceID    string          `json:"trace_id,omitempty"`
}

// num is a float that JSON always carries: NaN and ±Inf become null.
type num float64

func (f num) MarshalJSON() ([]byte, error) {
	x := float64(f)
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, x, 'g', 6, 64), nil
}

// point is one plot sample of a cell: unix milliseconds, replicas, rps,
// p50 and p99 latency (seconds), error rate (percent).
type point [6]float64

func (p point) MarshalJSON() ([]byte, error) {
	b := []byte{'['}
	for i, x := range p {
		if i > 0 {
			b = append(b, ',')
		}
		if math.IsNaN(x) || math.IsInf(x, 0) {
			x = 0
		}
		if i == 0 { // the time, to the millisecond
			b = strconv.AppendFloat(b, x, 'f', 0, 64)
			continue
		}
		b = strconv.AppendFloat(b, x, 'g', 6, 64)
	}
	return append(b, ']'), nil
}

// ring keeps a cell's last points: appended until full, then overwritten
// from the oldest (next).
type ring struct {
	pts  []point
	next int
}

func (r *ring) add(p point, n int) {
	if len(r.pts) < n {
		r.pts = append(r.pts, p)
		return
	}
	r.pts[r.next] = p
	r.next = (r.next + 1) % len(r.pts)
}

func (r *ring) last() (point, bool) {
	if len(r.pts) == 0 {
		return point{}, false
	}
	return r.pts[(r.next+len(r.pts)-1)%len(r.pts)], true
}

// points returns the points oldest first.
func (r *ring) points() []point {
	return append(append([]point(nil), r.pts[r.next:]...), r.pts[:r.next]...)
}

// plotSignals are the cell signals the plots read, by their index in a
// point.
var plotSignals = map[string]int{"replicas": 1, "rps": 2, "latency.p50": 3, "latency.p99": 4, "errors.rate": 5}

// sample records a plot point per cell from its newest signals (at their
// time; now for a cell that has none) and returns the cells. A cell's point
// is recorded only when newer than its last.
func (s *Server) sample(now time.Time) []cell.Info {
	infos := s.node.Cells()
	type acc struct {
		p    point
		seen bool
		at   time.Time
	}
	by := map[string]*acc{}
	for _, c := range infos {
		a := &acc{}
		a.p[1] = float64(c.Replicas)
		by[c.Name] = a
	}
	for _, r := range s.node.Signals() {
		i, ok := plotSignals[r.Name]
		if !ok || r.Labels["version"] != "" {
			continue
		}
		a := by[r.Labels["cell"]]
		if a == nil {
			continue
		}
		a.p[i] = r.Value
		a.seen = true
		if r.Time.After(a.at) {
			a.at = r.Time
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name := range s.hist {
		if by[name] == nil {
			delete(s.hist, name)
			delete(s.pending, name)
		}
	}
	for name, a := range by {
		at := now
		if a.seen {
			at = a.at
		}
		a.p[0] = float64(at.UnixMilli())
		h := s.hist[name]
		if h == nil {
			h = &ring{}
			s.hist[name] = h
		}
		if last, ok := h.last(); ok && last[0] >= a.p[0] {
			continue
		}
		h.add(a.p, s.cfg.History)
		if s.pending == nil {
			s.pending = map[string][]point{}
		}
		s.pending[name] = append(s.pending[name], a.p)
	}
	return infos
}

// history returns every cell's plot points, oldest first.
func (s *Server) history() map[string][]point {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]point, len(s.hist))
	for name, h := range s.hist {
		out[name] = h.points()
	}
	return out
}

// takePending returns the points recorded since the last call.
func (s *Server) takePending() map[string][]point {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending
	s.pending = nil
	return p
}

// scrubber cuts the node's directories out of text shown to the browser.
type scrubber struct{ old []string }

func newScrubber(st admin.Status) scrubber {
	var sc scrubber
	for _, d := range []struct{ dir, as string }{{st.CellsDir, "<cells>"}, {st.DataDir, "<data>"}} {
		if d.dir == "" {
			continue
		}
		forms := []string{d.dir}
		if abs, err := filepath.Abs(d.dir); err == nil && abs != d.dir {
			forms = append(forms, abs)
		}
		for _, f := range forms {
			f = strings.TrimSuffix(f, "/")
			if f == "" || f == "." {
				continue
			}
			sc.old = append(sc.old, f+"/", d.as+"/", f, d.as)
		}
	}
	return sc
}

func (sc scrubber) clean(s string) string {
	if s == "" || len(sc.old) == 0 {
		return s
	}
	return strings.NewReplacer(sc.old...).Replace(s)
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// build returns the node as it is now; infos are its cells.
func (s *Server) build(now time.Time, infos []cell.Info) snapshot {
	st := s.node.Status()
	sc := s.scrub()
	snap := snapshot{
		Time: now,
		Node: nodeView{Name: s.cfg.Name, Version: st.Version, Started: st.Started, HTTP: st.HTTPAddr, Metrics: st.MetricsAddr,
			GoVersion: st.GoVersion, Wazero: st.WazeroVersion, Compilations: st.Compilations},
		Cells:   make([]cellView, 0, len(infos)),
		Plugins: []pluginView{},
		Kernel:  kernelView{Available: st.BPF.Available, Error: sc.clean(st.BPF.Error), Programs: []bpfProgram{}},
	}
	if addr, td, nodes := s.node.Nodes(); addr != "" || len(nodes) > 0 {
		f := &fabricView{Addr: addr, TrustDomain: td, Nodes: make([]fabricMember, 0, len(nodes))}
		for _, n := range nodes {
			cells := append([]string{}, n.Cells...)
			sort.Strings(cells)
			f.Nodes = append(f.Nodes, fabricMember{Name: n.Name, Address: n.Address, State: n.State, HTTP: n.HTTP, Cells: cells, Load: n.Load, Self: n.Self})
		}
		sort.Slice(f.Nodes, func(i, j int) bool { return f.Nodes[i].Name < f.Nodes[j].Name })
		snap.Fabric = f
	}
	for _, c := range infos {
		snap.Cells = append(snap.Cells, s.cellView(c, sc))
	}
	sort.Slice(snap.Cells, func(i, j int) bool { return snap.Cells[i].Name < snap.Cells[j].Name })
	for _, p := range s.node.Plugins() {
		snap.Plugins = append(snap.Plugins, pluginView{Name: p.Name, Kind: p.Kind, Version: p.Version, API: p.API, State: p.State,
			PID: p.PID, Restarts: p.Restarts, LastError: sc.clean(p.LastError), Builtin: p.Builtin})
	}
	for _, p := range st.BPF.Programs {
		snap.Kernel.Programs = append(snap.Kernel.Programs, bpfProgram{Object: p.Object, Name: p.Name, Type: p.Type, Attach: p.Attach, ID: p.ID})
	}
	return snap
}

func (s *Server) cellView(c cell.Info, sc scrubber) cellView {
	v := cellView{
		Name: c.Name, SHA256: c.SHA256, ABI: c.ABI, State: string(c.State), Error: sc.clean(c.Error),
		Replicas: c.Replicas, Min: c.Policy.Min, Max: c.Policy.Max, Warm: c.Policy.Warm,
		InFlight: c.InFlight, Queued: c.Queued, Requests: c.Requests, Errors: c.Errors,
		P50Ms: ms(c.P50), P99Ms: ms(c.P99), LastUsed: timePtr(c.LastUsed),
		Versions: make([]versionView, 0, len(c.Versions)),
		Snapshot: snapshotView{Init: c.Snapshot.Init, NoSnapshot: sc.clean(c.Snapshot.NoSnapshot), Kept: c.Snapshot.Kept, ID: c.Snapshot.ID,
			Size: c.Snapshot.State, Taken: timePtr(c.Snapshot.Taken), How: c.Snapshot.How, Note: sc.clean(c.Snapshot.Note)},
	}
	for _, ver := range c.Versions {
		v.Versions = append(v.Versions, versionView{SHA256: ver.SHA256, Weight: ver.Weight, Replicas: ver.Replicas,
			Requests: ver.Requests, Errors: ver.Errors, P99Ms: ms(ver.P99)})
	}
	in, ok := s.node.Intent(c.Name)
	if !ok {
		return v
	}
	iv := &intentView{Origin: in.Origin, Parser: in.Parser, Text: in.Text, Applied: timePtr(in.Applied),
		Error: sc.clean(in.Error), Warnings: in.Warnings, KeepState: in.KeepState, Rules: make([]ruleView, 0, len(in.Rules))}
	if in.Source != "" {
		iv.Source = filepath.Base(in.Source)
	}
	if in.StateEvery > 0 {
		iv.StateEvery = in.StateEvery.String()
	}
	for _, r := range in.Rules {
		rv := ruleView{Name: r.Rule.Name, Text: r.Rule.String(), Origin: r.Rule.Origin, Verb: r.Rule.Verb, Holding: r.Holding,
			LastValue: num(r.LastValue), LastSeen: timePtr(r.LastSeen), LastFired: timePtr(r.LastFired), QuietUntil: timePtr(r.QuietUntil)}
		if r.Holding {
			rv.Since = timePtr(r.Since)
		}
		if r.LastSeen.IsZero() {
			rv.LastValue = num(math.NaN())
		}
		iv.Rules = append(iv.Rules, rv)
	}
	v.Intent = iv
	return v
}

func ms(d time.Duration) num { return num(float64(d) / float64(time.Millisecond)) }

// entry converts a journal entry for the browser.
func entry(e journal.Entry, sc scrubber) entryView {
	return entryView{Seq: e.Seq, Time: e.Time, Cell: e.Cell, Verb: e.Verb, Args: e.Args, Rule: e.Rule, Origin: e.Origin,
		Condition: e.Condition, Manual: e.Manual, Values: e.Values, Outcome: e.Outcome, Message: sc.clean(e.Message),
		DurationMs: ms(e.Duration), Plugin: e.Plugin, TraceID: e.TraceID}
}

// encodeEntry returns e as JSON; an entry that does not encode (it cannot:
// Values encode NaN as strings) is carried as its seq alone.
func encodeEntry(e journal.Entry, sc scrubber) []byte {
	b, err := json.Marshal(entry(e, sc))
	if err != nil {
		return []byte(`{"seq":` + strconv.FormatUint(e.Seq, 10) + `}`)
	}
	return b
}
