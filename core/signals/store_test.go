package signals

import (
	"sync"
	"testing"
	"time"
)

func TestStoreLatestPerSeries(t *testing.T) {
	s := NewStore()
	var got [][]Reading
	var mu sync.Mutex
	s.Subscribe(func(rs []Reading) { mu.Lock(); got = append(got, rs); mu.Unlock() })
	t0 := time.Unix(100, 0)
	s.Put(Reading{Name: "host.cpu", Value: 10, Time: t0, Source: "host"})
	s.Put(Reading{Name: "host.cpu", Value: 20, Time: t0.Add(time.Second), Source: "host"},
		Reading{Name: "kernel.accepts", Labels: map[string]string{"port": "8080"}, Value: 3},
		Reading{Name: "kernel.accepts", Labels: map[string]string{"port": "9090"}, Value: 4})
	all := s.Latest()
	if len(all) != 3 {
		t.Fatalf("Latest() = %+v, want 3 series", all)
	}
	if all[0].Name != "host.cpu" || all[0].Value != 20 {
		t.Fatalf("latest host.cpu = %+v, want 20", all[0])
	}
	if k := all[1].Key(); k != "kernel.accepts{port=8080}" {
		t.Fatalf("key = %q", k)
	}
	if acc := s.Latest("kernel.accepts"); len(acc) != 2 || acc[1].Value != 4 {
		t.Fatalf("Latest(kernel.accepts) = %+v", acc)
	}
	if all[1].Time.IsZero() {
		t.Fatal("zero time not filled in")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || len(got[1]) != 3 {
		t.Fatalf("subscriber saw %d batches", len(got))
	}
	s.Describe(Desc{Name: "host.cpu", Unit: "percent", Source: "host"})
	if d, ok := s.Desc("host.cpu"); !ok || d.Unit != "percent" {
		t.Fatalf("Desc = %+v %v", d, ok)
	}
}
