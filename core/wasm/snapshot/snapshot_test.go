package snapshot

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/klauspost/compress/zstd"
)

// smallSnapshot is a KindState snapshot of four pages against a
// three-page base, with a change in page 1 and data in page 3 (beyond the
// base); it encodes to a few hundred bytes, small enough to damage at
// every byte.
func smallSnapshot() (s *Snapshot, base []byte) {
	base = make([]byte, 3*PageSize)
	copy(page(base, 0), strings.Repeat("initialised data ", 100))
	copy(page(base, 2), "more initialised data")
	mem := make([]byte, 4*PageSize)
	copy(mem, base)
	copy(page(mem, 1)[1000:], "a request came and went")
	copy(page(mem, 3), strings.Repeat("grown ", 50))
	return &Snapshot{
		Binding:  testBinding,
		Kind:     KindState,
		Taken:    testTaken,
		Nanotime: 123456789,
		Globals:  []uint64{1, 2, 1 << 63},
		Memory:   mem,
	}, base
}

// rawPageSnapshot is a snapshot with one raw (incompressible) page and one
// compressed page, against a base.
func rawPageSnapshot() (s *Snapshot, base []byte) {
	base = heapMemory(7, 4)
	mem := bytes.Clone(base)
	randomPage(rand.New(rand.NewPCG(7, 2)), page(mem, 1))
	copy(page(mem, 3)[5000:], "changed")
	return &Snapshot{Binding: testBinding, Kind: KindState, Taken: testTaken, Globals: []uint64{42}, Memory: mem}, base
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	base8 := heapMemory(2, 8)

	withBase := bytes.Clone(base8)
	randomPage(rng, page(withBase, 1))
	copy(page(withBase, 5)[100:], "changed")

	noBase := make([]byte, 6*PageSize)
	heapPage(rng, page(noBase, 0))
	randomPage(rng, page(noBase, 4))
	noBase[5*PageSize+PageSize-1] = 1 // the last byte of the last page

	grown := make([]byte, 12*PageSize)
	copy(grown, base8)
	copy(page(grown, 2)[7:], "changed")
	heapPage(rng, page(grown, 9)) // beyond the base; pages 8, 10, 11 stay zero

	shrunk := bytes.Clone(base8[:3*PageSize])
	zeroed := bytes.Clone(base8)
	clear(page(zeroed, 6)) // a page zeroed since the base: must be written

	manyGlobals := make([]uint64, MaxGlobals)
	for i := range manyGlobals {
		manyGlobals[i] = rng.Uint64()
	}

	for _, tc := range []struct {
		name        string
		kind        Kind
		mem, base   []byte
		globals     []uint64
		wantRecords uint32
	}{
		{"with base", KindState, withBase, base8, []uint64{1, 2, 3}, 2},
		{"unchanged from base", KindState, bytes.Clone(base8), base8, []uint64{7}, 0},
		{"without base", KindInit, noBase, nil, []uint64{9}, 3},
		{"growth beyond base", KindState, grown, base8, []uint64{4, 5}, 2},
		{"smaller than base", KindState, shrunk, base8, nil, 0},
		{"page zeroed since base", KindState, zeroed, base8, nil, 1},
		{"zero globals", KindState, withBase, base8, nil, 2},
		{"max globals", KindState, withBase, base8, manyGlobals, 2},
		{"empty memory", KindInit, nil, nil, []uint64{1}, 0},
		{"empty memory with base", KindState, []byte{}, base8, nil, 0},
		{"empty base", KindInit, noBase, []byte{}, nil, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Snapshot{Binding: testBinding, Kind: tc.kind, Taken: testTaken, Nanotime: -5, Globals: tc.globals, Memory: tc.mem}
			b := encode(t, s, tc.base)
			if pages, globals, records := header(b); pages != uint32(len(tc.mem)/PageSize) || globals != uint32(len(tc.globals)) || records != tc.wantRecords {
				t.Errorf("header counts %d pages, %d globals, %d records; want %d, %d, %d", pages, globals, records, len(tc.mem)/PageSize, len(tc.globals), tc.wantRecords)
			}
			for _, opts := range []Options{
				{Expect: testBinding, Base: tc.base},
				{Expect: testBinding, Base: tc.base, BaseSum: sha256.Sum256(tc.base)},
			} {
				got, err := Decode(bytes.NewReader(b), opts)
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if d := diff(s, got); d != "" {
					t.Fatalf("decoded snapshot differs: %s", d)
				}
				if got.Taken.Location() != time.UTC {
					t.Errorf("Taken decoded in %v, want UTC", got.Taken.Location())
				}
			}
		})
	}
}

// A time.Now with its monotonic reading is stored as its wall clock.
func TestTakenNow(t *testing.T) {
	s, base := smallSnapshot()
	s.Taken = time.Now()
	got, err := Decode(bytes.NewReader(encode(t, s, base)), Options{Expect: testBinding, Base: base})
	if err != nil {
		t.Fatal(err)
	}
	if !got.Taken.Equal(s.Taken) || got.Taken.UnixNano() != s.Taken.UnixNano() {
		t.Fatalf("Taken %v decoded as %v", s.Taken, got.Taken)
	}
}

// A snapshot encoded without a base decodes the same whatever base the
// receiver offers.
func TestDecodeIgnoresBaseWithoutBaseDigest(t *testing.T) {
	s, base := smallSnapshot()
	b := encode(t, s, nil)
	got, err := Decode(bytes.NewReader(b), Options{Expect: testBinding, Base: base})
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(s, got); d != "" {
		t.Fatalf("decoded snapshot differs: %s", d)
	}
}

// Decode does not modify the base it copies.
func TestDecodeLeavesBaseAlone(t *testing.T) {
	s, base := smallSnapshot()
	orig := bytes.Clone(base)
	b := encode(t, s, base)
	got, err := Decode(bytes.NewReader(b), Options{Expect: testBinding, Base: base})
	if err != nil {
		t.Fatal(err)
	}
	got.Memory[0]++
	if !bytes.Equal(base, orig) {
		t.Fatal("Decode or its result shares or modified the base")
	}
}

func TestDecodeReuse(t *testing.T) {
	s, base := smallSnapshot() // 4 pages against a base of 3
	withBase := encode(t, s, base)
	withoutBase := encode(t, s, nil)
	garbage := func(n int) []byte {
		b := make([]byte, n)
		randomPage(rand.New(rand.NewPCG(5, 5)), b)
		return b
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		reuse   []byte
		shared  bool
		useBase bool
	}{
		{"bigger buffer", withBase, garbage(6 * PageSize), true, true},
		{"exact buffer", withoutBase, garbage(4 * PageSize), true, false},
		{"short length, enough capacity", withoutBase, garbage(5 * PageSize)[:PageSize], true, false},
		{"too small", withBase, garbage(3 * PageSize), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{Expect: testBinding, Reuse: tc.reuse}
			if tc.useBase {
				opts.Base = base
			}
			got, err := Decode(bytes.NewReader(tc.in), opts)
			if err != nil {
				t.Fatal(err)
			}
			if d := diff(s, got); d != "" {
				t.Fatalf("decoded snapshot differs: %s", d)
			}
			if shared := &got.Memory[0] == &tc.reuse[:1][0]; shared != tc.shared {
				t.Errorf("memory shares Reuse: %v, want %v", shared, tc.shared)
			}
		})
	}
	t.Run("base in place", func(t *testing.T) {
		own := make([]byte, len(base), 4*PageSize)
		copy(own, base)
		got, err := Decode(bytes.NewReader(withBase), Options{Expect: testBinding, Base: own, Reuse: own})
		if err != nil {
			t.Fatal(err)
		}
		if d := diff(s, got); d != "" {
			t.Fatalf("decoded snapshot differs: %s", d)
		}
	})
	t.Run("refused before touching it", func(t *testing.T) {
		reuse := garbage(4 * PageSize)
		orig := bytes.Clone(reuse)
		damaged := bytes.Clone(withBase)
		damaged[len(damaged)-40]++
		if _, err := Decode(bytes.NewReader(damaged), Options{Expect: testBinding, Base: base, Reuse: reuse}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error %v, want %v", err, ErrCorrupt)
		}
		if !bytes.Equal(reuse, orig) {
			t.Fatal("a snapshot that failed its checksum wrote to Reuse")
		}
	})
}

func TestEncodeRefuses(t *testing.T) {
	good := func() *Snapshot {
		s, _ := smallSnapshot()
		return s
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Snapshot)
		base  []byte
		is    error
		words string
	}{
		{"unknown kind", func(s *Snapshot) { s.Kind = 3 }, nil, nil, "unknown kind 3"},
		{"zero kind", func(s *Snapshot) { s.Kind = 0 }, nil, nil, "unknown kind 0"},
		{"zero Taken", func(s *Snapshot) { s.Taken = time.Time{} }, nil, nil, "Unix nanoseconds"},
		{"Taken too late", func(s *Snapshot) { s.Taken = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) }, nil, nil, "Unix nanoseconds"},
		{"memory not whole pages", func(s *Snapshot) { s.Memory = s.Memory[:PageSize+1] }, nil, nil, "memory length 65537"},
		{"base not whole pages", func(*Snapshot) {}, make([]byte, 100), nil, "base length 100"},
		{"too many globals", func(s *Snapshot) { s.Globals = make([]uint64, MaxGlobals+1) }, nil, ErrTooLarge, "65537 globals"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			tc.edit(s)
			var buf bytes.Buffer
			n, err := Encode(&buf, s, tc.base)
			if err == nil {
				t.Fatal("Encode succeeded")
			}
			if n != 0 || buf.Len() != 0 {
				t.Errorf("Encode wrote %d bytes (returned %d) before refusing", buf.Len(), n)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.words) {
				t.Errorf("error %q does not say %q", err, tc.words)
			}
		})
	}
	if _, err := Encode(io.Discard, nil, nil); err == nil {
		t.Error("Encode of a nil snapshot succeeded")
	}
}

func TestEncodeWriteError(t *testing.T) {
	s, base := rawPageSnapshot()
	full := encode(t, s, base)
	for _, limit := range []int{0, 100, PageSize, len(full) - 1} {
		w := &limitedWriter{n: limit}
		n, err := Encode(w, s, base)
		if !errors.Is(err, errFull) {
			t.Fatalf("limit %d: Encode error %v, want %v", limit, err, errFull)
		}
		if n != int64(w.written) || n > int64(limit) {
			t.Errorf("limit %d: Encode returned %d, the writer took %d", limit, n, w.written)
		}
	}
}

var errFull = errors.New("writer full")

// limitedWriter takes n bytes, then fails.
type limitedWriter struct{ n, written int }

func (w *limitedWriter) Write(p []byte) (int, error) {
	if len(p) > w.n-w.written {
		k := w.n - w.written
		w.written = w.n
		return k, errFull
	}
	w.written += len(p)
	return len(p), nil
}

// wantErr fails unless err wraps is and its message contains every one of
// words.
func wantErr(t *testing.T, err, is error, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Decode succeeded, want %v", is)
	}
	if !errors.Is(err, is) {
		t.Fatalf("error %q is not %v", err, is)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

func TestTruncated(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func() (*Snapshot, []byte)
		step int
	}{
		{"small", smallSnapshot, 1},
		{"raw page", rawPageSnapshot, 97},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, base := tc.make()
			b := encode(t, s, base)
			opts := Options{Expect: testBinding, Base: base}
			cuts := []int{len(b) - 1, len(b) - trailerSize, len(b) - trailerSize - 1}
			for n := 0; n < len(b); n += tc.step {
				cuts = append(cuts, n)
			}
			for _, n := range cuts {
				_, err := Decode(bytes.NewReader(b[:n]), opts)
				if !errors.Is(err, ErrTruncated) {
					t.Fatalf("cut at %d of %d bytes: error %v, want %v", n, len(b), err, ErrTruncated)
				}
				if want := fmt.Sprintf("ends at byte %d", n); !strings.Contains(err.Error(), want) {
					t.Fatalf("cut at %d: error %q does not say %q", n, err, want)
				}
			}
		})
	}
}

// A damaged byte anywhere is refused as corrupt, foreign or not a snapshot
// (never truncated or too large: no count is used before its checksum is),
// and never decodes.
func TestFlippedByte(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func() (*Snapshot, []byte)
		step int
	}{
		{"small", smallSnapshot, 1},
		{"raw page", rawPageSnapshot, 89},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, base := tc.make()
			b := encode(t, s, base)
			opts := Options{Expect: testBinding, Base: base}
			positions := []int{len(b) - 1}
			for i := 0; i < len(b); i += tc.step {
				positions = append(positions, i)
			}
			counts := map[error]int{}
			for _, i := range positions {
				for _, mask := range []byte{0x01, 0x80, 0xff} {
					damaged := bytes.Clone(b)
					damaged[i] ^= mask
					got, err := Decode(bytes.NewReader(damaged), opts)
					if err == nil {
						t.Fatalf("byte %d ^ %#x: decoded (%s)", i, mask, diff(s, got))
					}
					found := false
					for _, is := range []error{ErrCorrupt, ErrFormat, ErrForeign} {
						if errors.Is(err, is) {
							counts[is]++
							found = true
						}
					}
					if !found {
						t.Fatalf("byte %d ^ %#x: error %q is none of ErrCorrupt, ErrFormat, ErrForeign", i, mask, err)
					}
				}
			}
			t.Logf("refusals: %d corrupt, %d format, %d foreign", counts[ErrCorrupt], counts[ErrFormat], counts[ErrForeign])
		})
	}
}

func TestForeign(t *testing.T) {
	s, base := smallSnapshot()
	b := encode(t, s, base)
	otherModule := testBinding
	otherModule.Module[0]++
	otherSettings := testBinding
	otherSettings.Settings[31]++
	otherBase := bytes.Clone(base)
	otherBase[12345]++

	for _, tc := range []struct {
		name  string
		opts  Options
		words []string
	}{
		{"other module", Options{Expect: otherModule, Base: base}, []string{"module", short(testBinding.Module), short(otherModule.Module), "byte 11"}},
		{"other settings", Options{Expect: otherSettings, Base: base}, []string{"settings", short(testBinding.Settings), short(otherSettings.Settings), "byte 43"}},
		{"zero expect", Options{Base: base}, []string{"module"}},
		{"wrong base", Options{Expect: testBinding, Base: otherBase}, []string{"base memory", short(sha256.Sum256(base)), short(sha256.Sum256(otherBase))}},
		{"wrong base sum", Options{Expect: testBinding, Base: base, BaseSum: sha256.Sum256(otherBase)}, []string{"base memory"}},
		{"shorter base", Options{Expect: testBinding, Base: base[:PageSize]}, []string{"base memory"}},
		{"no base", Options{Expect: testBinding}, []string{"Options.Base is empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(bytes.NewReader(b), tc.opts)
			wantErr(t, err, ErrForeign, tc.words...)
		})
	}
}

func TestFormat(t *testing.T) {
	s, base := smallSnapshot()
	b := encode(t, s, base)
	opts := Options{Expect: testBinding, Base: base}

	future := bytes.Clone(b)
	future[offVersion] = FormatVersion + 1
	zeroVersion := bytes.Clone(b)
	zeroVersion[offVersion] = 0
	kind := takeApart(t, b)
	kind.header[offKind] = 3

	for _, tc := range []struct {
		name  string
		in    []byte
		words []string
	}{
		{"future version", future, []string{"format version 2", "only version 1", "byte 8"}},
		{"version 0", zeroVersion, []string{"format version 0"}},
		{"unknown kind", kind.assemble(), []string{"unknown kind 3", "byte 10"}},
		{"text", []byte("hello, this is not a snapshot at all"), []string{"magic", "hello, t"}},
		{"wasm module", []byte("\x00asm\x01\x00\x00\x00"), []string{"magic"}},
		{"short garbage", []byte("CELX"), []string{"magic"}},
		{"magic of another kind", []byte("CELSNAQ\x00\x01\x00"), []string{"magic"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(bytes.NewReader(tc.in), opts)
			wantErr(t, err, ErrFormat, tc.words...)
		})
	}
}

func TestTooLarge(t *testing.T) {
	s, base := smallSnapshot()
	b := encode(t, s, base)

	t.Run("pages", func(t *testing.T) {
		_, err := Decode(bytes.NewReader(b), Options{Expect: testBinding, Base: base, MaxPages: 3})
		wantErr(t, err, ErrTooLarge, "4 pages", "limit is 3", "byte 91")
		if _, err := Decode(bytes.NewReader(b), Options{Expect: testBinding, Base: base, MaxPages: 4}); err != nil {
			t.Fatalf("MaxPages 4: %v", err)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		// Every limit below the snapshot's length is refused, whether
		// the counts already show it or a record's length does.
		for limit := int64(1); limit < int64(len(b)); limit++ {
			_, err := Decode(bytes.NewReader(b), Options{Expect: testBinding, Base: base, MaxBytes: limit})
			wantErr(t, err, ErrTooLarge, fmt.Sprintf("the limit is %d bytes", limit))
			if t.Failed() {
				t.Fatalf("at MaxBytes %d", limit)
			}
		}
		if _, err := Decode(bytes.NewReader(b), Options{Expect: testBinding, Base: base, MaxBytes: int64(len(b))}); err != nil {
			t.Fatalf("MaxBytes %d (the length): %v", len(b), err)
		}
	})
	t.Run("globals", func(t *testing.T) {
		r := takeApart(t, b)
		r.set32(offGlobals, MaxGlobals+1)
		_, err := Decode(bytes.NewReader(r.assemble()), Options{Expect: testBinding, Base: base})
		wantErr(t, err, ErrTooLarge, "65537 globals", "byte 95")
	})
	t.Run("pages beyond the format", func(t *testing.T) {
		r := takeApart(t, b)
		r.set32(offPages, 1<<31)
		_, err := Decode(bytes.NewReader(r.assemble()), Options{Expect: testBinding, Base: base, MaxPages: 1 << 31})
		wantErr(t, err, ErrTooLarge, "2147483648 pages", "limit is 65536")
	})
}

// Damage behind intact checksums: what a buggy or hostile encoder could
// write.
func TestCorrupt(t *testing.T) {
	s, base := rawPageSnapshot()
	b := encode(t, s, base)
	if r := takeApart(t, b); len(r.records) != 2 || r.records[0].encoding != encRaw || r.records[1].encoding != encZstd {
		t.Fatalf("test snapshot has records %+v, want a raw page 1 and a compressed page 3", r.records)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	halfPage := enc.EncodeAll(make([]byte, PageSize/2), nil)
	twoPages := enc.EncodeAll(make([]byte, 2*PageSize), nil)
	pagePlusOne := enc.EncodeAll(make([]byte, PageSize+1), nil)
	twoFrames := enc.EncodeAll(make([]byte, PageSize/2), enc.EncodeAll(make([]byte, PageSize/2), nil))

	for _, tc := range []struct {
		name  string
		edit  func(r *rawSnapshot)
		words []string
	}{
		{"page out of range", func(r *rawSnapshot) { r.records[1].index = 4 }, []string{"page 4 is out of range", "4 pages", "page record 1"}},
		{"duplicate page", func(r *rawSnapshot) { r.records[1].index = 1 }, []string{"duplicate page 1", "page record 1"}},
		{"pages out of order", func(r *rawSnapshot) { r.records[0].index, r.records[1].index = 3, 1 }, []string{"page 1 follows page 3"}},
		{"more records than pages", func(r *rawSnapshot) { r.set32(offPages, 1) }, []string{"2 encoded pages in a memory of 1 pages", "byte 99"}},
		{"unknown encoding", func(r *rawSnapshot) { r.records[1].encoding = 2 }, []string{"unknown page encoding 2"}},
		{"short raw page", func(r *rawSnapshot) { r.records[0].payload = r.records[0].payload[:100] }, []string{"raw page 1 of 100 bytes"}},
		{"empty compressed page", func(r *rawSnapshot) { r.records[1].payload = nil }, []string{"compressed page 3 of 0 bytes"}},
		{"compressed page as long as a page", func(r *rawSnapshot) { r.records[0].encoding = encZstd }, []string{"compressed page 1 of 65536 bytes"}},
		{"compressed garbage", func(r *rawSnapshot) { r.records[1].payload = []byte("not zstd at all") }, []string{"page 3 does not decompress"}},
		{"half a page", func(r *rawSnapshot) { r.records[1].payload = halfPage }, []string{"page 3 decompresses to 32768 bytes"}},
		{"two pages", func(r *rawSnapshot) { r.records[1].payload = twoPages }, []string{"page 3 does not decompress"}},
		{"a byte too many", func(r *rawSnapshot) { r.records[1].payload = pagePlusOne }, []string{"page 3 does not decompress"}},
		{"raw page changed", func(r *rawSnapshot) { r.records[0].payload[5]++ }, []string{"pages digest", "byte 135"}},
		{"pages digest changed", func(r *rawSnapshot) { r.header[offPagesSum]++ }, []string{"pages digest"}},
		{"two half-page frames", func(r *rawSnapshot) { r.records[1].payload = twoFrames }, []string{"pages digest"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := takeApart(t, b)
			tc.edit(r)
			_, err := Decode(bytes.NewReader(r.assemble()), Options{Expect: testBinding, Base: base})
			wantErr(t, err, ErrCorrupt, tc.words...)
		})
	}

	// Checksums themselves.
	for _, tc := range []struct {
		name  string
		at    int
		words []string
	}{
		{"header CRC", offHeaderCRC, []string{"header CRC-32C", "byte 167"}},
		{"record CRC", headerSize + 8 + recCRC, []string{"page record 0: CRC-32C", fmt.Sprintf("byte %d", headerSize+8+recCRC)}},
		{"trailer", len(b) - 1, []string{"snapshot sha256", fmt.Sprintf("byte %d", len(b)-trailerSize)}},
		{"a global", headerSize + 3, []string{"snapshot sha256"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			damaged := bytes.Clone(b)
			damaged[tc.at]++
			_, err := Decode(bytes.NewReader(damaged), Options{Expect: testBinding, Base: base})
			wantErr(t, err, ErrCorrupt, tc.words...)
		})
	}
}

// Decode reads one snapshot and not a byte more, however the reader
// splits its bytes.
func TestDecodeReadsExactly(t *testing.T) {
	s1, base := smallSnapshot()
	s2, _ := smallSnapshot()
	s2.Globals = nil
	s2.Kind = KindInit
	stream := append(encode(t, s1, base), encode(t, s2, nil)...)
	stream = append(stream, "tail"...)
	for name, wrap := range map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data+EOF": iotest.DataErrReader,
	} {
		t.Run(name, func(t *testing.T) {
			r := bytes.NewReader(stream)
			in := wrap(r)
			for i, want := range []*Snapshot{s1, s2} {
				got, err := Decode(in, Options{Expect: testBinding, Base: base})
				if err != nil {
					t.Fatalf("snapshot %d: %v", i, err)
				}
				if d := diff(want, got); d != "" {
					t.Fatalf("snapshot %d differs: %s", i, d)
				}
			}
			if rest, _ := io.ReadAll(in); string(rest) != "tail" {
				t.Fatalf("after two snapshots the reader holds %q, want %q", rest, "tail")
			}
		})
	}
}

func TestDecodeReaderError(t *testing.T) {
	s, base := smallSnapshot()
	b := encode(t, s, base)
	broken := errors.New("connection reset")
	for _, n := range []int{0, 5, headerSize + 10, len(b) - 1} {
		r := io.MultiReader(bytes.NewReader(b[:n]), iotest.ErrReader(broken))
		_, err := Decode(r, Options{Expect: testBinding, Base: base})
		if !errors.Is(err, broken) || errors.Is(err, ErrTruncated) {
			t.Fatalf("error after %d bytes: %v, want the reader's error", n, err)
		}
		if want := fmt.Sprintf("at byte %d", n); !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// The point of the format: 1 MiB of changed pages in a 64 MiB memory
// encodes to about 1 MiB, even when the changes do not compress.
func TestDirtySize(t *testing.T) {
	s, base := dirtySnapshot()
	b := encode(t, s, base)
	const limit = 11 << 20 / 10 // 1.1 MiB
	t.Logf("64 MiB memory, 16 random dirty pages: %d bytes", len(b))
	if len(b) > limit {
		t.Fatalf("encoded %d bytes, want at most %d", len(b), limit)
	}
	if _, _, records := header(b); records != dirtyPages {
		t.Fatalf("%d page records, want %d", records, dirtyPages)
	}
	got, err := Decode(bytes.NewReader(b), Options{Expect: testBinding, Base: base, BaseSum: sha256.Sum256(base)})
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(s, got); d != "" {
		t.Fatalf("decoded snapshot differs: %s", d)
	}
}

// dirtyPages is how many pages dirtySnapshot changes: 1 MiB.
const dirtyPages = 16

// dirtySnapshot returns a 64 MiB memory with dirtyPages pages of random
// bytes at random places, and the heap-like base they changed.
func dirtySnapshot() (s *Snapshot, base []byte) {
	const pages = 1024
	base = heapMemory(3, pages)
	mem := bytes.Clone(base)
	rng := rand.New(rand.NewPCG(3, 3))
	for _, i := range rng.Perm(pages)[:dirtyPages] {
		randomPage(rng, page(mem, i))
	}
	globals := make([]uint64, 40)
	for i := range globals {
		globals[i] = rng.Uint64()
	}
	return &Snapshot{Binding: testBinding, Kind: KindState, Taken: testTaken, Nanotime: 1e12, Globals: globals, Memory: mem}, base
}

// Encode and Decode share their zstd codecs; running them at once must
// be safe and give the same bytes.
func TestConcurrent(t *testing.T) {
	s, base := rawPageSnapshot()
	want := encode(t, s, base)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 8 {
		wg.Go(func() {
			for range 5 {
				var buf bytes.Buffer
				if _, err := Encode(&buf, s, base); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf.Bytes(), want) {
					errs <- errors.New("Encode gave different bytes")
					return
				}
				got, err := Decode(&buf, Options{Expect: testBinding, Base: base})
				if err != nil {
					errs <- err
					return
				}
				if d := diff(s, got); d != "" {
					errs <- errors.New(d)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindInit: "init", KindState: "state", 9: "kind(9)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", k, got, want)
		}
	}
}

// TestSparseDecode: a sparse decode returns exactly the pages that differ
// from the base, verified, without building the memory; laid over the
// base they give the memory a full decode builds.
func TestSparseDecode(t *testing.T) {
	base := make([]byte, 8*PageSize)
	for i := range base {
		base[i] = byte(i / 7)
	}
	mem := make([]byte, 12*PageSize) // grown past the base
	copy(mem, base)
	mem[2*PageSize+5] ^= 0xff
	mem[10*PageSize] = 1
	s := &Snapshot{Kind: KindState, Taken: time.Now(), Memory: mem}
	var buf bytes.Buffer
	if _, err := Encode(&buf, s, base); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(base)
	d, err := Decode(bytes.NewReader(buf.Bytes()), Options{BaseSum: sum, Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	if d.Memory != nil || d.Pages != 12 || !slices.Equal(d.Dirty, []uint32{2, 10}) || len(d.DirtyData) != 2*PageSize {
		t.Fatalf("sparse decode: memory %d bytes, pages %d, dirty %v, data %d bytes", len(d.Memory), d.Pages, d.Dirty, len(d.DirtyData))
	}
	got := make([]byte, int(d.Pages)*PageSize)
	copy(got, base)
	for i, p := range d.Dirty {
		copy(got[int(p)*PageSize:], d.DirtyData[i*PageSize:(i+1)*PageSize])
	}
	if !bytes.Equal(got, mem) {
		t.Fatal("the base with the sparse pages is not the memory")
	}
	// The base check still holds without the base's bytes.
	wrong := sum
	wrong[0] ^= 1
	if _, err := Decode(bytes.NewReader(buf.Bytes()), Options{BaseSum: wrong, Sparse: true}); !errors.Is(err, ErrForeign) {
		t.Fatalf("wrong base sum: %v", err)
	}
}
