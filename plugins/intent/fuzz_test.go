package intent

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzParse(f *testing.F) {
	if hello, err := os.ReadFile("testdata/hello.intent"); err == nil {
		f.Add(hello)
	}
	f.Add([]byte("cell x\nwhen a.b{k=v} >= 1.5KiB for 1m30s then reroute cell:y cooldown 5s\n"))
	f.Fuzz(func(t *testing.T, content []byte) {
		spec, diags := ParseBytes("f.intent", content)
		lines := bytes.Count(content, []byte("\n")) + 1
		for _, d := range diags {
			if d.Line < 1 || d.Line > lines+1 || d.Column < 1 {
				t.Fatalf("diagnostic out of bounds (%d lines): %v", lines, d)
			}
			if len(content) <= MaxSize {
				line := strings.Split(strings.TrimPrefix(string(content), "\uFEFF"), "\n")[d.Line-1]
				if max := utf8.RuneCountInString(line) + 1; d.Column > max {
					t.Fatalf("diagnostic column beyond line of %d characters: %v", max-1, d)
				}
			}
			if d.File != "f.intent" || d.Message == "" || !utf8.ValidString(d.Message) || !utf8.ValidString(d.Hint) {
				t.Fatalf("bad diagnostic %#v", d)
			}
		}
		if spec == nil {
			if len(diags) == 0 {
				t.Fatal("no spec and no diagnostics")
			}
			return
		}
		if len(diags) > 0 {
			t.Fatalf("spec with diagnostics: %v", diags)
		}
		if spec.Cell == "" {
			t.Fatal("spec without a cell")
		}
		assertRoundTrip(t, spec)
	})
}
