package fabric

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/celluster/celluster/core/fabric/frame"
)

// header builds a frame header with the given fields, valid or not.
func header(magic string, version byte, typ frame.Type, length uint32) []byte {
	b := append([]byte(magic), version, byte(typ))
	return binary.BigEndian.AppendUint32(b, length)
}

// Malformed and oversized frames sent over a real QUIC connection: each
// stream gets a reset with the code that says the frame was bad (or that no
// handler takes it), the receiving node logs the peer, its address and
// what was wrong, and it keeps serving: a request on another stream of the
// same connection is answered after every one, and garbage datagrams change
// nothing either.
func TestBadFramesOverQUIC(t *testing.T) {
	ca := newTestCA(t, testTD)
	a := startNode(t, ca, "a", nodeOpts{})
	b := startNode(t, ca, "b", nodeOpts{})
	b.HandleStream(typeEcho, echo)
	const typeSmall frame.Type = 110
	b.HandleStream(typeSmall, func(_ context.Context, _ string, s *Stream) {
		if _, _, err := frame.Read(s, 16); err != nil {
			_ = frame.Write(s, frame.TypeError, []byte(err.Error()))
		}
	})
	p, err := a.Dial(t.Context(), b.addr())
	if err != nil {
		t.Fatal(err)
	}
	stillServes := func(after string) {
		t.Helper()
		got, err := p.Request(t.Context(), typeEcho, []byte("ping"))
		if err != nil || string(got) != "a:PING" {
			t.Fatalf("after %s, echo = %q, %v; want a:PING", after, got, err)
		}
	}

	cases := []struct {
		name string
		data []byte
		code quic.StreamErrorCode
		log  []string // parts of b's log line about it
	}{
		{"bad magic", append(header("XYZ", frame.Version, typeEcho, 3), "abc"...), codeBadFrame,
			[]string{"bad stream from peer", `peer="a"`, `addr="` + a.addr() + `"`, "bad magic"}},
		{"unsupported version", append(header("CEL", 9, typeEcho, 3), "abc"...), codeBadFrame,
			[]string{"bad stream from peer", `peer="a"`, "unsupported version: 9"}},
		{"type 0", header("CEL", frame.Version, 0, 0), codeBadFrame,
			[]string{"bad stream from peer", `peer="a"`, "type"}},
		{"over the hard limit", header("CEL", frame.Version, typeEcho, frame.HardMax+1), codeBadFrame,
			[]string{"bad stream from peer", `peer="a"`, "67108865"}},
		{"truncated header", []byte("CEL\x01"), codeBadFrame,
			[]string{"no frame header", `peer="a"`, `got_bytes="4"`}},
		{"oversized gossip packet", header("CEL", frame.Version, frame.TypeGossipPacket, maxGossipPacket+1), codeBadFrame,
			[]string{"bad gossip packet stream", `peer="a"`, "1048577"}},
		{"gossip stream with a payload", append(header("CEL", frame.Version, frame.TypeGossip, 2), "xy"...), codeBadFrame,
			[]string{"gossip stream frame with a payload", `peer="a"`}},
		{"no handler", header("CEL", frame.Version, 200, 0), codeNoHandler, nil},
	}
	for _, c := range cases {
		s, err := p.OpenStream(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(c.data); err != nil {
			t.Fatalf("%s: write: %v", c.name, err)
		}
		s.Close()
		s.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = s.Read(make([]byte, 1))
		var se *quic.StreamError
		if !errors.As(err, &se) || !se.Remote || se.ErrorCode != c.code {
			t.Errorf("%s: read after sending it = %v, want a reset by b with code %d", c.name, err, c.code)
		}
		if c.log != nil {
			eventually(t, 5*time.Second, c.name+": b logs it", func() bool {
				_, ok := b.logs.find(c.log...)
				return ok
			})
		}
		stillServes(c.name)
	}

	// A payload over the handler's own limit gets the handler's answer.
	_, err = p.Request(t.Context(), typeSmall, make([]byte, 17))
	var re *RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Message, "17") || !strings.Contains(re.Message, "16") {
		t.Errorf("request over the handler's limit = %v, want a RemoteError naming 17 and 16", err)
	}

	// Datagrams: empty, of an unknown kind, gossip that is not memberlist's.
	for _, d := range [][]byte{{}, {99, 1, 2, 3}, {dgGossip, 0xff, 0xfe, 0xfd}, {dgGossip}} {
		if err := p.conn.SendDatagram(d); err != nil {
			t.Fatalf("datagram % x: %v", d, err)
		}
	}
	stillServes("garbage datagrams")
	if st := b.Stats(); st.Accepts != 1 || st.Connections != 1 {
		t.Errorf("b's stats after the bad frames: %+v, want the one connection a opened, still open", st)
	}
}
