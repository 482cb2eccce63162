package snapshot

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"hash/crc32"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// magic opens every snapshot.
const magic = "CELSNAP\x00"

// Offsets of the header's fields (see doc.go).
const (
	offVersion   = 8
	offKind      = 10
	offModule    = 11
	offSettings  = 43
	offTaken     = 75
	offNanotime  = 83
	offPages     = 91
	offGlobals   = 95
	offEncoded   = 99
	offBaseSum   = 103
	offPagesSum  = 135
	offHeaderCRC = 167
	headerSize   = 171
)

// A page record's header: index, encoding, length, CRC-32C of those nine
// bytes.
const (
	recIndex    = 0
	recEncoding = 4
	recLength   = 5
	recCRC      = 9
	recSize     = 13
)

// Page encodings.
const (
	encRaw  = 0 // PageSize bytes as they are
	encZstd = 1 // one or more zstd frames, shorter than PageSize, that decompress to PageSize bytes
)

// trailerSize is the length of the closing sha256.
const trailerSize = sha256.Size

// castagnoli is the CRC-32C table for the header and record checksums.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// zeroPage is compared with pages when there is no base.
var zeroPage [PageSize]byte

// codecs bounds the zstd encoders and decoders shared by all calls: each
// encoder holds about 1.2 MiB of match tables, so a machine with many cores
// does not get one per core.
var codecs = min(runtime.GOMAXPROCS(0), 4)

// encoder returns the shared zstd encoder. Its EncodeAll may be called
// concurrently (up to codecs calls at once; more wait).
var encoder = sync.OnceValues(func() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil,
		zstd.WithEncoderConcurrency(codecs),
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithWindowSize(PageSize),
		zstd.WithEncoderCRC(false), // the pages digest covers the output
		zstd.WithZeroFrames(false),
	)
})

// decoder returns the shared zstd decoder. Its DecodeAll may be called
// concurrently and never produces more than PageSize bytes, nor more than
// the capacity of the slice it is given.
var decoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(codecs),
		zstd.WithDecoderMaxMemory(PageSize),
		zstd.WithDecoderMaxWindow(PageSize),
		zstd.WithDecodeAllCapLimit(true),
	)
})

// pagesHash adds one page to the pages digest: its index, then its bytes.
func pagesHash(h hash.Hash, index uint32, page []byte) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], index)
	h.Write(b[:])
	h.Write(page)
}
