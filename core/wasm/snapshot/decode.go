package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Options bound and bind a decode.
type Options struct {
	// Expect is the Binding the snapshot must have: this module and these
	// settings. It is always compared, so a zero Expect refuses every
	// snapshot but one with a zero Binding.
	Expect Binding
	// Base is the base memory Encode was given, nil if none. It must match
	// the base digest the snapshot holds; it is ignored (and may be nil)
	// for a snapshot encoded without a base. Decode does not modify it.
	Base []byte
	// BaseSum, when not zero, is taken as sha256.Sum256(Base) instead of
	// hashing Base on every Decode (about 35 ms for 64 MiB). A wrong
	// BaseSum defeats the base check: compute it from Base once and keep
	// the two together.
	BaseSum [32]byte
	// Reuse, when its capacity is enough for the memory, is where Decode
	// builds it instead of allocating it (Snapshot.Memory then shares
	// Reuse's array), saving a fresh allocation's page faults: about
	// 20 ms for 64 MiB. Its contents do not matter and are overwritten
	// once the snapshot has passed its checksums, even if Decode then
	// fails. It may be Base itself, to apply the pages to it in place.
	Reuse []byte
	// MaxPages refuses a memory larger than this many pages (0, or more
	// than MaxPages: MaxPages). The memory is allocated in full, so this
	// is the bound on what a small hostile snapshot can make Decode
	// allocate.
	MaxPages uint32
	// MaxBytes refuses an encoded snapshot larger than this (0: no limit
	// beyond MaxPages).
	MaxBytes int64
	// Sparse leaves the memory unbuilt: Decode returns the pages that
	// differ from the base (Snapshot.Dirty, Snapshot.DirtyData) and the
	// memory's size (Snapshot.Pages), for a caller that lays them over a
	// base it keeps elsewhere (copy-on-write), at a cost in proportion to
	// what changed. Base may then be nil when BaseSum is given.
	Sparse bool
}

// Decode reads one snapshot from r, verifying everything before returning
// it. It reads exactly the snapshot's bytes and no further, so snapshots
// can follow one another or other data on a stream; it reads each page
// record together with the next record's header, in one io.ReadFull (wrap r
// in a bufio.Reader if small reads are costly and reading ahead does not
// matter).
//
// The input is held in memory as it arrives (the buffer grows at most
// 64 KiB ahead of the bytes received), and checked in this order: the
// magic and version (ErrFormat), the header's CRC (ErrCorrupt), its kind
// (ErrFormat), the sizes against the limits (ErrTooLarge), each page
// record's CRC, index and length (ErrCorrupt), the end of the input
// (ErrTruncated), the closing sha256 of everything (ErrCorrupt), the
// Binding and the base (ErrForeign). Only then is the memory allocated,
// filled from Options.Base or with zeros, and the pages decompressed into
// it and checked against the pages digest (ErrCorrupt).
//
// Decode is safe for concurrent use.
func Decode(r io.Reader, opts Options) (*Snapshot, error) {
	maxPages := opts.MaxPages
	if maxPages == 0 || maxPages > MaxPages {
		maxPages = MaxPages
	}
	in := &input{r: r, max: opts.MaxBytes}

	// The magic and version come first: the layout of the rest depends on
	// them.
	if _, err := in.read(offKind, "magic and version"); err != nil {
		if errors.Is(err, ErrTruncated) && !bytes.HasPrefix([]byte(magic), in.buf[:min(len(in.buf), len(magic))]) {
			return nil, fmt.Errorf("%w: input does not start with the snapshot magic %q (found %q)", ErrFormat, magic, in.buf)
		}
		return nil, err
	}
	if string(in.buf[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: input does not start with the snapshot magic %q (found %q)", ErrFormat, magic, in.buf[:len(magic)])
	}
	if v := binary.LittleEndian.Uint16(in.buf[offVersion:]); v != FormatVersion {
		return nil, fmt.Errorf("%w: byte %d: format version %d, this build reads only version %d", ErrFormat, offVersion, v, FormatVersion)
	}
	if _, err := in.read(headerSize-offKind, "header"); err != nil {
		return nil, err
	}
	hdr := in.buf[:headerSize]
	if got, want := binary.LittleEndian.Uint32(hdr[offHeaderCRC:]), crc32.Checksum(hdr[:offHeaderCRC], castagnoli); got != want {
		return nil, fmt.Errorf("%w: byte %d: header CRC-32C is %08x, the header's bytes give %08x", ErrCorrupt, offHeaderCRC, got, want)
	}

	s := &Snapshot{Kind: Kind(hdr[offKind])}
	if !s.Kind.valid() {
		return nil, fmt.Errorf("%w: byte %d: unknown kind %d (this build knows %d and %d)", ErrFormat, offKind, s.Kind, KindInit, KindState)
	}
	copy(s.Module[:], hdr[offModule:])
	copy(s.Settings[:], hdr[offSettings:])
	s.Taken = time.Unix(0, int64(binary.LittleEndian.Uint64(hdr[offTaken:]))).UTC()
	s.Nanotime = int64(binary.LittleEndian.Uint64(hdr[offNanotime:]))
	pages := binary.LittleEndian.Uint32(hdr[offPages:])
	nglobals := binary.LittleEndian.Uint32(hdr[offGlobals:])
	encoded := binary.LittleEndian.Uint32(hdr[offEncoded:])
	var baseSum, pagesSum [32]byte
	copy(baseSum[:], hdr[offBaseSum:])
	copy(pagesSum[:], hdr[offPagesSum:])

	if pages > maxPages {
		return nil, fmt.Errorf("%w: byte %d: memory of %d pages, the limit is %d", ErrTooLarge, offPages, pages, maxPages)
	}
	if uint64(pages)*PageSize > math.MaxInt {
		return nil, fmt.Errorf("%w: byte %d: memory of %d pages does not fit in this platform's address space", ErrTooLarge, offPages, pages)
	}
	if nglobals > MaxGlobals {
		return nil, fmt.Errorf("%w: byte %d: %d globals, at most %d", ErrTooLarge, offGlobals, nglobals, MaxGlobals)
	}
	if encoded > pages {
		return nil, fmt.Errorf("%w: byte %d: %d encoded pages in a memory of %d pages", ErrCorrupt, offEncoded, encoded, pages)
	}
	// The shortest input these counts allow, checked before reading on.
	least := int64(headerSize) + 8*int64(nglobals) + recSize*int64(encoded) + trailerSize
	if opts.MaxBytes > 0 && least > opts.MaxBytes {
		return nil, fmt.Errorf("%w: %d globals and %d page records need at least %d bytes, the limit is %d bytes", ErrTooLarge, nglobals, encoded, least, opts.MaxBytes)
	}

	// The globals, with the first record's header (or the trailer) in the
	// same read.
	next, nextWhat := recSize, "page record 0"
	if encoded == 0 {
		next, nextWhat = trailerSize, "trailer"
	}
	what := "globals and " + nextWhat
	if nglobals == 0 {
		what = nextWhat
	}
	if _, err := in.read(8*int(nglobals)+next, what); err != nil {
		return nil, err
	}
	if nglobals > 0 {
		s.Globals = make([]uint64, nglobals)
		for i := range s.Globals {
			s.Globals[i] = binary.LittleEndian.Uint64(in.buf[headerSize+8*i:])
		}
	}

	// The page records: their payloads stay where they are in in.buf
	// until everything is verified.
	type record struct {
		index    uint32
		encoding byte
		at, n    int // the payload's offset in in.buf and its length
	}
	records := make([]record, 0, min(encoded, 4096))
	for i := range encoded {
		at := len(in.buf) - recSize
		rec := in.buf[at:]
		if got, want := binary.LittleEndian.Uint32(rec[recCRC:]), crc32.Checksum(rec[:recCRC], castagnoli); got != want {
			return nil, fmt.Errorf("%w: byte %d: page record %d: CRC-32C is %08x, its bytes give %08x", ErrCorrupt, at+recCRC, i, got, want)
		}
		index := binary.LittleEndian.Uint32(rec[recIndex:])
		encoding := rec[recEncoding]
		n := binary.LittleEndian.Uint32(rec[recLength:])
		switch {
		case index >= pages:
			return nil, fmt.Errorf("%w: byte %d: page record %d: page %d is out of range: the memory has %d pages", ErrCorrupt, at+recIndex, i, index, pages)
		case len(records) > 0 && index == records[len(records)-1].index:
			return nil, fmt.Errorf("%w: byte %d: page record %d: duplicate page %d", ErrCorrupt, at+recIndex, i, index)
		case len(records) > 0 && index < records[len(records)-1].index:
			return nil, fmt.Errorf("%w: byte %d: page record %d: page %d follows page %d (pages must be in increasing order)", ErrCorrupt, at+recIndex, i, index, records[len(records)-1].index)
		}
		switch encoding {
		case encRaw:
			if n != PageSize {
				return nil, fmt.Errorf("%w: byte %d: page record %d: raw page %d of %d bytes, want %d", ErrCorrupt, at+recLength, i, index, n, PageSize)
			}
		case encZstd:
			if n == 0 || n >= PageSize {
				return nil, fmt.Errorf("%w: byte %d: page record %d: compressed page %d of %d bytes, want 1 to %d", ErrCorrupt, at+recLength, i, index, n, PageSize-1)
			}
		default:
			return nil, fmt.Errorf("%w: byte %d: page record %d: unknown page encoding %d", ErrCorrupt, at+recEncoding, i, encoding)
		}
		next, nextWhat = recSize, fmt.Sprintf("page record %d", i+1)
		if i+1 == encoded {
			next, nextWhat = trailerSize, "trailer"
		}
		if opts.MaxBytes > 0 {
			if need := int64(len(in.buf)) + int64(n) + recSize*int64(encoded-i-1) + trailerSize; need > opts.MaxBytes {
				return nil, fmt.Errorf("%w: byte %d: page record %d: with page %d's %d bytes the snapshot needs at least %d bytes, the limit is %d bytes", ErrTooLarge, at+recLength, i, index, n, need, opts.MaxBytes)
			}
		}
		if _, err := in.read(int(n)+next, fmt.Sprintf("page %d and %s", index, nextWhat)); err != nil {
			return nil, err
		}
		records = append(records, record{index: index, encoding: encoding, at: at + recSize, n: int(n)})
	}

	end := len(in.buf) - trailerSize
	if got, want := in.buf[end:], sha256.Sum256(in.buf[:end]); !bytes.Equal(got, want[:]) {
		return nil, fmt.Errorf("%w: byte %d: snapshot sha256 is %x…, its %d bytes give %x…", ErrCorrupt, end, got[:8], end, want[:8])
	}

	// Intact: is it ours?
	if s.Module != opts.Expect.Module {
		return nil, fmt.Errorf("%w: byte %d: snapshot of module %s…, want module %s…", ErrForeign, offModule, short(s.Module), short(opts.Expect.Module))
	}
	if s.Settings != opts.Expect.Settings {
		return nil, fmt.Errorf("%w: byte %d: snapshot taken under settings %s…, want settings %s…", ErrForeign, offSettings, short(s.Settings), short(opts.Expect.Settings))
	}
	var base []byte
	if baseSum != [32]byte{} {
		if len(opts.Base) == 0 && !(opts.Sparse && opts.BaseSum != [32]byte{}) {
			return nil, fmt.Errorf("%w: byte %d: snapshot was encoded against a base memory (sha256 %s…), and Options.Base is empty", ErrForeign, offBaseSum, short(baseSum))
		}
		have := opts.BaseSum
		if have == [32]byte{} {
			have = sha256.Sum256(opts.Base)
		}
		if have != baseSum {
			return nil, fmt.Errorf("%w: byte %d: snapshot was encoded against base memory sha256 %s…, Options.Base has sha256 %s…", ErrForeign, offBaseSum, short(baseSum), short(have))
		}
		base = opts.Base
	}

	// Build the memory.
	dec, err := decoder()
	if err != nil {
		return nil, fmt.Errorf("snapshot: decode: zstd: %w", err)
	}
	s.Pages = pages
	size := int(pages) * PageSize
	if opts.Sparse {
		s.Dirty = make([]uint32, len(records))
		s.DirtyData = make([]byte, len(records)*PageSize)
		ph := sha256.New()
		for i, rec := range records {
			s.Dirty[i] = rec.index
			page := s.DirtyData[i*PageSize : (i+1)*PageSize : (i+1)*PageSize]
			if err := decodePage(dec, page, in.buf[rec.at:rec.at+rec.n], rec.encoding, rec.at, i, rec.index); err != nil {
				return nil, err
			}
			pagesHash(ph, rec.index, page)
		}
		var got [32]byte
		ph.Sum(got[:0])
		if got != pagesSum {
			return nil, fmt.Errorf("%w: byte %d: pages digest is %s…, the decompressed pages give %s…", ErrCorrupt, offPagesSum, short(pagesSum), short(got))
		}
		return s, nil
	}
	switch {
	case cap(opts.Reuse) >= size:
		s.Memory = opts.Reuse[:size]
		n := min(len(base), size)
		if n > 0 && &s.Memory[0] != &base[0] { // in place: nothing to copy
			copy(s.Memory, base)
		}
		clear(s.Memory[n:])
	case len(base) >= size:
		s.Memory = slices.Clone(base[:size]) // no zeroing first
	default:
		s.Memory = make([]byte, size)
		copy(s.Memory, base)
	}
	ph := sha256.New()
	for i, rec := range records {
		off := int(rec.index) * PageSize
		page := s.Memory[off : off+PageSize : off+PageSize]
		if err := decodePage(dec, page, in.buf[rec.at:rec.at+rec.n], rec.encoding, rec.at, i, rec.index); err != nil {
			return nil, err
		}
		pagesHash(ph, rec.index, page)
	}
	var got [32]byte
	ph.Sum(got[:0])
	if got != pagesSum {
		return nil, fmt.Errorf("%w: byte %d: pages digest is %s…, the decompressed pages give %s…", ErrCorrupt, offPagesSum, short(pagesSum), short(got))
	}
	return s, nil
}

// decodePage writes a page record's payload, decompressed, into page.
func decodePage(dec *zstd.Decoder, page, payload []byte, encoding byte, at, i int, index uint32) error {
	if encoding == encRaw {
		copy(page, payload)
		return nil
	}
	out, err := dec.DecodeAll(payload, page[:0])
	if err != nil {
		return fmt.Errorf("%w: byte %d: page record %d: page %d does not decompress: %v", ErrCorrupt, at, i, index, err)
	}
	if len(out) != PageSize {
		return fmt.Errorf("%w: byte %d: page record %d: page %d decompresses to %d bytes, want %d", ErrCorrupt, at, i, index, len(out), PageSize)
	}
	if &out[0] != &page[0] {
		copy(page, out) // the decoder never reallocates with its cap limit; in case a later one does
	}
	return nil
}

// input reads a snapshot's bytes into buf, exactly as many as asked.
type input struct {
	r   io.Reader
	buf []byte // every byte read so far
	max int64  // Options.MaxBytes
}

// readAhead is the most that input.read grows its buffer ahead of the
// bytes received.
const readAhead = 64 << 10

// read appends the next n bytes of the input to in.buf and returns them.
// Earlier slices of in.buf may be invalidated.
func (in *input) read(n int, what string) ([]byte, error) {
	off := len(in.buf)
	if in.max > 0 && int64(off)+int64(n) > in.max {
		return nil, fmt.Errorf("%w: byte %d: the %s (%d more bytes) would not fit: the limit is %d bytes", ErrTooLarge, off, what, n, in.max)
	}
	for got := 0; got < n; {
		chunk := min(n-got, readAhead)
		in.buf = slices.Grow(in.buf, chunk)
		k, err := io.ReadFull(in.r, in.buf[len(in.buf):len(in.buf)+chunk])
		in.buf = in.buf[:len(in.buf)+k]
		got += k
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return nil, fmt.Errorf("%w: input ends at byte %d, in the %s (%d of %d bytes)", ErrTruncated, off+got, what, got, n)
		case err != nil:
			return nil, fmt.Errorf("snapshot: reading the %s at byte %d: %w", what, off+got, err)
		}
	}
	return in.buf[off:], nil
}
