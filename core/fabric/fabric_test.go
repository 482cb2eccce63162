package fabric

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/celluster/celluster/core/fabric/frame"
)

const typeEcho frame.Type = 100

// echo answers a request with "<peer>:<PAYLOAD in upper case>".
func echo(_ context.Context, peer string, b []byte) ([]byte, error) {
	return []byte(peer + ":" + strings.ToUpper(string(b))), nil
}

func TestStreamRoundTrip(t *testing.T) {
	ca := newTestCA(t, testTD)
	a := startNode(t, ca, "a", nodeOpts{})
	b := startNode(t, ca, "b", nodeOpts{})
	b.HandleRequest(typeEcho, 0, echo)

	p, err := a.Dial(t.Context(), b.addr())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	if p.Name() != "b" || p.Addr() != b.addr() {
		t.Fatalf("peer = %s at %s, want b at %s", p.Name(), p.Addr(), b.addr())
	}
	for _, msg := range []string{"hello", "", strings.Repeat("x", 200_000)} {
		got, err := p.Request(t.Context(), typeEcho, []byte(msg))
		if err != nil {
			t.Fatalf("Request(%d bytes): %v", len(msg), err)
		}
		if want := "a:" + strings.ToUpper(msg); string(got) != want {
			t.Fatalf("Request(%d bytes) = %d bytes %.20q, want %d bytes %.20q", len(msg), len(got), got, len(want), want)
		}
	}
}

// A raw stream carries several frames each way, in order, and the handler
// sees the peer's name and the first frame unread.
func TestStreamFrames(t *testing.T) {
	ca := newTestCA(t, testTD)
	a := startNode(t, ca, "a", nodeOpts{})
	b := startNode(t, ca, "b", nodeOpts{})
	const typeSum frame.Type = 101
	b.HandleStream(typeSum, func(_ context.Context, peer string, s *Stream) {
		for i := 0; ; i++ {
			typ, payload, err := frame.Read(s, 0)
			if err == io.EOF {
				_ = frame.Write(s, frame.TypeResponse, []byte(fmt.Sprintf("%s sent %d frames", peer, i)))
				return
			}
			if err != nil || typ != typeSum {
				return
			}
			_ = frame.Write(s, frame.TypeResponse, append([]byte("ack "), payload...))
		}
	})
	p, err := a.Dial(t.Context(), b.addr())
	if err != nil {
		t.Fatal(err)
	}
	s, err := p.OpenStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"one", "two", "three"} {
		if err := frame.Write(s, typeSum, []byte(m)); err != nil {
			t.Fatal(err)
		}
		_, got, err := frame.Read(s, 0)
		if err != nil || string(got) != "ack "+m {
			t.Fatalf("answer to %q = %q, %v", m, got, err)
		}
	}
	s.Close()
	_, got, err := frame.Read(s, 0)
	if err != nil || string(got) != "a sent 3 frames" {
		t.Fatalf("final answer = %q, %v", got, err)
	}
	if _, _, err := frame.Read(s, 0); err != io.EOF {
		t.Fatalf("after the handler returned: %v, want io.EOF", err)
	}
}

func TestHandleStreamRefusesReservedTypes(t *testing.T) {
	ca := newTestCA(t, testTD)
	a := startNode(t, ca, "a", nodeOpts{})
	for _, typ := range []frame.Type{frame.TypeHello, frame.TypeGossip, frame.TypeGossipPacket, frame.TypeLane, 15} {
		func() {
			defer func() {
				if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "reserved") {
					t.Errorf("HandleStream(%s) recovered %v, want a panic about reserved types", typ, r)
				}
			}()
			a.HandleStream(typ, func(context.Context, string, *Stream) {})
		}()
	}
	for _, typ := range []frame.Type{frame.TypeLane, frame.TypeResponse, frame.TypeError, 15} {
		func() {
			defer func() {
				if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "cannot be a request") {
					t.Errorf("HandleRequest(%s) recovered %v, want a panic", typ, r)
				}
			}()
			a.HandleRequest(typ, 0, echo)
		}()
	}
}

func TestRequestErrors(t *testing.T) {
	ca := newTestCA(t, testTD)
	a := startNode(t, ca, "a", nodeOpts{})
	b := startNode(t, ca, "b", nodeOpts{})
	b.HandleRequest(typeEcho, 0, echo)
	const typeFail frame.Type = 102
	b.HandleRequest(typeFail, 0, func(context.Context, string, []byte) ([]byte, error) {
		return nil, errors.New("no such cell")
	})
	const typeSilent frame.Type = 103
	release := make(chan struct{})
	b.HandleRequest(typeSilent, 0, func(ctx context.Context, _ string, _ []byte) ([]byte, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	const typeSmall frame.Type = 104
	b.HandleRequest(typeSmall, 16, echo)
	p, err := a.Dial(t.Context(), b.addr())
	if err != nil {
		t.Fatal(err)
	}
	// Every failure leaves the peer serving requests, on the lane it
	// failed on or on a new one.
	stillServes := func(after string) {
		t.Helper()
		if got, err := p.Request(t.Context(), typeEcho, []byte("ping")); err != nil || string(got) != "a:PING" {
			t.Fatalf("after %s, echo = %q, %v; want a:PING", after, got, err)
		}
	}

	_, err = p.Request(t.Context(), typeFail, nil)
	var re *RemoteError
	if !errors.As(err, &re) || re.Peer != "b" || re.Message != "no such cell" {
		t.Fatalf("Request to a failing handler = %v, want RemoteError from b: no such cell", err)
	}
	stillServes("a handler's error")

	// A request over the handler's limit is refused unread: its lane is
	// reset as malformed.
	_, err = p.Request(t.Context(), typeSmall, make([]byte, 8<<20))
	var se *quic.StreamError
	if !errors.As(err, &se) || se.ErrorCode != codeBadFrame || !se.Remote {
		t.Fatalf("Request over the handler's limit = %v, want a remote reset with code %d", err, codeBadFrame)
	}
	stillServes("a request over the handler's limit")

	_, err = p.Request(t.Context(), 150, []byte("abc"))
	if !errors.As(err, &re) || re.Message != "no handler for type(150) requests" {
		t.Fatalf("Request without a handler = %v, want RemoteError: no handler for type(150) requests", err)
	}
	stillServes("a request without a handler")

	ctx, cancel := context.WithCancelCause(t.Context())
	cause := errors.New("caller gave up")
	go func() { time.Sleep(50 * time.Millisecond); cancel(cause) }()
	_, err = p.Request(ctx, typeSilent, nil)
	close(release)
	if !errors.Is(err, cause) {
		t.Fatalf("Request cancelled = %v, want %v", err, cause)
	}
	stillServes("a cancelled request")
}

// Requests travel on lanes: one after another they share one stream; n at
// once open n lanes, of which at most maxIdleLanes stay open for the
// requests that follow.
func TestRequestLanes(t *testing.T) {
	ca := newTestCA(t, testTD)
	a := startNode(t, ca, "a", nodeOpts{})
	b := startNode(t, ca, "b", nodeOpts{})
	hold := make(chan struct{})
	var held sync.WaitGroup
	b.HandleRequest(typeEcho, 0, func(ctx context.Context, peer string, body []byte) ([]byte, error) {
		if string(body) == "hold" {
			held.Done()
			<-hold
		}
		return echo(ctx, peer, body)
	})
	p, err := a.Dial(t.Context(), b.addr())
	if err != nil {
		t.Fatal(err)
	}
	opened := func() uint64 { return a.Stats().StreamsOpened }
	base := opened()
	for i := range 50 {
		msg := fmt.Sprint("m", i)
		if got, err := p.Request(t.Context(), typeEcho, []byte(msg)); err != nil || string(got) != "a:"+strings.ToUpper(msg) {
			t.Fatalf("request %d = %q, %v", i, got, err)
		}
	}
	if n := opened() - base; n != 1 {
		t.Fatalf("50 requests one after another opened %d streams, want 1 lane", n)
	}

	const concurrent = 3 * maxIdleLanes
	held.Add(concurrent)
	errs := make(chan error, concurrent)
	for range concurrent {
		go func() {
			_, err := p.Request(t.Context(), typeEcho, []byte("hold"))
			errs <- err
		}()
	}
	held.Wait() // every request is in its handler: each has a lane
	close(hold)
	for range concurrent {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := opened() - base; n != concurrent {
		t.Fatalf("%d requests at once (one lane idle before) opened %d streams in all, want %d", concurrent, n, concurrent)
	}
	base = opened()
	for range 2 * maxIdleLanes {
		if _, err := p.Request(t.Context(), typeEcho, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := opened() - base; n != 0 {
		t.Fatalf("requests after the burst opened %d streams, want 0 (idle lanes kept)", n)
	}
	if n := len(p.lanes); n != maxIdleLanes {
		t.Fatalf("%d idle lanes kept, want %d", n, maxIdleLanes)
	}
}

func TestDatagram(t *testing.T) {
	ca := newTestCA(t, testTD)
	a := startNode(t, ca, "a", nodeOpts{})
	b := startNode(t, ca, "b", nodeOpts{})
	type dg struct{ peer, body string }
	got := make(chan dg, 100)
	b.HandleDatagram(func(peer string, body []byte) { got <- dg{peer, string(body)} })

	p, err := a.Dial(t.Context(), b.addr())
	if err != nil {
		t.Fatal(err)
	}
	// Datagrams are unreliable: send until one arrives.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(10 * time.Second)
	for received := false; !received; {
		if err := p.SendDatagram([]byte("signal 42")); err != nil {
			t.Fatalf("SendDatagram: %v", err)
		}
		select {
		case d := <-got:
			if d != (dg{"a", "signal 42"}) {
				t.Fatalf("datagram = %+v, want from a: signal 42", d)
			}
			received = true
		case <-tick.C:
		case <-timeout:
			t.Fatal("no datagram arrived")
		}
	}

	err = p.SendDatagram(make([]byte, 64<<10))
	t.Logf("64 KiB datagram: %v", err)
	if err == nil || !strings.Contains(err.Error(), "over the path's limit of") {
		t.Fatalf("SendDatagram(64 KiB) = %v, want an error naming the limit", err)
	}
}

// One connection per pair of nodes: a second Dial reuses it, and so does
// the other side dialing back.
func TestDialReusesConnection(t *testing.T) {
	ca := newTestCA(t, testTD)
	a := startNode(t, ca, "a", nodeOpts{})
	b := startNode(t, ca, "b", nodeOpts{})
	a.HandleRequest(typeEcho, 0, echo)

	var wg sync.WaitGroup
	peers := make([]*Peer, 8)
	for i := range peers {
		wg.Go(func() {
			p, err := b.Dial(t.Context(), a.addr())
			if err != nil {
				t.Error(err)
			}
			peers[i] = p
		})
	}
	wg.Wait()
	for _, p := range peers[1:] {
		if p != peers[0] {
			t.Fatal("concurrent Dials to one address returned different connections")
		}
	}
	back, err := a.Dial(t.Context(), b.addr())
	if err != nil {
		t.Fatal(err)
	}
	if back.Name() != "b" {
		t.Fatalf("dial back: peer %q, want b", back.Name())
	}
	if got, err := peers[0].Request(t.Context(), typeEcho, []byte("x")); err != nil || string(got) != "b:X" {
		t.Fatalf("Request over the reused connection = %q, %v", got, err)
	}
	for _, n := range []*testNode{a, b} {
		n.mu.Lock()
		conns := len(n.all)
		n.mu.Unlock()
		if conns != 1 {
			t.Errorf("%s has %d connections, want 1", n.name, conns)
		}
	}
	if _, err := a.Dial(t.Context(), a.addr()); err == nil || !strings.Contains(err.Error(), "that is this node") {
		t.Errorf("Dial(self) = %v, want refusal", err)
	}
}

// A node whose certificate comes from another CA is refused by the
// listener, which logs why, and its Dial fails saying so.
func TestRefusedOtherCA(t *testing.T) {
	ca := newTestCA(t, testTD)
	rogueCA := newTestCA(t, testTD)
	honest := startNode(t, ca, "honest", nodeOpts{})
	honest.HandleRequest(typeEcho, 0, echo)
	// The rogue trusts the real CA (its certificate is public), so it
	// accepts the honest node; its own certificate is what fails.
	rogue := startNode(t, rogueCA, "rogue", nodeOpts{trust: []*testCA{ca, rogueCA}})

	_, err := rogue.Dial(t.Context(), honest.addr())
	if err == nil {
		t.Fatal("rogue Dial succeeded")
	}
	var te *quic.TransportError
	if !errors.As(err, &te) || !te.ErrorCode.IsCryptoError() || !te.Remote || !strings.Contains(err.Error(), "peer refused the handshake") {
		t.Fatalf("rogue Dial = %v, want the peer's TLS refusal", err)
	}
	line, ok := honest.logs.find("refused peer", "spiffe://test.local/node/rogue", "unknown authority")
	if !ok {
		t.Fatal("honest node did not log the refusal with the claimed ID and reason")
	}
	t.Logf("dialer got: %v", err)
	t.Logf("listener logged: %s", line)

	// The other way round: the honest node refuses the rogue listener.
	_, err = honest.Dial(t.Context(), rogue.addr())
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("Dial to the rogue = %v, want unknown authority", err)
	}
	t.Logf("dialing the rogue: %v", err)
	if _, ok := honest.logs.find("refused peer", rogue.addr(), "unknown authority"); !ok {
		t.Fatal("dialer did not log the refusal")
	}
	honest.mu.Lock()
	defer honest.mu.Unlock()
	if len(honest.all) != 0 {
		t.Fatalf("honest node kept %d connections", len(honest.all))
	}
}

func TestRefusedOtherTrustDomain(t *testing.T) {
	ca := newTestCA(t, testTD)
	a := startNode(t, ca, "a", nodeOpts{})
	otherID := spiffeid.RequireFromString("spiffe://other.local/node/x")
	cert := ca.issue(t, otherID, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	x := startNode(t, ca, "x", nodeOpts{cert: &cert})

	// The TLS layer accepts x's chain; VerifyPeer refuses its ID after the
	// handshake, and x's hello learns it.
	_, err := x.Dial(t.Context(), a.addr())
	var ae *quic.ApplicationError
	if !errors.As(err, &ae) || ae.ErrorCode != codeRefused || !strings.Contains(err.Error(), "peer refused this node") {
		t.Fatalf("Dial from another trust domain = %v, want the peer's refusal", err)
	}
	if _, ok := a.logs.find("refused peer", "spiffe://other.local/node/x", "trust domain other.local, want test.local"); !ok {
		t.Fatal("listener did not log the trust domain refusal")
	}
	_, err = a.Dial(t.Context(), x.addr())
	if err == nil || !strings.Contains(err.Error(), "trust domain other.local, want test.local") {
		t.Fatalf("Dial to another trust domain = %v", err)
	}
}

func TestRefusedExpired(t *testing.T) {
	ca := newTestCA(t, testTD)
	a := startNode(t, ca, "a", nodeOpts{})
	id := spiffeid.RequireFromString("spiffe://test.local/node/old")
	cert := ca.issue(t, id, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	old := startNode(t, ca, "old", nodeOpts{cert: &cert})

	_, err := old.Dial(t.Context(), a.addr())
	if err == nil {
		t.Fatal("Dial with an expired certificate succeeded")
	}
	t.Logf("dialer got: %v", err)
	if _, ok := a.logs.find("refused peer", "spiffe://test.local/node/old", "expired"); !ok {
		t.Fatal("listener did not log the expiry")
	}
}

func TestConfigRefusesUnverifiedTLS(t *testing.T) {
	ca := newTestCA(t, testTD)
	cert := ca.node(t, "a")
	roots := pool(ca)
	noClientAuth := serverTLS(cert, roots)
	noClientAuth.ClientAuth = tls.RequestClientCert
	skip := clientTLS(cert, roots)
	skip.VerifyConnection = nil
	cases := []struct {
		name   string
		server *tls.Config
		client *tls.Config
		want   string
	}{
		{"server without client auth", noClientAuth, clientTLS(cert, roots), "must require and verify client certificates"},
		{"client skipping verification", serverTLS(cert, roots), skip, "skips verification"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Listen(t.Context(), Config{
				Addr: "127.0.0.1:0", Node: "a",
				TLSServer:  func() *tls.Config { return c.server },
				TLSClient:  func() *tls.Config { return c.client },
				VerifyPeer: verifyPeer(testTD),
			})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Listen = %v, want %q", err, c.want)
			}
		})
	}
}

// Cancelling Listen's context closes the fabric.
func TestContextClosesFabric(t *testing.T) {
	ca := newTestCA(t, testTD)
	b := startNode(t, ca, "b", nodeOpts{})
	ctx, cancel := context.WithCancel(t.Context())
	cert := ca.node(t, "a")
	roots := pool(ca)
	a, err := Listen(ctx, Config{
		Addr: "127.0.0.1:0", Node: "a",
		TLSServer:  func() *tls.Config { return serverTLS(cert, roots) },
		TLSClient:  func() *tls.Config { return clientTLS(cert, roots) },
		VerifyPeer: verifyPeer(testTD),
		Logger:     discardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Dial(t.Context(), b.addr()); err != nil {
		t.Fatal(err)
	}
	cancel()
	eventually(t, 5*time.Second, "Dial fails with ErrClosed", func() bool {
		_, err := a.Dial(t.Context(), b.addr())
		return errors.Is(err, ErrClosed)
	})
	a.Close()
	eventually(t, 5*time.Second, "b forgets the connection", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.all) == 0
	})
}

// A memberlist packet too large for a datagram travels as a stream. b runs
// no memberlist, so the test reads what its transport delivers.
func TestLargeGossipPacket(t *testing.T) {
	ca := newTestCA(t, testTD)
	a := startNode(t, ca, "a", nodeOpts{})
	bcert := ca.node(t, "b")
	roots := pool(ca)
	b, err := listen(t.Context(), Config{
		Addr: "127.0.0.1:0", Node: "b",
		TLSServer:  func() *tls.Config { return serverTLS(bcert, roots) },
		TLSClient:  func() *tls.Config { return clientTLS(bcert, roots) },
		VerifyPeer: verifyPeer(testTD),
		Logger:     discardLogger(),
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	baddr := b.Addr().String()

	big := bytes.Repeat([]byte("gossip"), 2000)
	small := []byte("ping")
	// No connection yet: both packets wait for the dial, then go out.
	for _, pk := range [][]byte{big, small} {
		if _, err := a.gossip.WriteToAddress(pk, memberlist.Address{Addr: baddr, Name: "b"}); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]bool{}
	timeout := time.After(10 * time.Second)
	for len(got) < 2 {
		select {
		case pk := <-b.gossip.packets:
			if pk.From.String() != a.addr() {
				t.Fatalf("packet from %s, want %s", pk.From, a.addr())
			}
			switch {
			case bytes.Equal(pk.Buf, big):
				got["big"] = true
			case bytes.Equal(pk.Buf, small):
				got["small"] = true
			default:
				t.Fatalf("unexpected packet of %d bytes", len(pk.Buf))
			}
		case <-timeout:
			t.Fatalf("packets received: %v, want big and small", got)
		}
	}
	// A packet for a memberlist name that is not the peer's is refused.
	if _, err := a.gossip.WriteToAddress([]byte("x"), memberlist.Address{Addr: baddr, Name: "c"}); err == nil ||
		!strings.Contains(err.Error(), `memberlist node "c" is at`) {
		t.Fatalf("WriteToAddress with the wrong name = %v", err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
