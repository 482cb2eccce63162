package cell

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/celluster/celluster/core/wasm"
)

// Requirement is what a cell's intent pins about its module. A module that
// does not meet it is refused when loaded or staged: the serving version,
// if any, keeps serving and the error shows in Info.
type Requirement struct {
	// SHA256 is the hex sha256 the module must have ("" any).
	SHA256 string
	// SHA256At says where the pin was stated, e.g. "hello.intent:2".
	SHA256At string
	// ABI is "reactor" or "command" ("" any).
	ABI string
	// ABIAt says where the ABI was stated.
	ABIAt string
}

// Require sets what modules loaded from now on must meet.
func (c *Cell) Require(r Requirement) { c.req.Store(&r) }

// checkSource refuses src when it does not have the pinned hash.
func (c *Cell) checkSource(src []byte, source string) error {
	r := c.req.Load()
	if r == nil || r.SHA256 == "" {
		return nil
	}
	sum := sha256.Sum256(src)
	if got := hex.EncodeToString(sum[:]); got != r.SHA256 {
		return fmt.Errorf("%s: sha256 %s does not match the pin %s in %s; module refused", source, got, r.SHA256, r.SHA256At)
	}
	return nil
}

// checkABI refuses a compiled module of another ABI than the one required.
func (c *Cell) checkABI(mod *wasm.Module, source string) error {
	r := c.req.Load()
	if r == nil || r.ABI == "" || mod.ABI.String() == r.ABI {
		return nil
	}
	return fmt.Errorf("%s: a %s module, but %s says abi %s; module refused", source, mod.ABI, r.ABIAt, r.ABI)
}

// Check reports whether src, the cell's module file, meets the cell's
// requirement as far as it can be told without compiling: its hash, and
// the ABI of the version with that hash if it is routed. A module that is
// not routed has its ABI checked when it is loaded or staged.
func (c *Cell) Check(src []byte, source string) error {
	if err := c.checkSource(src, source); err != nil {
		return err
	}
	sum := sha256.Sum256(src)
	sha := hex.EncodeToString(sum[:])
	if t := c.table.Load(); t != nil {
		for _, r := range t.routes {
			if r.v.mod.SHA256 == sha {
				return c.checkABI(r.v.mod, source)
			}
		}
	}
	return nil
}
