package snapshot

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"
)

// The benchmarks use dirtySnapshot: a 64 MiB memory of heap-like pages
// (8-byte words from a small pool, a quarter zero; zstd shrinks a page to
// about a third) of which 16 pages, 1 MiB, were overwritten with random
// bytes. "dirty-vs-base" encodes or decodes the 16 pages against the base;
// its peer "full" does the same for all 1024 pages without a base, which
// is what a first transfer or a node without the base costs. SetBytes is
// the memory's size, so MB/s is memory covered per second; encoded-bytes
// is the size on the wire.

func BenchmarkEncodeDirty(b *testing.B) {
	s, base := dirtySnapshot()
	for _, bc := range []struct {
		name string
		base []byte
	}{
		{"dirty-vs-base", base},
		{"full", nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(s.Memory)))
			var n int64
			for b.Loop() {
				var err error
				n, err = Encode(io.Discard, s, bc.base)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n), "encoded-bytes")
		})
	}
}

func BenchmarkDecodeDirty(b *testing.B) {
	s, base := dirtySnapshot()
	for _, bc := range []struct {
		name string
		base []byte
		opts Options
	}{
		// Options.BaseSum given, as a node that keeps its base's digest
		// would.
		{"dirty-vs-base", base, Options{Expect: testBinding, Base: base, BaseSum: sha256.Sum256(base)}},
		// Into a reused buffer as well: no fresh 64 MiB to fault in.
		{"dirty-vs-base-reuse", base, Options{Expect: testBinding, Base: base, BaseSum: sha256.Sum256(base), Reuse: make([]byte, len(base))}},
		// In place, onto a copy of the base the caller owns (say a
		// copy-on-write mapping of it): only the changed pages are
		// written. From the second round on the copy already holds the
		// decoded memory, which BaseSum vouches for as the base; the work
		// is the same.
		{"dirty-vs-base-in-place", base, inPlace(base)},
		// Without BaseSum Decode hashes the 64 MiB base each time.
		{"dirty-vs-base-hashing", base, Options{Expect: testBinding, Base: base}},
		{"full", nil, Options{Expect: testBinding}},
		{"full-reuse", nil, Options{Expect: testBinding, Reuse: make([]byte, len(base))}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			enc := encode(b, s, bc.base)
			b.SetBytes(int64(len(s.Memory)))
			for b.Loop() {
				got, err := Decode(bytes.NewReader(enc), bc.opts)
				if err != nil {
					b.Fatal(err)
				}
				if len(got.Memory) != len(s.Memory) {
					b.Fatalf("decoded %d bytes of memory, want %d", len(got.Memory), len(s.Memory))
				}
			}
			b.ReportMetric(float64(len(enc)), "encoded-bytes")
		})
	}
}

// inPlace returns Options that decode onto a copy of base.
func inPlace(base []byte) Options {
	own := bytes.Clone(base)
	return Options{Expect: testBinding, Base: own, Reuse: own, BaseSum: sha256.Sum256(base)}
}
