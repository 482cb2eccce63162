package intents

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tiny is the smallest valid module plus one unrelated custom section.
var tiny = []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
	0x00, 0x04, 0x03, 'a', 'b', 'c'}

func TestEmbedAndSection(t *testing.T) {
	intent := []byte("cell hello\nkeep warm 2\n")
	out, err := Embed(tiny, intent)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Section(out, SectionName)
	if err != nil || !bytes.Equal(got, intent) {
		t.Fatalf("Section = %q, %v; want %q", got, err, intent)
	}
	if abc, _ := Section(out, "abc"); abc == nil {
		t.Fatalf("the module's own custom section was lost")
	}
	// Embedding again replaces, never duplicates.
	out2, err := Embed(out, []byte("cell hello\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := Section(out2, SectionName); string(got) != "cell hello\n" {
		t.Fatalf("re-embedded section = %q", got)
	}
	if n := bytes.Count(out2, []byte(SectionName)); n != 1 {
		t.Fatalf("%d cel.intent sections after re-embedding, want 1", n)
	}
	if none, err := Section(tiny, SectionName); none != nil || err != nil {
		t.Fatalf("Section of a module without one = %q, %v", none, err)
	}
}

func TestSectionRejectsMalformed(t *testing.T) {
	for name, b := range map[string][]byte{
		"short":     {0, 'a'},
		"magic":     {1, 2, 3, 4, 1, 0, 0, 0},
		"truncated": append(append([]byte(nil), tiny[:8]...), 0x00, 0x20, 0x01),
		"name":      append(append([]byte(nil), tiny[:8]...), 0x00, 0x02, 0x09, 'a'),
	} {
		if _, err := Section(b, SectionName); err == nil {
			t.Errorf("%s: no error", name)
		}
		if _, err := Embed(b, []byte("x")); err == nil {
			t.Errorf("%s: Embed gave no error", name)
		}
	}
}

func TestFindOrder(t *testing.T) {
	dir := t.TempDir()
	mod := filepath.Join(dir, "hello.wasm")
	withSection, _ := Embed(tiny, []byte("cell hello\nkeep warm 3\n"))

	src, err := Find(mod, tiny)
	if err != nil || src.Origin != FromDefault || !strings.Contains(string(src.Content), "cell hello\n") {
		t.Fatalf("no file, no section: %+v, %v", src, err)
	}
	src, err = Find(mod, withSection)
	if err != nil || src.Origin != FromModule || src.Name != mod+"#cel.intent" || !strings.Contains(string(src.Content), "keep warm 3") {
		t.Fatalf("section: %+v, %v", src, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello.intent"), []byte("cell hello\nkeep warm 4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err = Find(mod, withSection)
	if err != nil || src.Origin != FromFile || !strings.Contains(string(src.Content), "keep warm 4") {
		t.Fatalf("file beats section: %+v, %v", src, err)
	}
}

func FuzzSection(f *testing.F) {
	f.Add(tiny)
	out, _ := Embed(tiny, []byte("cell x\n"))
	f.Add(out)
	f.Fuzz(func(t *testing.T, b []byte) {
		sec, err := Section(b, SectionName)
		if err != nil {
			return
		}
		out, err := Embed(b, []byte("cell y\n"))
		if err != nil {
			t.Fatalf("Section accepted what Embed rejects: %v", err)
		}
		if got, err := Section(out, SectionName); err != nil || string(got) != "cell y\n" {
			t.Fatalf("after Embed: %q, %v (before: %q)", got, err, sec)
		}
	})
}
