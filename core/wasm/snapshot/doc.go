// Package snapshot is the on-disk and on-wire format of a WebAssembly
// instance snapshot: a reactor instance's linear memory and the values of
// its mutable globals, bound to the module and the host settings it was
// taken under. A node stores snapshots so that a restart does not
// re-initialise a module, and ships them to peers so that a cell's state
// follows it. Encode writes one; Decode reads one back and verifies all of
// it before returning anything.
//
// # Diffs
//
// Memories are large and mostly unchanged, so Encode writes only the
// 64 KiB pages that differ from a base memory — the module's KindInit
// image, which the receiver already holds — or, without a base, only the
// pages that are not all zero. Each page written is compressed with zstd
// (github.com/klauspost/compress/zstd, one shared encoder and decoder), or
// stored as it is when compression does not shorten it. A 64 MiB memory
// with 1 MiB of changed pages encodes to about 1 MiB.
//
// # Layout
//
// All integers are little-endian. A snapshot is a fixed 171-byte header,
// the globals, the page records and a 32-byte trailer:
//
//	offset size  field
//	     0    8  magic "CELSNAP\x00"
//	     8    2  format version, uint16: 1 (FormatVersion)
//	    10    1  kind: 1 KindInit, 2 KindState
//	    11   32  Binding.Module: sha256 of the original module
//	    43   32  Binding.Settings: sha256 of the settings and host layout
//	    75    8  Taken, int64 Unix nanoseconds
//	    83    8  Nanotime, int64
//	    91    4  P, the memory's size in pages, uint32 (at most 65536)
//	    95    4  G, the number of globals, uint32 (at most 65536)
//	    99    4  E, the number of page records, uint32 (at most P)
//	   103   32  base digest: sha256 of the base memory Encode was given;
//	             all zero when there was none
//	   135   32  pages digest: sha256 over the page records' pages, in
//	             order, each as its index (uint32) then its 65536
//	             decompressed bytes
//	   167    4  header CRC: CRC-32C (Castagnoli) of bytes 0 to 166
//	   171  8×G  the globals, uint64 each, in the module's export order
//	     …       E page records, page indices strictly increasing:
//	               0   4  page index, uint32, below P
//	               4   1  encoding: 0 raw, 1 zstd
//	               5   4  L, the payload's length, uint32: 65536 for raw,
//	                      1 to 65535 for zstd
//	               9   4  record CRC: CRC-32C of the record's bytes 0 to 8
//	              13   L  payload: the page's bytes (raw), or zstd frames
//	                      that decompress to exactly 65536 bytes
//	  end-32   32  trailer: sha256 of every byte before it
//
// The memory a snapshot stands for is P pages that start as the base
// memory (cut to P pages, or extended with zeros) or as zeros when the
// base digest is zero, with each record's page written over its slot.
//
// # Verification
//
// Decode trusts no count until it has checked it. The magic and version
// are read first (a mismatch is ErrFormat); then the header, whose CRC
// must match before any of its fields is used (ErrCorrupt), so a damaged
// size cannot pass for a legitimate one. P, G and the least size the
// counts imply are compared with the limits in Options (ErrTooLarge)
// before anything is allocated for them. Each record's CRC protects its
// index and length before they are used, so a damaged length is reported
// as corruption, never as a truncation or an oversized read, and the input
// is read exactly to the trailer, never past it. The trailer's sha256 then
// covers everything, globals and payloads included (ErrCorrupt). Only an
// intact snapshot is compared with Options.Expect and Options.Base
// (ErrForeign), and only then is the memory allocated and the pages
// decompressed; the pages digest checks what decompression produced.
//
// The base digest and the pages digest together pin the final memory: a
// receiver whose base differs from the sender's is refused with
// ErrForeign, and a page whose decompression differs from what was
// written is refused with ErrCorrupt. A sha256 of the whole final memory
// would say the same at the cost of hashing all of it on both sides (about
// 35 ms for 64 MiB); the pages digest costs only what changed. The base
// itself is hashed on every Encode and, unless Options.BaseSum is given, on
// every Decode.
//
// # Cost
//
// Measured by BenchmarkEncodeDirty and BenchmarkDecodeDirty on a 2-vCPU
// Xeon VM, for a 64 MiB heap-like memory with 16 random pages (1 MiB)
// changed since its base:
//
//	encode against the base    70-77 ms  1,049,307 bytes  (sha256 of the base: 75%)
//	encode in full, no base   330-355 ms  11.7 MB
//	decode against the base    27-45 ms  fresh 64 MiB memory: mostly its page faults
//	  into Options.Reuse          13 ms  mostly the 64 MiB copy of the base
//	  in place                   2.8 ms  Reuse and Base the same slice
//	  without Options.BaseSum     78 ms  hashing the base
//	decode in full, no base   150-170 ms
//
// Decoding costs little beyond producing the memory; applying the pages in
// place (Options.Reuse and Options.Base the same slice, say a copy-on-write
// mapping of the base image) skips even the copy.
//
// # Versions
//
// Version 1 is the only version. Any change to the layout above, or to
// what a field means, takes a new version number; Decode refuses versions
// it does not know with ErrFormat rather than guess.
package snapshot
