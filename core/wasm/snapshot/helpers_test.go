package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// testBinding is the binding of every test snapshot.
var testBinding = Binding{
	Module:   sha256.Sum256([]byte("module")),
	Settings: sha256.Sum256([]byte("settings")),
}

// testTaken is a fixed capture time.
var testTaken = time.Date(2026, 3, 1, 12, 30, 45, 123456789, time.UTC)

// heapPage fills page with data that compresses like a heap does: 8-byte
// words drawn from a small pool, with runs of zeros.
func heapPage(rng *rand.Rand, page []byte) {
	var pool [64]uint64
	for i := range pool {
		pool[i] = rng.Uint64() >> (rng.IntN(4) * 16) // some small values
	}
	for i := 0; i < len(page); i += 8 {
		if rng.IntN(4) == 0 {
			continue // zero word
		}
		binary.LittleEndian.PutUint64(page[i:], pool[rng.IntN(len(pool))])
	}
}

// randomPage fills page with incompressible bytes.
func randomPage(rng *rand.Rand, page []byte) {
	for i := 0; i < len(page); i += 8 {
		binary.LittleEndian.PutUint64(page[i:], rng.Uint64())
	}
}

// heapMemory returns a memory of n pages of heapPage data.
func heapMemory(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	mem := make([]byte, n*PageSize)
	for i := range n {
		heapPage(rng, mem[i*PageSize:(i+1)*PageSize])
	}
	return mem
}

// page returns page i of mem.
func page(mem []byte, i int) []byte { return mem[i*PageSize : (i+1)*PageSize] }

// encode encodes s against base, failing the test on error, and checks
// the count Encode returns.
func encode(tb testing.TB, s *Snapshot, base []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	n, err := Encode(&buf, s, base)
	if err != nil {
		tb.Fatalf("Encode: %v", err)
	}
	if n != int64(buf.Len()) {
		tb.Fatalf("Encode returned %d, wrote %d bytes", n, buf.Len())
	}
	return buf.Bytes()
}

// diff returns how a and b differ, or "" if they are equal snapshots.
func diff(a, b *Snapshot) string {
	switch {
	case a.Binding != b.Binding:
		return "binding"
	case a.Kind != b.Kind:
		return fmt.Sprintf("kind %v vs %v", a.Kind, b.Kind)
	case !a.Taken.Equal(b.Taken):
		return fmt.Sprintf("taken %v vs %v", a.Taken, b.Taken)
	case a.Nanotime != b.Nanotime:
		return fmt.Sprintf("nanotime %d vs %d", a.Nanotime, b.Nanotime)
	case !slices.Equal(a.Globals, b.Globals):
		return fmt.Sprintf("globals %v vs %v", a.Globals, b.Globals)
	case len(a.Memory) != len(b.Memory):
		return fmt.Sprintf("memory of %d vs %d bytes", len(a.Memory), len(b.Memory))
	}
	for i := 0; i < len(a.Memory); i += PageSize {
		if !bytes.Equal(a.Memory[i:i+PageSize], b.Memory[i:i+PageSize]) {
			return fmt.Sprintf("memory page %d differs", i/PageSize)
		}
	}
	return ""
}

// header reads the counts of an encoded snapshot's header.
func header(b []byte) (pages, globals, encoded uint32) {
	return binary.LittleEndian.Uint32(b[offPages:]), binary.LittleEndian.Uint32(b[offGlobals:]), binary.LittleEndian.Uint32(b[offEncoded:])
}

// reseal returns a copy of b with its header CRC, the CRC of every page
// record it can find and its trailer recomputed, so that a change to b
// reaches the checks behind them; nil if b is too short to have them.
func reseal(b []byte) []byte {
	if len(b) < headerSize+trailerSize {
		return nil
	}
	b = bytes.Clone(b)
	binary.LittleEndian.PutUint32(b[offHeaderCRC:], crc32.Checksum(b[:offHeaderCRC], castagnoli))
	_, globals, encoded := header(b)
	end := len(b) - trailerSize
	at := uint64(headerSize) + 8*uint64(globals)
	for range encoded {
		if at+recSize > uint64(end) {
			break
		}
		rec := b[at:]
		binary.LittleEndian.PutUint32(rec[recCRC:], crc32.Checksum(rec[:recCRC], castagnoli))
		at += recSize + uint64(binary.LittleEndian.Uint32(rec[recLength:]))
	}
	sum := sha256.Sum256(b[:end])
	copy(b[end:], sum[:])
	return b
}

// rawRecord is a page record as assemble writes it.
type rawRecord struct {
	index    uint32
	encoding byte
	payload  []byte
}

// rawSnapshot is an encoded snapshot taken apart, to be changed and put
// back together by assemble.
type rawSnapshot struct {
	header  [headerSize]byte
	globals []byte
	records []rawRecord
}

// takeApart splits a valid encoded snapshot.
func takeApart(tb testing.TB, b []byte) *rawSnapshot {
	tb.Helper()
	r := &rawSnapshot{}
	copy(r.header[:], b)
	_, globals, encoded := header(b)
	at := headerSize + 8*int(globals)
	r.globals = bytes.Clone(b[headerSize:at])
	for range encoded {
		n := int(binary.LittleEndian.Uint32(b[at+recLength:]))
		r.records = append(r.records, rawRecord{
			index:    binary.LittleEndian.Uint32(b[at+recIndex:]),
			encoding: b[at+recEncoding],
			payload:  bytes.Clone(b[at+recSize : at+recSize+n]),
		})
		at += recSize + n
	}
	if at+trailerSize != len(b) {
		tb.Fatalf("takeApart: records end at %d, trailer at %d", at, len(b)-trailerSize)
	}
	return r
}

// set32 sets a uint32 header field.
func (r *rawSnapshot) set32(off int, v uint32) { binary.LittleEndian.PutUint32(r.header[off:], v) }

// assemble encodes r with every checksum correct; the header's record
// count is set to len(r.records).
func (r *rawSnapshot) assemble() []byte {
	r.set32(offEncoded, uint32(len(r.records)))
	b := bytes.Clone(r.header[:])
	b = append(b, r.globals...)
	for _, rec := range r.records {
		var h [recSize]byte
		binary.LittleEndian.PutUint32(h[recIndex:], rec.index)
		h[recEncoding] = rec.encoding
		binary.LittleEndian.PutUint32(h[recLength:], uint32(len(rec.payload)))
		b = append(b, h[:]...)
		b = append(b, rec.payload...)
	}
	b = append(b, make([]byte, trailerSize)...)
	return reseal(b)
}
