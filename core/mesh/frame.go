package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/celluster/celluster/core/cell"
)

// A cell request frame (frame.TypeRequest) carries, before the request
// envelope (cellabi), a small header of its own:
//
//	version   1 byte (1)
//	cell      uvarint length + bytes: the target cell
//	caller    uvarint length + bytes: the calling cell ("" for a request
//	          from outside, forwarded)
//
// The calling node is not in the frame: the fabric verified it at the
// handshake. The caller is asserted by that node, for its own cells.
const requestFrameVersion = 1

// maxNameLen bounds a cell name in a request frame.
const maxNameLen = 255

// appendRequestFrame encodes a cell request frame.
func appendRequestFrame(b []byte, target, caller string, env []byte) []byte {
	b = append(b, requestFrameVersion)
	b = binary.AppendUvarint(b, uint64(len(target)))
	b = append(b, target...)
	b = binary.AppendUvarint(b, uint64(len(caller)))
	b = append(b, caller...)
	return append(b, env...)
}

var errBadFrame = errors.New("malformed cell request frame")

// decodeRequestFrame decodes a cell request frame from a peer; the names
// are checked as cell names.
func decodeRequestFrame(b []byte) (target, caller string, env []byte, err error) {
	if len(b) < 1 || b[0] != requestFrameVersion {
		return "", "", nil, fmt.Errorf("%w: version", errBadFrame)
	}
	b = b[1:]
	field := func(what string) (string, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || k != len(binary.AppendUvarint(nil, n)) || n > maxNameLen || uint64(len(b)-k) < n {
			return "", fmt.Errorf("%w: %s", errBadFrame, what)
		}
		s := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return s, nil
	}
	if target, err = field("cell"); err != nil {
		return "", "", nil, err
	}
	if caller, err = field("caller"); err != nil {
		return "", "", nil, err
	}
	if err := cell.ValidName(target); err != nil {
		return "", "", nil, fmt.Errorf("%w: cell: %v", errBadFrame, err)
	}
	if caller != "" {
		if err := cell.ValidName(caller); err != nil {
			return "", "", nil, fmt.Errorf("%w: caller: %v", errBadFrame, err)
		}
	}
	return target, caller, b, nil
}
