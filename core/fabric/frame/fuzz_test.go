package frame

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzRead feeds arbitrary bytes and limits to Read. Read must not panic,
// must never return (or allocate a buffer for) more than the limit, must
// fail only with the documented errors, and what it accepts must be exactly
// what Write produces for the same type and payload. Every input is also
// written as a frame and read back.
func FuzzRead(f *testing.F) {
	var ok bytes.Buffer
	_ = Write(&ok, TypeRequest, []byte("hello"))
	f.Add(ok.Bytes(), uint16(0))
	f.Add(ok.Bytes(), uint16(4))
	f.Add(ok.Bytes()[:7], uint16(0))
	f.Add([]byte("CEL\x02\x10\x00\x00\x00\x00"), uint16(0))
	f.Add([]byte("CEL\x01\x10\xff\xff\xff\xff"), uint16(0))
	f.Add([]byte{}, uint16(1))

	f.Fuzz(func(t *testing.T, data []byte, max uint16) {
		lim := limit(int(max))
		typ, payload, err := Read(bytes.NewReader(data), int(max))
		if err != nil {
			if !(err == io.EOF || errors.Is(err, ErrBadMagic) || errors.Is(err, ErrVersion) ||
				errors.Is(err, ErrTooLarge) || errors.Is(err, ErrInvalidType) || errors.Is(err, ErrTruncated)) {
				t.Fatalf("Read: undocumented error %v", err)
			}
			if err == io.EOF && len(data) != 0 {
				t.Fatalf("Read = io.EOF on %d bytes of input", len(data))
			}
		} else {
			if len(payload) > lim || cap(payload) > lim {
				t.Fatalf("Read returned len %d cap %d over limit %d", len(payload), cap(payload), lim)
			}
			var again bytes.Buffer
			if err := Write(&again, typ, payload); err != nil {
				t.Fatalf("Write(%s, %d bytes) of what Read accepted: %v", typ, len(payload), err)
			}
			if !bytes.Equal(again.Bytes(), data[:again.Len()]) {
				t.Fatalf("Write(Read(x)) = % x, want prefix of input % x", again.Bytes(), data)
			}
		}

		// Round trip: any payload under the limit comes back unchanged.
		rtType := Type(len(data)%255 + 1)
		var b bytes.Buffer
		if err := Write(&b, rtType, data); err != nil {
			t.Fatalf("Write(%s, %d bytes): %v", rtType, len(data), err)
		}
		gotType, got, err := Read(&b, len(data)+1)
		if err != nil || gotType != rtType || !bytes.Equal(got, data) {
			t.Fatalf("Read(Write(%s, %q)) = %s, %q, %v", rtType, data, gotType, got, err)
		}
	})
}
