//go:build linux

package cell

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/celluster/celluster/core/ebpf"
	"github.com/celluster/celluster/core/ingress"
)

// BenchmarkHTTPWithBPF: HTTP throughput through the Go hello cell with the
// kernel plugin's BPF programs (TCP, listen and run-queue: the ones on the
// hot path of every packet, wake-up and context switch) attached, beside
// the same load with none attached, in the same run. Aim: at most 3 % loss.
// Needs root (CAP_BPF): skipped otherwise, or failed when CI=true (CI runs
// as root, so a skip there would hide a broken benchmark).
func BenchmarkHTTPWithBPF(b *testing.B) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			b.Fatal("CI=true and not root: this benchmark needs CAP_BPF to attach the programs")
		}
		b.Skip("needs root: CAP_BPF to attach the programs")
	}
	reg := benchRegistry(b, Limits{Concurrency: 64}, "hello")
	warmReplicas(b, reg.Lookup("hello"))
	srv := httptest.NewServer(ingress.New(benchCells{reg}, slog.New(slog.DiscardHandler), ingress.Options{}))
	b.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	url := srv.URL + "/hello?name=bench"
	for range 2000 { // open the connections before either peer runs
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}

	b.Run("bpf=detached", func(b *testing.B) { loadHTTP(b, client, url) })
	l, err := ebpf.New(ebpf.Config{Node: "bench-" + filepath.Base(b.TempDir()), Logger: slog.New(slog.DiscardHandler),
		Vars: map[string]any{"target_tgid": uint32(os.Getpid())}})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	for _, name := range []string{"tcp", "listen", "runq"} {
		obj, err := os.ReadFile(filepath.Join("..", "..", "plugins", "kernel", name+"_bpfel.o"))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := l.Load(context.Background(), "bench", name, obj, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("bpf=attached", func(b *testing.B) { loadHTTP(b, client, url) })
}
