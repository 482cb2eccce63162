package webui

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

const (
	// viewerQueue is how many events may wait for a viewer before it is
	// disconnected as too slow.
	viewerQueue = 64
	// backlogEntries is how many journal entries a viewer gets on joining.
	backlogEntries = 200
	// maxJournalBatch bounds the entries read at one poll.
	maxJournalBatch = 500
	// retryMillis is the browser's reconnection delay after a lost stream.
	retryMillis = 1000
)

// event is one server-sent event for every viewer.
type event struct {
	name string
	data []byte
	// entries, for a "journal" event, are its entries one by one: each
	// viewer sends those it has not sent yet.
	entries []encoded
}

type encoded struct {
	seq uint64
	b   []byte
}

type viewer struct {
	ch   chan event
	gone chan struct{} // closed when dropped for being slow
}

// join registers a viewer, or returns nil at MaxViewers.
func (s *Server) join() *viewer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.viewers) >= s.cfg.MaxViewers {
		return nil
	}
	v := &viewer{ch: make(chan event, viewerQueue), gone: make(chan struct{})}
	s.viewers[v] = struct{}{}
	select {
	case s.joined <- struct{}{}:
	default:
	}
	return v
}

func (s *Server) leave(v *viewer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.viewers, v)
}

func (s *Server) watched() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.viewers) > 0
}

// broadcast queues ev for every viewer, dropping those whose queue is full
// (their browser reconnects and starts over).
func (s *Server) broadcast(ev event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for v := range s.viewers {
		select {
		case v.ch <- ev:
		default:
			delete(s.viewers, v)
			close(v.gone)
			s.log.Warn("ui: a viewer too slow to keep up was disconnected")
		}
	}
}

// begin notes where the journal is and takes the first plot points; Serve
// calls it before anyone can join.
func (s *Server) begin() {
	if js, ok := s.node.(JournalSeq); ok {
		s.mu.Lock()
		s.lastSeq = js.JournalSeq()
		s.mu.Unlock()
	}
	s.sample(time.Now())
}

// loop samples the node every Interval (pushing a snapshot while anyone
// watches) and reads the journal every JournalPoll while anyone watches.
func (s *Server) loop(ctx context.Context) {
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	// The journal ticker runs only while anyone watches.
	jtick := time.NewTicker(s.cfg.JournalPoll)
	defer jtick.Stop()
	jtick.Stop()
	polling := false
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s.tick(now)
		case <-s.joined:
			if !polling {
				jtick.Reset(s.cfg.JournalPoll)
				polling = true
			}
		case <-jtick.C:
			if !s.pollJournal() {
				jtick.Stop()
				polling = false
			}
		}
	}
}

// tick records the plot points and, while anyone watches, pushes a
// snapshot carrying them.
func (s *Server) tick(now time.Time) {
	infos := s.sample(now)
	pending := s.takePending()
	if !s.watched() {
		return
	}
	snap := s.build(now, infos)
	snap.Points = pending
	b, err := json.Marshal(snap)
	if err != nil {
		s.log.Warn("ui: encoding a snapshot", "err", err)
		return
	}
	s.broadcast(event{name: "snapshot", data: b})
}

// pollJournal pushes the entries written since the last poll, and says
// whether anyone watches. While nobody does, the last seq pushed stays
// where it is: a viewer joining reads its backlog after joining, so what
// the next poll finds beyond that seq is either in the backlog (and the
// viewer skips it) or new.
func (s *Server) pollJournal() bool {
	s.mu.Lock()
	last, watched := s.lastSeq, len(s.viewers) > 0
	s.mu.Unlock()
	if !watched {
		return false
	}
	limit, reset := backlogEntries, false
	if js, ok := s.node.(JournalSeq); ok {
		cur := js.JournalSeq()
		if cur == last {
			return true
		}
		if cur < last { // another journal: start over
			last, reset = 0, true
		}
		limit = int(min(cur-last, maxJournalBatch))
	}
	es := s.node.Journal("", limit)
	sc := s.scrub()
	var out []encoded
	for _, e := range es {
		if e.Seq > last {
			out = append(out, encoded{seq: e.Seq, b: encodeEntry(e, sc)})
			last = e.Seq
		}
	}
	s.mu.Lock()
	if reset || last > s.lastSeq {
		s.lastSeq = last
	}
	s.mu.Unlock()
	if len(out) > 0 {
		s.broadcast(event{name: "journal", entries: out})
	}
	return true
}

// hello is what event "hello" carries.
type hello struct {
	Name       string             `json:"name"`
	IntervalMs int64              `json:"interval_ms"`
	History    int                `json:"history"`
	Points     map[string][]point `json:"points"`
}

// events serves one viewer's event stream: hello, a snapshot and the
// journal's last entries at once, then what the loop pushes.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	v := s.join()
	if v == nil {
		http.Error(w, "too many viewers", http.StatusServiceUnavailable)
		return
	}
	defer s.leave(v)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	var buf bytes.Buffer
	flush := func() error {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := w.Write(buf.Bytes())
		buf.Reset()
		if err != nil {
			return err
		}
		return rc.Flush()
	}
	add := func(name string, data []byte) {
		buf.WriteString("event: ")
		buf.WriteString(name)
		buf.WriteString("\ndata: ")
		buf.Write(data)
		buf.WriteString("\n\n")
	}
	var sent uint64 // the last journal seq sent
	addEntries := func(es []encoded) {
		var b []byte
		for _, e := range es {
			if e.seq <= sent {
				continue
			}
			if b == nil {
				b = append(b, '[')
			} else {
				b = append(b, ',')
			}
			b = append(b, e.b...)
			sent = e.seq
		}
		if b != nil {
			add("journal", append(b, ']'))
		}
	}

	buf.WriteString("retry: ")
	buf.WriteString(strconv.Itoa(retryMillis))
	buf.WriteString("\n\n")
	hb, _ := json.Marshal(hello{Name: s.cfg.Name, IntervalMs: s.cfg.Interval.Milliseconds(), History: s.cfg.History, Points: s.history()})
	add("hello", hb)
	if sb, err := json.Marshal(s.build(time.Now(), s.node.Cells())); err == nil {
		add("snapshot", sb)
	}
	sc := s.scrub()
	var backlog []encoded
	for _, e := range s.node.Journal("", backlogEntries) {
		backlog = append(backlog, encoded{seq: e.Seq, b: encodeEntry(e, sc)})
	}
	addEntries(backlog)
	if flush() != nil {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-v.gone:
			return
		case ev := <-v.ch:
			if ev.name == "journal" {
				addEntries(ev.entries)
			} else {
				add(ev.name, ev.data)
			}
			if buf.Len() == 0 {
				continue
			}
			if flush() != nil {
				return
			}
		}
	}
}
