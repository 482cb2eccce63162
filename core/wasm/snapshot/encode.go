package snapshot

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"time"
)

// Encode writes s to w. When base is non-nil (the same module's KindInit
// memory, which the receiver already has) only the 64 KiB pages of
// s.Memory that differ from base are written (pages beyond len(base) are
// compared with zero); when base is nil, only non-zero pages are written.
// Page contents are compressed with zstd, or stored as they are when that
// does not make them shorter. It returns the number of bytes written.
//
// Encode streams: besides a 64 KiB write buffer it holds one compressed
// page and the list of changed page indices (4 bytes a page), whatever the
// size of the memory; the zstd encoders it shares with other calls hold
// about 1.2 MiB each, at most four of them. It reads s.Memory twice (once
// to find and hash the changed pages, once to compress them) and hashes
// all of base (about 35 ms for 64 MiB), so neither may change until it
// returns; a memory changed in between is refused by Decode as ErrCorrupt.
// An empty base is the same as none. Encode is safe for concurrent use.
//
// Encode refuses, without writing anything, what the format cannot hold:
// an unknown Kind, a Taken outside Unix nanoseconds, a memory or base
// whose length is not a multiple of PageSize or exceeds MaxPages pages,
// more than MaxGlobals globals (errors wrapping ErrTooLarge for the sizes).
func Encode(w io.Writer, s *Snapshot, base []byte) (int64, error) {
	var sum [32]byte
	if len(base) > 0 {
		sum = sha256.Sum256(base)
	}
	return EncodeBase(w, s, base, sum)
}

// EncodeBase is Encode given base's sha256, for a caller that encodes many
// snapshots against one base and hashes it once. A wrong sum makes every
// Decode against the real base refuse the snapshot (ErrForeign).
func EncodeBase(w io.Writer, s *Snapshot, base []byte, baseSum [32]byte) (int64, error) {
	if err := checkEncode(s, base); err != nil {
		return 0, err
	}
	enc, err := encoder()
	if err != nil {
		return 0, fmt.Errorf("snapshot: encode: zstd: %w", err)
	}

	// Find and hash the pages to write.
	pages := len(s.Memory) / PageSize
	var dirty []uint32
	ph := sha256.New()
	for i := range pages {
		page := s.Memory[i*PageSize : (i+1)*PageSize]
		ref := zeroPage[:]
		if (i+1)*PageSize <= len(base) {
			ref = base[i*PageSize : (i+1)*PageSize]
		}
		if !bytes.Equal(page, ref) {
			dirty = append(dirty, uint32(i))
			pagesHash(ph, uint32(i), page)
		}
	}

	var hdr [headerSize]byte
	copy(hdr[:], magic)
	binary.LittleEndian.PutUint16(hdr[offVersion:], FormatVersion)
	hdr[offKind] = byte(s.Kind)
	copy(hdr[offModule:], s.Module[:])
	copy(hdr[offSettings:], s.Settings[:])
	binary.LittleEndian.PutUint64(hdr[offTaken:], uint64(s.Taken.UnixNano()))
	binary.LittleEndian.PutUint64(hdr[offNanotime:], uint64(s.Nanotime))
	binary.LittleEndian.PutUint32(hdr[offPages:], uint32(pages))
	binary.LittleEndian.PutUint32(hdr[offGlobals:], uint32(len(s.Globals)))
	binary.LittleEndian.PutUint32(hdr[offEncoded:], uint32(len(dirty)))
	if len(base) > 0 {
		copy(hdr[offBaseSum:], baseSum[:])
	}
	ph.Sum(hdr[offPagesSum:offPagesSum])
	binary.LittleEndian.PutUint32(hdr[offHeaderCRC:], crc32.Checksum(hdr[:offHeaderCRC], castagnoli))

	cw := &countingWriter{w: w}
	out := &sealWriter{h: sha256.New(), w: bufio.NewWriterSize(cw, 64<<10)}
	out.write(hdr[:])

	var g [8 * 512]byte
	for rest := s.Globals; len(rest) > 0 && out.err == nil; {
		n := min(len(rest), 512)
		for i, v := range rest[:n] {
			binary.LittleEndian.PutUint64(g[8*i:], v)
		}
		out.write(g[:8*n])
		rest = rest[n:]
	}

	buf := make([]byte, 0, enc.MaxEncodedSize(PageSize))
	for _, index := range dirty {
		if out.err != nil {
			break
		}
		page := s.Memory[int(index)*PageSize : int(index+1)*PageSize]
		buf = enc.EncodeAll(page, buf[:0])
		encoding, payload := byte(encZstd), buf
		if len(buf) >= PageSize {
			encoding, payload = encRaw, page
		}
		var rec [recSize]byte
		binary.LittleEndian.PutUint32(rec[recIndex:], index)
		rec[recEncoding] = encoding
		binary.LittleEndian.PutUint32(rec[recLength:], uint32(len(payload)))
		binary.LittleEndian.PutUint32(rec[recCRC:], crc32.Checksum(rec[:recCRC], castagnoli))
		out.write(rec[:])
		out.write(payload)
	}

	if out.err == nil {
		var sum [trailerSize]byte
		out.h.Sum(sum[:0])
		out.write(sum[:])
	}
	if out.err == nil {
		out.err = out.w.Flush()
	}
	if out.err != nil {
		return cw.n, fmt.Errorf("snapshot: encode: writing: %w", out.err)
	}
	return cw.n, nil
}

// checkEncode refuses what Decode would refuse.
func checkEncode(s *Snapshot, base []byte) error {
	if s == nil {
		return errors.New("snapshot: encode: nil snapshot")
	}
	if !s.Kind.valid() {
		return fmt.Errorf("snapshot: encode: unknown kind %d (want %d or %d)", s.Kind, KindInit, KindState)
	}
	if !time.Unix(0, s.Taken.UnixNano()).Equal(s.Taken) {
		return fmt.Errorf("snapshot: encode: Taken %v is not representable in Unix nanoseconds (years 1678 to 2262)", s.Taken)
	}
	if len(s.Globals) > MaxGlobals {
		return fmt.Errorf("%w: encode: %d globals, at most %d", ErrTooLarge, len(s.Globals), MaxGlobals)
	}
	for _, m := range []struct {
		name string
		b    []byte
	}{{"memory", s.Memory}, {"base", base}} {
		if len(m.b)%PageSize != 0 {
			return fmt.Errorf("snapshot: encode: %s length %d is not a multiple of PageSize (%d)", m.name, len(m.b), PageSize)
		}
		if len(m.b)/PageSize > MaxPages {
			return fmt.Errorf("%w: encode: %s of %d pages, at most %d", ErrTooLarge, m.name, len(m.b)/PageSize, MaxPages)
		}
	}
	return nil
}

// sealWriter writes to w and hashes into h what it writes, keeping the
// first error.
type sealWriter struct {
	h   hash.Hash
	w   *bufio.Writer
	err error
}

func (s *sealWriter) write(p []byte) {
	if s.err != nil {
		return
	}
	s.h.Write(p)
	_, s.err = s.w.Write(p)
}

// countingWriter counts the bytes w accepted.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
