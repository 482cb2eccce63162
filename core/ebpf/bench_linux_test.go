package ebpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/celluster/celluster/core/ebpf/internal/testobj"
)

// BenchmarkEventPath compares the two ways a hot-path event can reach user
// space, on the same event source: one getppid(2) by this process, caught
// at tp_btf/sys_enter (bpf/testdata/bench.bpf.c).
//
//   - percpu_array: the program adds the event to a log2 histogram in a
//     per-CPU array, as runq.bpf.c does; user space reads 32 slots when it
//     likes (nothing per event).
//   - ringbuf: the program sends a 16-byte record through a ring buffer; a
//     reader goroutine receives every record and builds the histogram.
//   - none: the syscall with nothing attached, the baseline.
//
// ns/op minus none's is what an event costs the CPU that raised it (for
// ringbuf the clock also runs until the reader has received every record);
// bpf-ns/event is the program's own run time (kernel BPF stats);
// cpu-ns/op is the whole process's CPU time (user + system, all threads)
// per event, so for ringbuf it includes the reader.
func BenchmarkEventPath(b *testing.B) {
	requirePrivilege(b)
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(testobj.Bench()))
	if err != nil {
		b.Fatal(err)
	}
	if err := spec.Variables["bench_tgid"].Set(uint32(os.Getpid())); err != nil {
		b.Fatal(err)
	}
	if err := spec.Variables["bench_nr"].Set(int64(unix.SYS_GETPPID)); err != nil {
		b.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		b.Fatal(err)
	}
	defer coll.Close()
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()

	b.Run("none", func(b *testing.B) {
		events(b, nil, nil)
	})

	b.Run("percpu_array", func(b *testing.B) {
		before := histTotal(b, coll.Maps["bench_hist"])
		n := events(b, coll.Programs["bench_percpu"], nil)
		if got := histTotal(b, coll.Maps["bench_hist"]) - before; got < n {
			b.Fatalf("histogram counted %d of %d events", got, n)
		}
	})

	b.Run("ringbuf", func(b *testing.B) {
		rd, err := ringbuf.NewReader(coll.Maps["bench_events"])
		if err != nil {
			b.Fatal(err)
		}
		var (
			received atomic.Uint64
			hist     [32]uint64
			wg       sync.WaitGroup
			progress = make(chan struct{}, 1) // a record arrived
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rec ringbuf.Record
			for {
				if err := rd.ReadInto(&rec); err != nil {
					if !errors.Is(err, os.ErrClosed) {
						b.Error(err)
					}
					return
				}
				ns := binary.NativeEndian.Uint64(rec.RawSample)
				hist[slot((ns&0xFFFFF)/1000)]++
				received.Add(1)
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
		lostBefore := histTotal(b, coll.Maps["bench_lost"])
		n := events(b, coll.Programs["bench_ringbuf"], func(n uint64) {
			// The reader's work is part of the cost: the clock runs until
			// it has received every record (or the record was lost). It
			// wakes on each record; lost records raise no wake-up, so the
			// lost count is read again when records stop coming.
			lost := func() uint64 { return histTotal(b, coll.Maps["bench_lost"]) - lostBefore }
			idle := time.NewTimer(time.Millisecond)
			defer idle.Stop()
			deadline := time.Now().Add(10 * time.Second)
			for received.Load() < n && time.Now().Before(deadline) {
				idle.Reset(time.Millisecond)
				select {
				case <-progress:
				case <-idle.C:
					if received.Load()+lost() >= n {
						return
					}
				}
			}
		})
		rd.Close()
		wg.Wait()
		lost := histTotal(b, coll.Maps["bench_lost"]) - lostBefore
		if received.Load()+lost < n {
			b.Fatalf("received %d and lost %d of %d events", received.Load(), lost, n)
		}
		b.ReportMetric(float64(lost)/float64(n), "lost/op")
	})
}

// events raises b.N events with prog (if any) attached and reports the
// per-event metrics; drain, if set, runs inside the timed span, after the
// last event and before the clock stops.
func events(b *testing.B, prog *ebpf.Program, drain func(n uint64)) uint64 {
	if prog != nil {
		lk, err := link.AttachTracing(link.TracingOptions{Program: prog})
		if err != nil {
			b.Fatal(err)
		}
		defer lk.Close()
	}
	var before *ebpf.ProgramStats
	if prog != nil {
		before = progStats(b, prog)
	}
	cpu0 := cpuTime(b)
	// A b.N loop, not b.Loop: b.Loop stops the clock when it returns false,
	// which would leave drain out of the timed span.
	b.ResetTimer()
	for range b.N {
		unix.Getppid()
	}
	n := uint64(b.N)
	if drain != nil {
		drain(n)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(n), "cpu-ns/op")
	if prog != nil {
		after := progStats(b, prog)
		if runs := after.RunCount - before.RunCount; runs > 0 {
			b.ReportMetric(float64(after.Runtime-before.Runtime)/float64(runs), "bpf-ns/event")
		}
	}
	return n
}

func progStats(b *testing.B, p *ebpf.Program) *ebpf.ProgramStats {
	s, err := p.Stats()
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// cpuTime is the process's user + system CPU time in ns.
func cpuTime(b *testing.B) int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// histTotal sums every per-CPU u64 of an array map.
func histTotal(b *testing.B, m *ebpf.Map) uint64 {
	var total uint64
	var key uint32
	var values []uint64
	it := m.Iterate()
	for it.Next(&key, &values) {
		for _, v := range values {
			total += v
		}
	}
	if err := it.Err(); err != nil {
		b.Fatal(err)
	}
	return total
}

// slot is cel_log2_slot (bpf/cel.h) in Go.
func slot(v uint64) int {
	s := 0
	for ; v > 0 && s < 31; v >>= 1 {
		s++
	}
	return s
}
