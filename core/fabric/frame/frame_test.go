package frame

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

func frameBytes(t *testing.T, typ Type, payload []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, typ, payload); err != nil {
		t.Fatalf("Write(%s, %d bytes): %v", typ, len(payload), err)
	}
	return b.Bytes()
}

func TestWriteLayout(t *testing.T) {
	got := frameBytes(t, TypeRequest, []byte("hi"))
	want := []byte{'C', 'E', 'L', 1, 16, 0, 0, 0, 2, 'h', 'i'}
	if !bytes.Equal(got, want) {
		t.Fatalf("Write = % x, want % x", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	payloads := [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte("celluster"), 50_000)}
	var stream bytes.Buffer
	for i, p := range payloads {
		if err := Write(&stream, Type(16+i), p); err != nil {
			t.Fatalf("Write %d: %v", i, err)
		}
	}
	// A reader that hands out one byte at a time must give the same frames.
	r := iotest.OneByteReader(&stream)
	for i, p := range payloads {
		typ, got, err := Read(r, 0)
		if err != nil {
			t.Fatalf("Read %d: %v", i, err)
		}
		if typ != Type(16+i) || !bytes.Equal(got, p) {
			t.Fatalf("Read %d = %s, %d bytes; want %s, %d bytes", i, typ, len(got), Type(16+i), len(p))
		}
	}
	if _, _, err := Read(r, 0); err != io.EOF {
		t.Fatalf("Read at end = %v, want io.EOF", err)
	}
}

func TestReadErrors(t *testing.T) {
	valid := frameBytes(t, TypeResponse, []byte("0123456789"))
	badVersion := bytes.Clone(valid)
	badVersion[3] = 7
	typeZero := bytes.Clone(valid)
	typeZero[4] = 0
	cases := []struct {
		name string
		in   []byte
		max  int
		is   error
		msg  string
	}{
		{"bad magic", append([]byte("GET / HTTP/1.1"), valid...), 0, ErrBadMagic, `frame: bad magic: 47 45 54, want "CEL"`},
		{"version", badVersion, 0, ErrVersion, "frame: unsupported version: 7 (this node speaks 1)"},
		{"type zero", typeZero, 0, ErrInvalidType, "frame: invalid type 0"},
		{"over limit", valid, 9, ErrTooLarge, "frame: too large: length 10 over limit 9"},
		{"truncated header", valid[:4], 0, ErrTruncated, "frame: truncated header after 4 of 9 bytes: unexpected EOF"},
		{"truncated payload", valid[:12], 0, ErrTruncated, "frame: truncated response payload after 3 of 10 bytes: unexpected EOF"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := Read(bytes.NewReader(c.in), c.max)
			if !errors.Is(err, c.is) {
				t.Fatalf("Read = %v, want %v", err, c.is)
			}
			if err.Error() != c.msg {
				t.Fatalf("error = %q, want %q", err, c.msg)
			}
		})
	}
	t.Run("truncated is ErrUnexpectedEOF", func(t *testing.T) {
		_, _, err := Read(bytes.NewReader(valid[:12]), 0)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("Read = %v, want it to match io.ErrUnexpectedEOF", err)
		}
	})
	t.Run("reader error", func(t *testing.T) {
		boom := errors.New("boom")
		_, _, err := Read(io.MultiReader(bytes.NewReader(valid[:12]), iotest.ErrReader(boom)), 0)
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "after 3 of 10 bytes") {
			t.Fatalf("Read = %v, want boom after 3 of 10 bytes", err)
		}
	})
}

func TestLimits(t *testing.T) {
	if err := Write(io.Discard, TypeInvalid, nil); !errors.Is(err, ErrInvalidType) {
		t.Fatalf("Write(TypeInvalid) = %v, want ErrInvalidType", err)
	}
	if err := Write(io.Discard, TypeRequest, make([]byte, HardMax+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Write(HardMax+1) = %v, want ErrTooLarge", err)
	}
	// A header announcing more than DefaultMax is refused by a zero limit,
	// and more than HardMax by any limit.
	var h [HeaderSize]byte
	putHeader(h[:], TypeRequest, DefaultMax+1)
	if _, err := ParseHeader(h, 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ParseHeader(DefaultMax+1, 0) = %v, want ErrTooLarge", err)
	}
	if got, err := ParseHeader(h, HardMax); err != nil || got.Len != DefaultMax+1 {
		t.Fatalf("ParseHeader(DefaultMax+1, HardMax) = %v, %v", got, err)
	}
	putHeader(h[:], TypeRequest, HardMax+1)
	if _, err := ParseHeader(h, 1<<40); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "over limit 67108864") {
		t.Fatalf("ParseHeader(HardMax+1, 1<<40) = %v, want ErrTooLarge over limit 67108864", err)
	}
}

// A header that announces 60 MiB followed by 100 bytes must not make the
// reader allocate anything near 60 MiB.
func TestReadLyingLengthAllocatesWhatWasSent(t *testing.T) {
	var b bytes.Buffer
	var h [HeaderSize]byte
	putHeader(h[:], TypeRequest, 60<<20)
	b.Write(h[:])
	b.Write(make([]byte, 100))
	in := b.Bytes()

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := Read(bytes.NewReader(in), HardMax)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("Read = %v, want ErrTruncated", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("Read allocated %d bytes for a 100-byte payload, want < 1 MiB", got)
	}
}

func TestTypeString(t *testing.T) {
	for typ, want := range map[Type]string{TypeHello: "hello", TypeGossip: "gossip", TypeRequest: "request", 200: "type(200)"} {
		if got := typ.String(); got != want {
			t.Errorf("Type(%d).String() = %q, want %q", uint8(typ), got, want)
		}
	}
	if !TypeGossipPacket.Reserved() || TypeRequest.Reserved() {
		t.Errorf("Reserved: gossip-packet %v, request %v; want true, false", TypeGossipPacket.Reserved(), TypeRequest.Reserved())
	}
}
