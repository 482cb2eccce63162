package fabric

import (
	"encoding/binary"
	"errors"
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
	b.HandleRequest(typeEcho, 0, echo)
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

	lane := header("CEL", frame.Version, frame.TypeLane, 0)
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
		{"lane header with a payload", append(header("CEL", frame.Version, frame.TypeLane, 2), "xy"...), codeBadFrame, nil},
		{"lane: bad magic", append(lane, append(header("XYZ", frame.Version, typeEcho, 3), "abc"...)...), codeBadFrame,
			[]string{"bad request on a lane", `peer="a"`, "bad magic"}},
		{"lane: over the hard limit", append(lane, header("CEL", frame.Version, typeEcho, frame.HardMax+1)...), codeBadFrame,
			[]string{"bad request on a lane", `peer="a"`, "67108865"}},
		{"lane: truncated request", append(lane, append(header("CEL", frame.Version, typeEcho, 10), "abc"...)...), codeBadFrame,
			[]string{"bad request from peer", `peer="a"`, "truncated"}},
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
