// Package intents finds the intent that describes a cell: the file
// <name>.intent beside <name>.wasm, else a custom section named cel.intent
// inside the module, else the node's defaults. It also writes that custom
// section (Embed), for tools that ship one file.
package intents

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/celluster/celluster/core/cellwatch"
)

// Ext is the extension of intent files.
const Ext = ".intent"

// SectionName is the custom section that carries an embedded intent.
const SectionName = "cel.intent"

// MaxSize bounds an intent, in a file or a module.
const MaxSize = 1 << 20

// Origin says where an intent came from.
type Origin string

// Origins, in the order they are looked for.
const (
	FromFile    Origin = "file"
	FromModule  Origin = "module"
	FromDefault Origin = "default"
)

// Source is the intent text for one cell and where it came from.
type Source struct {
	Origin Origin
	// Name is what diagnostics call it: the file path, "<module>#cel.intent",
	// or "defaults".
	Name    string
	Content []byte
}

// Default is the intent a cell gets when it brings none; %s is the cell's
// name. It is documented in the README.
const Default = `# The defaults: a cell that states no intent.
cell %s
keep replicas 1..8
keep warm 1
# Queueing requests mean too few replicas: add one.
when queue > 0 for 1s then clone cooldown 2s
# Replicas mostly idle for 30s: give one back (never below 1).
when cpu < 20%% for 30s then decay cooldown 30s
`

// Find returns the intent for the cell whose module is at modulePath with
// bytes module: the .intent file beside it, else its cel.intent section,
// else the defaults.
func Find(modulePath string, module []byte) (Source, error) {
	cell := strings.TrimSuffix(filepath.Base(modulePath), filepath.Ext(modulePath))
	path := strings.TrimSuffix(modulePath, filepath.Ext(modulePath)) + Ext
	b, err := readFile(path)
	switch {
	case err == nil:
		return Source{Origin: FromFile, Name: path, Content: b}, nil
	case !errors.Is(err, os.ErrNotExist):
		return Source{}, err
	}
	sec, err := Section(module, SectionName)
	if err != nil {
		return Source{}, fmt.Errorf("%s: reading custom section %s: %w", modulePath, SectionName, err)
	}
	if sec != nil {
		if len(sec) > MaxSize {
			return Source{}, fmt.Errorf("%s: custom section %s is larger than %d bytes", modulePath, SectionName, MaxSize)
		}
		return Source{Origin: FromModule, Name: modulePath + "#" + SectionName, Content: sec}, nil
	}
	return Source{Origin: FromDefault, Name: "defaults", Content: []byte(fmt.Sprintf(Default, cell))}, nil
}

func readFile(path string) ([]byte, error) {
	b, err := cellwatch.ReadFile(path, MaxSize)
	if errors.Is(err, cellwatch.ErrTooLarge) {
		return nil, fmt.Errorf("intent too large: %w", err)
	}
	return b, err
}

var magic = []byte{0x00, 0x61, 0x73, 0x6d}

// Section returns the payload of the first custom section called name in a
// wasm binary, or nil when there is none. Every section's framing is
// checked, not only the sections before the one found.
func Section(module []byte, name string) ([]byte, error) {
	var found []byte
	if len(module) < 8 || !bytes.Equal(module[:4], magic) {
		return nil, errors.New("not a wasm binary (bad magic)")
	}
	b := module[8:]
	off := 8
	for len(b) > 0 {
		id := b[0]
		size, n := binary.Uvarint(b[1:])
		if n <= 0 || size > uint64(len(b)-1-n) {
			return nil, fmt.Errorf("section at offset %d: truncated or bad size", off)
		}
		body := b[1+n : 1+n+int(size)]
		if id == 0 {
			nl, m := binary.Uvarint(body)
			if m <= 0 || nl > uint64(len(body)-m) {
				return nil, fmt.Errorf("custom section at offset %d: bad name length", off)
			}
			if found == nil && string(body[m:m+int(nl)]) == name {
				found = body[m+int(nl):]
			}
		}
		adv := 1 + n + int(size)
		b = b[adv:]
		off += adv
	}
	return found, nil
}

// Embed returns module with intent as its cel.intent custom section,
// replacing any it had. The module is otherwise unchanged.
func Embed(module, intent []byte) ([]byte, error) {
	if len(intent) > MaxSize {
		return nil, fmt.Errorf("intent larger than %d bytes", MaxSize)
	}
	if _, err := Section(module, SectionName); err != nil {
		return nil, err
	}
	out := append([]byte(nil), module[:8]...)
	b := module[8:]
	for len(b) > 0 {
		size, n := binary.Uvarint(b[1:])
		adv := 1 + n + int(size)
		if b[0] == 0 {
			body := b[1+n : adv]
			nl, m := binary.Uvarint(body)
			if string(body[m:m+int(nl)]) == SectionName {
				b = b[adv:]
				continue
			}
		}
		out = append(out, b[:adv]...)
		b = b[adv:]
	}
	var payload []byte
	payload = binary.AppendUvarint(payload, uint64(len(SectionName)))
	payload = append(payload, SectionName...)
	payload = append(payload, intent...)
	out = append(out, 0)
	out = binary.AppendUvarint(out, uint64(len(payload)))
	return append(out, payload...), nil
}
