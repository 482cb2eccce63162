package mesh

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDecodeCatalog(t *testing.T) {
	entries := []Entry{{Cell: "hello", SHA256: strings.Repeat("ab", 32), Min: 1}}
	old, _ := json.Marshal(entries)
	doc, err := decodeCatalog(old)
	if err != nil || len(doc.Cells) != 1 || doc.Cells[0].Cell != "hello" || doc.Withdrawn != nil {
		t.Fatalf("a plain list of entries (earlier nodes): %+v, %v", doc, err)
	}
	b, _ := json.Marshal(catalogDoc{Cells: entries, Withdrawn: []Tombstone{{Cell: "gone", At: 1700000000000}}})
	doc, err = decodeCatalog(b)
	if err != nil || len(doc.Cells) != 1 || len(doc.Withdrawn) != 1 || doc.Withdrawn[0] != (Tombstone{Cell: "gone", At: 1700000000000}) {
		t.Fatalf("a catalog with a tombstone: %+v, %v", doc, err)
	}
	if catalogVersion(b) == catalogVersion(old) {
		t.Fatal("a tombstone does not change the catalog's version")
	}
	for _, bad := range []string{
		`{"cells":[],"withdrawn":[{"cell":"../etc","at":1}]}`,
		`{"cells":[],"withdrawn":[{"cell":"","at":1}]}`,
		`{"cells":{}}`,
		`[{"cell":1}]`,
		`{`,
	} {
		if _, err := decodeCatalog([]byte(bad)); err == nil {
			t.Errorf("decodeCatalog(%s) accepted", bad)
		}
	}
}

func FuzzDecodeCatalog(f *testing.F) {
	f.Add([]byte(`[{"cell":"hello","sha256":"ab","min":1}]`))
	f.Add([]byte(`{"cells":[{"cell":"hello","sha256":"ab","min":1,"spread":true}],"withdrawn":[{"cell":"gone","at":1700000000000}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		doc, err := decodeCatalog(b)
		if err != nil {
			return
		}
		for _, w := range doc.Withdrawn {
			if w.Cell == "" || strings.ContainsAny(w.Cell, "/\\") {
				t.Fatalf("accepted a tombstone for %q", w.Cell)
			}
		}
	})
}
