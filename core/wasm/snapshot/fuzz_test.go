package snapshot

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzDecode checks, for any input, that Decode does not panic, leaves
// its input alone, fails only with one of the package's errors, and that
// what it accepts is a valid snapshot that encodes again (against the base
// and without) to bytes that decode to an equal snapshot.
//
// Each input is also tried resealed: with its header CRC, record CRCs and
// trailer recomputed, so that mutations reach the checks behind the
// checksums (counts, indices, encodings, zstd, digests) instead of all
// stopping at the first CRC.
//
// The seed corpus, testdata/fuzz/FuzzDecode, holds valid snapshots and
// damaged ones (see fuzzSeeds; TestFuzzSeeds checks and rewrites it).
func FuzzDecode(f *testing.F) {
	_, base := smallSnapshot()
	opts := Options{Expect: testBinding, Base: base, MaxPages: 16, MaxBytes: 4 << 20}
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzOne(t, in, opts)
		if sealed := reseal(in); sealed != nil {
			fuzzOne(t, sealed, opts)
		}
	})
}

// fuzzOne decodes one input and checks what came of it.
func fuzzOne(t *testing.T, in []byte, opts Options) {
	orig := bytes.Clone(in)
	s, err := Decode(bytes.NewReader(in), opts)
	if !bytes.Equal(in, orig) {
		t.Fatal("Decode modified its input")
	}
	if err != nil {
		if !slices.ContainsFunc([]error{ErrFormat, ErrCorrupt, ErrTruncated, ErrForeign, ErrTooLarge}, func(e error) bool { return errors.Is(err, e) }) {
			t.Fatalf("error %q wraps none of the package's errors", err)
		}
		return
	}
	switch {
	case len(s.Memory)%PageSize != 0 || len(s.Memory)/PageSize > int(opts.MaxPages):
		t.Fatalf("decoded a memory of %d bytes (limit %d pages)", len(s.Memory), opts.MaxPages)
	case len(s.Globals) > MaxGlobals:
		t.Fatalf("decoded %d globals", len(s.Globals))
	case !s.Kind.valid():
		t.Fatalf("decoded kind %d", s.Kind)
	case s.Binding != opts.Expect:
		t.Fatal("decoded a snapshot of another binding")
	}
	for _, base := range [][]byte{opts.Base, nil} {
		var buf bytes.Buffer
		if _, err := Encode(&buf, s, base); err != nil {
			t.Fatalf("a decoded snapshot does not encode: %v", err)
		}
		again, err := Decode(&buf, opts)
		if err != nil {
			t.Fatalf("a decoded snapshot, encoded again (base %v), does not decode: %v", base != nil, err)
		}
		if d := diff(s, again); d != "" {
			t.Fatalf("a decoded snapshot, encoded and decoded again (base %v), differs: %s", base != nil, d)
		}
	}
}

// fuzzSeed is one file of the seed corpus.
type fuzzSeed struct {
	in   []byte
	want *Snapshot // nil for a damaged seed
	err  error     // what a damaged seed is refused with
}

// fuzzSeeds returns the seed corpus, named by file: snapshots valid for
// FuzzDecode's options, and damaged ones.
func fuzzSeeds(tb testing.TB) map[string]fuzzSeed {
	small, base := smallSnapshot()
	withBase := encode(tb, small, base)

	empty := &Snapshot{Binding: testBinding, Kind: KindInit, Taken: testTaken}

	raw := &Snapshot{Binding: testBinding, Kind: KindInit, Taken: testTaken, Nanotime: 7, Memory: make([]byte, 2*PageSize)}
	randomPage(rand.New(rand.NewPCG(9, 9)), page(raw.Memory, 1))

	zeroed := &Snapshot{Binding: testBinding, Kind: KindState, Taken: testTaken, Globals: []uint64{0}, Memory: bytes.Clone(base)}
	clear(page(zeroed.Memory, 0))

	duplicate := takeApart(tb, withBase)
	duplicate.records[1].index = duplicate.records[0].index
	badZstd := takeApart(tb, withBase)
	badZstd.records[0].payload[len(badZstd.records[0].payload)/2] ^= 0x55
	future := bytes.Clone(withBase)
	future[offVersion]++
	flipped := bytes.Clone(withBase)
	flipped[len(flipped)-1] ^= 1
	foreign := *small
	foreign.Module[0] ^= 1
	tooMany := takeApart(tb, withBase)
	tooMany.set32(offPages, 17)

	return map[string]fuzzSeed{
		"valid-state-with-base":  {in: withBase, want: small},
		"valid-state-no-base":    {in: encode(tb, small, nil), want: small},
		"valid-init-empty":       {in: encode(tb, empty, nil), want: empty},
		"valid-raw-page":         {in: encode(tb, raw, nil), want: raw},
		"valid-page-zeroed":      {in: encode(tb, zeroed, base), want: zeroed},
		"broken-truncated":       {in: withBase[:headerSize+30], err: ErrTruncated},
		"broken-trailer":         {in: flipped, err: ErrCorrupt},
		"broken-future-version":  {in: future, err: ErrFormat},
		"broken-duplicate-page":  {in: duplicate.assemble(), err: ErrCorrupt},
		"broken-zstd":            {in: badZstd.assemble(), err: ErrCorrupt},
		"broken-foreign-module":  {in: encode(tb, &foreign, base), err: ErrForeign},
		"broken-too-many-pages":  {in: tooMany.assemble(), err: ErrTooLarge},
		"broken-not-a-snapshot":  {in: []byte("\x00asm\x01\x00\x00\x00"), err: ErrFormat},
		"broken-empty":           {in: []byte{}, err: ErrTruncated},
		"broken-magic-only":      {in: []byte(magic), err: ErrTruncated},
		"broken-header-only":     {in: withBase[:headerSize], err: ErrTruncated},
		"broken-record-past-end": {in: withBase[:len(withBase)-trailerSize-1], err: ErrTruncated},
	}
}

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzDecode from fuzzSeeds")

// TestFuzzSeeds checks the committed seed corpus: each valid seed decodes
// to the snapshot it was made from, so the files also pin the format (a
// change that breaks them needs a new FormatVersion), and each damaged one
// is refused as it should be. With -update-seeds it writes the corpus
// anew.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	seeds := fuzzSeeds(t)
	if *updateSeeds {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, seed := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(seed.in)))
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, base := smallSnapshot()
	opts := Options{Expect: testBinding, Base: base, MaxPages: 16, MaxBytes: 4 << 20}
	for name, seed := range seeds {
		t.Run(name, func(t *testing.T) {
			in := readSeed(t, filepath.Join(dir, name))
			got, err := Decode(bytes.NewReader(in), opts)
			if seed.want != nil {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if d := diff(seed.want, got); d != "" {
					t.Fatalf("decoded snapshot differs: %s", d)
				}
				return
			}
			if !errors.Is(err, seed.err) {
				t.Fatalf("error %v, want %v", err, seed.err)
			}
		})
	}
}

// readSeed reads a corpus file written as `go test fuzz v1` with one
// []byte value.
func readSeed(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update-seeds to write the corpus)", err)
	}
	body, ok := strings.CutPrefix(string(b), "go test fuzz v1\n[]byte(")
	if !ok {
		t.Fatalf("%s: not a one-[]byte corpus file", path)
	}
	body, ok = strings.CutSuffix(strings.TrimSpace(body), ")")
	if !ok {
		t.Fatalf("%s: not a one-[]byte corpus file", path)
	}
	s, err := strconv.Unquote(body)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return []byte(s)
}
