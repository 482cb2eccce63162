// Package frame reads and writes the framed messages that Celluster nodes
// exchange on fabric streams.
//
// # Wire format
//
// A frame is a 9-byte header followed by its payload:
//
//	offset  size  field
//	0       3     magic "CEL"
//	3       1     version (Version, currently 1)
//	4       1     type (Type)
//	5       4     payload length, big-endian uint32
//	9       N     payload
//
// The receiver bounds the payload length: Read takes a limit (DefaultMax,
// 16 MiB, when zero) and never accepts more than HardMax (64 MiB) whatever the
// caller asks for. Read allocates the payload as it arrives, in buffers that
// start at 64 KiB and double up to the announced length: no buffer is larger
// than the limit, and a peer that announces a large payload but sends little
// costs the reader memory in proportion to what it sent.
//
// Every error says what is wrong: a bad magic, an unsupported version, a
// length over the limit, a header or payload truncated after K of N bytes.
// The errors wrap the sentinels ErrBadMagic, ErrVersion, ErrTooLarge,
// ErrInvalidType and ErrTruncated (which also matches io.ErrUnexpectedEOF).
// A stream that ends cleanly before a frame starts gives io.EOF, unwrapped,
// so callers can loop until io.EOF.
package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Version is the frame format version written by Write and the only one
// Read accepts.
//
// Version history:
//
//	1: magic, version, type, 32-bit length, payload.
const Version = 1

// HeaderSize is the size of a frame header in bytes.
const HeaderSize = 9

// DefaultMax is the payload limit Read applies when given a limit <= 0.
const DefaultMax = 16 << 20

// HardMax is the largest payload any frame may carry. Write refuses larger
// payloads and Read clamps larger limits to it.
const HardMax = 64 << 20

// magic opens every frame.
const magic = "CEL"

// chunk is the first allocation for a payload; later ones double it.
const chunk = 64 << 10

// Type says what a frame carries. The fabric dispatches a stream to its
// handler by the type of the stream's first frame.
//
// Types 1 to 15 belong to the fabric itself; 16 and above are for the
// services built on it. Numbers are never reused: retire a type by leaving a
// comment here.
type Type uint8

const (
	// TypeInvalid is the zero Type. It is never sent: Write refuses it and
	// Read reports it as an error.
	TypeInvalid Type = 0
	// TypeHello opens the first stream of every fabric connection. The dialer
	// sends it and waits for the listener's TypeHello reply, which proves the
	// listener accepted the dialer's certificate. The payload is empty.
	TypeHello Type = 1
	// TypeGossip opens a stream that carries memberlist's stream protocol
	// (push/pull state sync) as raw bytes after this frame. The payload is
	// empty.
	TypeGossip Type = 2
	// TypeGossipPacket carries one memberlist packet too large for a QUIC
	// datagram. The payload is the packet.
	TypeGossipPacket Type = 3
	// TypeLane opens a stream that carries requests one after another: the
	// asker writes a request frame, the answerer one TypeResponse or
	// TypeError frame, and so on, so that a request costs no stream set-up
	// and no FIN (see fabric's Peer.Request). The payload is empty.
	TypeLane Type = 4
	// TypeRequest is a generic request; its payload is service-defined.
	TypeRequest Type = 16
	// TypeResponse answers a TypeRequest; its payload is service-defined.
	TypeResponse Type = 17
	// TypeError answers a request that failed; its payload is a UTF-8 message
	// for people.
	TypeError Type = 18
	// TypeCatalog asks a node for its catalog: the cells it serves, with
	// their module hashes and intents (JSON).
	TypeCatalog Type = 19
	// TypeModule asks a node for a module by its sha256 (hex payload); the
	// answer is the module's bytes, verified by the asker.
	TypeModule Type = 20
	// TypeSpawn asks a node to serve a cell (JSON: cell, module hash,
	// intent, the node to fetch the module from).
	TypeSpawn Type = 21
	// TypeJoin asks a node holding the CA for a certificate (a join token
	// and a CSR in, a chain out), on a certificate-less join connection.
	TypeJoin Type = 22
	// TypeRenew asks a node holding the CA to renew the asking peer's
	// certificate (for the key it holds now).
	TypeRenew Type = 23
	// TypeWithdraw tells a node that the asking node, a cell's home, no
	// longer serves the cell (its module was removed there): the payload
	// is the cell's name; the node drops the copy it serves for the fleet.
	TypeWithdraw Type = 24
	// TypeState asks a node for a cell's kept state (JSON: cell, module
	// hash); the answer is the state, encoded by package snapshot against
	// the module's data, verified by the asker.
	TypeState Type = 25
	// TypeStatePush gives a node a copy of a cell's kept state, to restore
	// should the sending node die (a length-prefixed JSON header: cell,
	// module hash; then the encoded state).
	TypeStatePush Type = 26
)

// String returns the type's name, or "type(N)" for a number without one.
func (t Type) String() string {
	switch t {
	case TypeInvalid:
		return "invalid"
	case TypeHello:
		return "hello"
	case TypeGossip:
		return "gossip"
	case TypeGossipPacket:
		return "gossip-packet"
	case TypeLane:
		return "lane"
	case TypeRequest:
		return "request"
	case TypeResponse:
		return "response"
	case TypeError:
		return "error"
	case TypeCatalog:
		return "catalog"
	case TypeModule:
		return "module"
	case TypeSpawn:
		return "spawn"
	case TypeJoin:
		return "join"
	case TypeRenew:
		return "renew"
	case TypeWithdraw:
		return "withdraw"
	case TypeState:
		return "state"
	case TypeStatePush:
		return "state-push"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Reserved reports whether t belongs to the fabric itself (1 to 15) rather
// than to a service.
func (t Type) Reserved() bool { return t < 16 }

// Sentinel errors; Read and Write wrap them with the details.
var (
	// ErrBadMagic: the bytes where a header should start are not "CEL".
	ErrBadMagic = errors.New("frame: bad magic")
	// ErrVersion: the header names a version this package does not speak.
	ErrVersion = errors.New("frame: unsupported version")
	// ErrTooLarge: the payload is longer than the limit.
	ErrTooLarge = errors.New("frame: too large")
	// ErrInvalidType: the type is TypeInvalid.
	ErrInvalidType = errors.New("frame: invalid type 0")
	// ErrTruncated: the stream ended inside a frame.
	ErrTruncated = errors.New("frame: truncated")
)

// Write writes one frame carrying payload to w, in a single Write call.
// It refuses TypeInvalid and payloads over HardMax.
func Write(w io.Writer, typ Type, payload []byte) error {
	if typ == TypeInvalid {
		return ErrInvalidType
	}
	if len(payload) > HardMax {
		return fmt.Errorf("%w: length %d over limit %d", ErrTooLarge, len(payload), HardMax)
	}
	buf := make([]byte, HeaderSize+len(payload))
	putHeader(buf, typ, len(payload))
	copy(buf[HeaderSize:], payload)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("frame: write %s frame of %d bytes: %w", typ, len(payload), err)
	}
	return nil
}

func putHeader(b []byte, typ Type, n int) {
	copy(b, magic)
	b[3] = Version
	b[4] = byte(typ)
	binary.BigEndian.PutUint32(b[5:9], uint32(n))
}

// Header is a decoded frame header.
type Header struct {
	Type Type
	Len  int
}

// ParseHeader decodes and checks a frame header: magic, version, type, and
// the payload length against max (DefaultMax when max <= 0, clamped to
// HardMax).
func ParseHeader(b [HeaderSize]byte, max int) (Header, error) {
	max = limit(max)
	if string(b[:3]) != magic {
		return Header{}, fmt.Errorf("%w: % x, want %q", ErrBadMagic, b[:3], magic)
	}
	if b[3] != Version {
		return Header{}, fmt.Errorf("%w: %d (this node speaks %d)", ErrVersion, b[3], Version)
	}
	typ := Type(b[4])
	if typ == TypeInvalid {
		return Header{}, ErrInvalidType
	}
	n := binary.BigEndian.Uint32(b[5:9])
	if uint64(n) > uint64(max) {
		return Header{}, fmt.Errorf("%w: length %d over limit %d", ErrTooLarge, n, max)
	}
	return Header{Type: typ, Len: int(n)}, nil
}

// Read reads one frame from r and returns its type and payload. The payload
// may be at most max bytes (DefaultMax when max <= 0, clamped to HardMax).
// A stream that ends before the first header byte gives io.EOF; one that ends
// later gives an error wrapping ErrTruncated and io.ErrUnexpectedEOF.
func Read(r io.Reader, max int) (Type, []byte, error) {
	var hb [HeaderSize]byte
	if n, err := io.ReadFull(r, hb[:]); err != nil {
		if err == io.EOF {
			return TypeInvalid, nil, io.EOF
		}
		if err == io.ErrUnexpectedEOF {
			return TypeInvalid, nil, fmt.Errorf("%w header after %d of %d bytes: %w", ErrTruncated, n, HeaderSize, io.ErrUnexpectedEOF)
		}
		return TypeInvalid, nil, fmt.Errorf("frame: read header: %w", err)
	}
	h, err := ParseHeader(hb, max)
	if err != nil {
		return TypeInvalid, nil, err
	}
	payload, err := readPayload(r, h.Len)
	if err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return TypeInvalid, nil, fmt.Errorf("%w %s payload after %d of %d bytes: %w", ErrTruncated, h.Type, len(payload), h.Len, io.ErrUnexpectedEOF)
		}
		return TypeInvalid, nil, fmt.Errorf("frame: read %s payload after %d of %d bytes: %w", h.Type, len(payload), h.Len, err)
	}
	return h.Type, payload, nil
}

// readPayload reads exactly n bytes, growing the buffer as data arrives so a
// short stream never costs a full n-byte allocation. On error it returns
// what it read so far.
func readPayload(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, min(n, chunk))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(n, 2*cap(buf)))
			copy(grown, buf)
			buf = grown
		}
		k, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+k]
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

func limit(max int) int {
	if max <= 0 {
		return DefaultMax
	}
	return min(max, HardMax)
}
