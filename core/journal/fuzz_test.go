package journal

import (
	"bytes"
	"testing"
)

// FuzzDecode checks that the line decoder never panics, and that whatever
// it accepts encodes to a line that decodes again to the same encoding.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"seq":1,"time":"2026-05-01T12:03:04Z","cell":"hello","verb":"clone","rule":"p99-clone","outcome":"done","duration_ns":2100000}` + "\n"))
	f.Fuzz(func(t *testing.T, line []byte) {
		e, err := decode(line)
		if err != nil {
			return
		}
		if e.Seq == 0 {
			t.Fatal("decoded an entry without seq")
		}
		enc, err := encode(e)
		if err != nil {
			t.Fatalf("decoded entry does not encode: %v\n%+v", err, e)
		}
		if bytes.Count(enc, []byte("\n")) != 1 || enc[len(enc)-1] != '\n' {
			t.Fatalf("encoding is not one line: %q", enc)
		}
		e2, err := decode(enc)
		if err != nil {
			t.Fatalf("encoding does not decode: %v\n%s", err, enc)
		}
		enc2, err := encode(e2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("not stable:\n%s%s", enc, enc2)
		}
		_ = Explain(e)
	})
}
