package mesh

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"
)

func statePush(hdr stateRequest, state []byte) []byte {
	h, _ := json.Marshal(hdr)
	return append(append(binary.BigEndian.AppendUint32(nil, uint32(len(h))), h...), state...)
}

const testSHA = "db8dff030003a5c1e4b7c3b0a2f4e5d6c7b8a9f0e1d2c3b4a5968778695a4b3c"

func TestParseStatePush(t *testing.T) {
	hdr, st, err := parseStatePush(statePush(stateRequest{Cell: "tally", SHA256: testSHA}, []byte("STATE")))
	if err != nil || hdr.Cell != "tally" || string(st) != "STATE" {
		t.Fatalf("%+v %q %v", hdr, st, err)
	}
	for _, c := range []struct {
		p    []byte
		says string
	}{
		{nil, "no header"},
		{[]byte{0, 0, 0x10, 0}, "header of 4096 bytes in a 4-byte payload"},
		{statePush(stateRequest{Cell: "../etc", SHA256: testSHA}, nil), "state push"},
		{statePush(stateRequest{Cell: "tally", SHA256: "nope"}, nil), "not a hex sha256"},
		{append([]byte{0, 0, 0, 2}, "{x"...), "header"},
	} {
		if _, _, err := parseStatePush(c.p); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%q: err = %v, want it to say %q", c.p, err, c.says)
		}
	}
}

func FuzzParseStatePush(f *testing.F) {
	f.Add(statePush(stateRequest{Cell: "tally", SHA256: testSHA}, []byte("CELSNAP")))
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		hdr, st, err := parseStatePush(p)
		if err != nil {
			return
		}
		if !bytes.HasSuffix(p, st) || hdr.Cell == "" {
			t.Fatalf("parsed %q into %+v and %d bytes", p, hdr, len(st))
		}
	})
}
