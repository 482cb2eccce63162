package snapshot

import (
	"encoding/hex"
	"errors"
	"strconv"
	"time"
)

// Kind says what a snapshot holds.
type Kind uint8

const (
	// KindInit is a module's pre-initialised image: its memory and globals
	// right after _initialize. It is the base that KindState snapshots of
	// the same module are usually encoded against.
	KindInit Kind = 1
	// KindState is a live instance's state, taken between requests.
	KindState Kind = 2
)

// String returns "init", "state" or "kind(N)".
func (k Kind) String() string {
	switch k {
	case KindInit:
		return "init"
	case KindState:
		return "state"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// valid reports whether k is a kind this version of the format knows.
func (k Kind) valid() bool { return k == KindInit || k == KindState }

// Binding is what a snapshot must match to be used.
type Binding struct {
	// Module is the sha256 of the original (uninstrumented) module bytes.
	Module [32]byte
	// Settings is the sha256 of the instrumentation settings and the host
	// layout. It is opaque to this package, which only compares it.
	Settings [32]byte
}

// Snapshot is a captured instance.
type Snapshot struct {
	Binding
	// Kind says whether this is a module's initial image or a live state.
	Kind Kind
	// Taken is the wall clock at capture. It is stored as Unix
	// nanoseconds, so it must lie between the years 1678 and 2262, and it
	// is decoded in UTC without a monotonic reading.
	Taken time.Time
	// Nanotime is the guest's monotonic clock reading at capture.
	Nanotime int64
	// Globals are the values of the module's mutable globals, in the
	// module's export order (at most MaxGlobals). Each holds the value's
	// bits: an i32 or f32 in the low 32 bits.
	Globals []uint64
	// Memory is the whole linear memory; its length is a multiple of
	// PageSize, at most MaxPages pages. Nil from a sparse Decode.
	Memory []byte
	// From a sparse Decode (Options.Sparse): Pages is the memory's size in
	// pages, Dirty the indices of the pages that differ from the base (in
	// increasing order) and DirtyData their contents, back to back.
	Pages     uint32
	Dirty     []uint32
	DirtyData []byte
}

const (
	// PageSize is the size of a WebAssembly memory page, the unit in
	// which memories are sized and snapshots are diffed.
	PageSize = 65536
	// FormatVersion is the version of the encoding Encode writes and the
	// only one Decode reads.
	FormatVersion = 1
	// MaxPages is the most pages a snapshot's memory may have: a 32-bit
	// WebAssembly memory's 4 GiB.
	MaxPages = 1 << 16
	// MaxGlobals is the most globals a snapshot may hold.
	MaxGlobals = 1 << 16
)

// Errors Decode returns wrap one of these (test with errors.Is); the
// wrapping message says what was wrong and at which byte offset.
var (
	// ErrFormat means the input is not a snapshot, or is one of a format
	// version or kind this build does not know.
	ErrFormat = errors.New("snapshot: unknown format")
	// ErrCorrupt means a checksum does not match or a field holds a value
	// the format does not allow: a bad page index, a duplicate page, a
	// page that does not decompress to PageSize bytes, and so on.
	ErrCorrupt = errors.New("snapshot: corrupt")
	// ErrTruncated means the input ended before the snapshot did.
	ErrTruncated = errors.New("snapshot: truncated")
	// ErrForeign means an intact snapshot that is not for this use: its
	// Binding differs from Options.Expect, or it was encoded against a
	// base memory other than Options.Base.
	ErrForeign = errors.New("snapshot: foreign")
	// ErrTooLarge means the snapshot exceeds Options.MaxPages or
	// Options.MaxBytes, or has more than MaxGlobals globals.
	ErrTooLarge = errors.New("snapshot: too large")
)

// short returns the first 8 bytes of a digest in hex, for messages.
func short(sum [32]byte) string { return hex.EncodeToString(sum[:8]) }
