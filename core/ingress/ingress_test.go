package ingress

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

type oneCell struct{}

func (oneCell) Handler(name string) http.Handler {
	if name != "hello" {
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello over "+r.Proto)
	})
}

func serve(t *testing.T, opts Options) string {
	t.Helper()
	s := New(oneCell{}, slog.New(slog.DiscardHandler), opts)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		_ = s.Shutdown(t.Context())
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return l.Addr().String()
}

// TestSlowHeaderClosed: a client that does not finish its header within
// ReadHeaderTimeout is disconnected, without an answer from a cell.
func TestSlowHeaderClosed(t *testing.T) {
	addr := serve(t, Options{ReadHeaderTimeout: 100 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /hello HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second)) // the test's bound, not the server's
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server kept a connection whose header never ended")
	}
	if strings.Contains(string(b), "hello over") {
		t.Fatalf("a request with an unfinished header was served: %q", b)
	}
}

// TestH2CAndHTTP1: the plain listener speaks HTTP/1.1 and HTTP/2 with
// prior knowledge (h2c); an unknown cell is 404.
func TestH2CAndHTTP1(t *testing.T) {
	addr := serve(t, Options{})
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	for _, tc := range []struct {
		rt    http.RoundTripper
		proto string
	}{{http.DefaultTransport, "HTTP/1.1"}, {tr, "HTTP/2.0"}} {
		resp, err := (&http.Client{Transport: tc.rt}).Get("http://" + addr + "/hello")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Proto != tc.proto || string(b) != "hello over "+tc.proto {
			t.Errorf("%s: %s %q", tc.proto, resp.Proto, b)
		}
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 404 {
		t.Fatalf("unknown cell: %v, %v", resp, err)
	}
}
