package main

import (
	"strconv"
	"testing"

	"github.com/celluster/celluster/sdk/cell/celltest"
)

// xorshift64 is an independent reference for work.
func xorshift64(n int) uint64 {
	x := uint64(88172645463325252)
	for i := 0; i < n; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

func TestWork(t *testing.T) {
	// The first outputs of xorshift64 from this seed (Marsaglia 2003).
	if got := work(1); got != 8748534153485358512 {
		t.Errorf("work(1) = %d", got)
	}
	for _, n := range []int{0, 1, 2, 10, 1000} {
		resp := celltest.Do(nil, "GET", "/spin/work?n="+strconv.Itoa(n), nil)
		want := strconv.FormatUint(xorshift64(n), 10) + "\n"
		if resp.Status != 200 || string(resp.Body) != want {
			t.Errorf("n=%d: %d %q, want %q", n, resp.Status, resp.Body, want)
		}
	}
	resp := celltest.Do(nil, "GET", "/spin/work", nil)
	if want := strconv.FormatUint(xorshift64(1000000), 10) + "\n"; string(resp.Body) != want {
		t.Errorf("default n: %q, want %q", resp.Body, want)
	}
	for _, q := range []string{"n=-1", "n=x", "n=1.5"} {
		if resp := celltest.Do(nil, "GET", "/spin/work?"+q, nil); resp.Status != 400 {
			t.Errorf("%s: status %d, want 400", q, resp.Status)
		}
	}
}

func TestGrow(t *testing.T) {
	resp := celltest.Do(nil, "GET", "/spin/grow?mb=3", nil)
	if resp.Status != 200 || string(resp.Body) != "allocated 3 MiB\n" || len(ballast) != 3<<20 {
		t.Errorf("grow: %d %q, ballast %d", resp.Status, resp.Body, len(ballast))
	}
	ballast = nil
	for _, q := range []string{"", "?mb=0", "?mb=4097", "?mb=x"} {
		if resp := celltest.Do(nil, "GET", "/spin/grow"+q, nil); resp.Status != 400 {
			t.Errorf("grow%s: status %d, want 400", q, resp.Status)
		}
	}
}

func TestExitBadCode(t *testing.T) {
	for _, q := range []string{"?code=x", "?code=-1", "?code=256"} {
		if resp := celltest.Do(nil, "GET", "/spin/exit"+q, nil); resp.Status != 400 {
			t.Errorf("exit%s: status %d, want 400", q, resp.Status)
		}
	}
}

func TestTrapNative(t *testing.T) {
	// Natively trap only panics; the SDK answers 500.
	if resp := celltest.Do(nil, "GET", "/spin/trap", nil); resp.Status != 500 {
		t.Errorf("trap: status %d", resp.Status)
	}
}

func TestNotFound(t *testing.T) {
	for _, p := range []string{"/spin/", "/spin/other", "/spin/work/x", "/spinx", "/"} {
		if resp := celltest.Do(nil, "GET", p, nil); resp.Status != 404 {
			t.Errorf("%s: status %d, want 404", p, resp.Status)
		}
	}
}
