package ebpf

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// MaxEventRecords bounds how many records ReadEvents returns at once.
const MaxEventRecords = 4096

// eventReaders holds an object's ring buffer readers, one per map, each
// used by one ReadEvents call at a time.
type eventReaders struct {
	readers map[string]*eventReader // guarded by the Object's mu
}

type eventReader struct {
	mu sync.Mutex // one ReadEvents at a time per map
	r  *ringbuf.Reader
}

// ReadEvents waits, until ctx ends, for records in the named ring buffer
// and returns those available (at most max, MaxEventRecords when max <= 0).
// It returns no records and no error when ctx ends first. Ring buffers are
// for waking user space on rare events; counts belong in per-CPU maps.
func (o *Object) ReadEvents(ctx context.Context, name string, max int) ([][]byte, error) {
	if max <= 0 || max > MaxEventRecords {
		max = MaxEventRecords
	}
	er, err := o.eventReader(name)
	if err != nil {
		return nil, err
	}
	er.mu.Lock()
	defer er.mu.Unlock()
	// Block in the kernel until a record comes or ctx ends (which flushes
	// the reader to wake it): an idle node makes no wake-ups here.
	stop := context.AfterFunc(ctx, func() { _ = er.r.Flush() })
	defer stop()
	var out [][]byte
	var rec ringbuf.Record
	for len(out) < max {
		deadline, _ := ctx.Deadline()
		if len(out) > 0 {
			deadline = time.Now() // drain what is there, do not wait for more
		}
		er.r.SetDeadline(deadline)
		err := er.r.ReadInto(&rec)
		switch {
		case err == nil:
			out = append(out, append([]byte(nil), rec.RawSample...))
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			return out, nil
		case errors.Is(err, ringbuf.ErrFlushed):
			if len(out) > 0 || ctx.Err() != nil {
				return out, nil
			}
			continue // the flush of an earlier call's ctx, which ended as that call returned
		case errors.Is(err, ringbuf.ErrClosed):
			return out, fmt.Errorf("ebpf: %s: %w", o.ID(), ErrClosed)
		default:
			return out, fmt.Errorf("ebpf: %s: reading ring buffer %q: %w", o.ID(), name, err)
		}
	}
	return out, nil
}

func (o *Object) eventReader(name string) (*eventReader, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, fmt.Errorf("ebpf: %s: %w", o.ID(), ErrClosed)
	}
	if er := o.events.readers[name]; er != nil {
		return er, nil
	}
	m, ok := o.coll.Maps[name]
	if !ok || hiddenMap(name) {
		return nil, fmt.Errorf("ebpf: %s: map %q: %w", o.ID(), name, ErrNotFound)
	}
	if m.Type() != ebpf.RingBuf {
		return nil, fmt.Errorf("ebpf: %s: map %q is a %s, not a ring buffer", o.ID(), name, m.Type())
	}
	r, err := ringbuf.NewReader(m)
	if err != nil {
		return nil, fmt.Errorf("ebpf: %s: opening ring buffer %q: %w", o.ID(), name, err)
	}
	if o.events.readers == nil {
		o.events.readers = map[string]*eventReader{}
	}
	er := &eventReader{r: r}
	o.events.readers[name] = er
	return er, nil
}

// closeEvents closes the ring buffer readers; a ReadEvents in progress
// returns ErrClosed. o.mu is held.
func (o *Object) closeEvents() {
	for _, er := range o.events.readers {
		_ = er.r.Close()
	}
	o.events.readers = nil
}
