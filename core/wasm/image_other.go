//go:build !linux

package wasm

import "fmt"

// cowFile is empty where images cannot be mapped copy-on-write.
type cowFile struct{}

func newImage(name string, b []byte) (*image, error) {
	if len(b)%PageSize != 0 {
		return nil, fmt.Errorf("wasm: image of %d bytes is not whole pages", len(b))
	}
	return &image{size: len(b), root: len(b), bytes: b}, nil
}

func (cowFile) readAt([]byte, int64) {}

func (*image) mapMemory(uint64) *mappedMemory { return nil }

type mappedMemory struct{ copyMemory }

func (img *image) view() ([]byte, func(), error) { return img.contents(), func() {}, nil }
