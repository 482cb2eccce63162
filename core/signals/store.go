// Package signals keeps the latest value of every signal the node knows:
// from telemetry plugins, from plugins emitting through the host service, and
// from the core itself. A signal is identified by its name and labels.
package signals

import (
	"sort"
	"strings"
	"sync"
	"time"
)

// Desc describes a signal.
type Desc struct {
	Name   string
	Unit   string
	Kind   string
	Help   string
	Source string
}

// Reading is the latest value of one signal series.
type Reading struct {
	Name   string
	Labels map[string]string
	Value  float64
	Time   time.Time
	Source string
}

// Key identifies the series: name{k=v,...} with labels sorted.
func (r Reading) Key() string { return key(r.Name, r.Labels) }

func key(name string, labels map[string]string) string {
	if len(labels) == 0 {
		return name
	}
	ks := make([]string, 0, len(labels))
	for k := range labels {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, k := range ks {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(labels[k])
	}
	b.WriteByte('}')
	return b.String()
}

// Store holds readings and descriptions. It is safe for concurrent use.
type Store struct {
	mu       sync.RWMutex
	readings map[string]Reading
	descs    map[string]Desc
	subs     []func([]Reading)
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{readings: map[string]Reading{}, descs: map[string]Desc{}}
}

// Describe records what a signal is.
func (s *Store) Describe(d Desc) {
	s.mu.Lock()
	s.descs[d.Name] = d
	s.mu.Unlock()
}

// Put records readings and hands them to subscribers.
func (s *Store) Put(rs ...Reading) {
	s.mu.Lock()
	for _, r := range rs {
		if r.Time.IsZero() {
			r.Time = time.Now()
		}
		s.readings[r.Key()] = r
	}
	subs := s.subs
	s.mu.Unlock()
	for _, fn := range subs {
		fn(rs)
	}
}

// Subscribe calls fn with every batch of readings Put from now on.
func (s *Store) Subscribe(fn func([]Reading)) {
	s.mu.Lock()
	s.subs = append(s.subs, fn)
	s.mu.Unlock()
}

// Latest returns the readings of the named signals (all when names is
// empty), sorted by key.
func (s *Store) Latest(names ...string) []Reading {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	s.mu.RLock()
	out := make([]Reading, 0, len(s.readings))
	for _, r := range s.readings {
		if len(want) == 0 || want[r.Name] {
			out = append(out, r)
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Desc returns the description of a signal, if known.
func (s *Store) Desc(name string) (Desc, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	d, ok := s.descs[name]
	return d, ok
}
