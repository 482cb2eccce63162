package wasm

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/celluster/celluster/pluginapi/cellabi"
)

// ABI is the calling convention a module follows.
type ABI int

const (
	// ABIReactor modules export memory, cel_alloc and cel_handle; one
	// instance serves many requests.
	ABIReactor ABI = iota + 1
	// ABICommand modules are WASI programs exporting _start, run once per
	// request CGI-style.
	ABICommand
)

func (a ABI) String() string {
	switch a {
	case ABIReactor:
		return "reactor"
	case ABICommand:
		return "command"
	}
	return "unknown"
}

// Module is a compiled cell module, shared by every cell version with the
// same content and memory limit.
type Module struct {
	// SHA256 is the hex sha256 of the module's original bytes: its identity.
	SHA256 string
	// ABI is how the module is called.
	ABI ABI
	// ABIMinor is the minor version of the reactor ABI the module reads:
	// 1 when it exports cellabi.Minor1Export (its requests then carry the
	// v1.1 metadata), else 0.
	ABIMinor int
	// Size is the length of the original module in bytes.
	Size int
	// CompileTime is how long instrumenting and compiling took (a disk
	// cache hit is much shorter than a cold compile).
	CompileTime time.Duration
	// CacheError, when not empty, says why the compiled code could not be
	// written to the disk cache: the module serves, but a restart compiles
	// it again.
	CacheError string

	// NoSnapshot, when not empty, says why replicas of this reactor start
	// by instantiating the module and running _initialize rather than from
	// a pre-initialised snapshot.
	NoSnapshot string

	engine      *Engine
	data        *image   // the module's data laid out in memory, when taken out of it
	globals     []string // export names of the mutable globals a snapshot holds
	baseOnce    sync.Once
	baseBytes   []byte   // data's contents, the base snapshots are encoded against
	baseSum     [32]byte // their sha256
	snapMu      sync.Mutex
	inits       map[string]*Snapshot // pre-initialised snapshots by argv[0]
	rt          wazero.Runtime       // the runtime it was compiled in
	key         moduleKey
	compiled    wazero.CompiledModule
	releaseOnce sync.Once
}

// Release drops the caller's reference taken by Engine.Compile.
func (m *Module) Release() {
	m.releaseOnce.Do(func() {
		m.engine.mu.Lock()
		ent := m.engine.modules[m.key]
		m.engine.mu.Unlock()
		if ent != nil {
			m.engine.release(m.key, ent)
		}
	})
}

// hostImports lists the functions of the `cel` module a guest may import.
var hostImports = map[string]bool{"log": true, "now": true, "call": true, "call_result": true, "signal": true}

var (
	sigAlloc  = "(i32) -> (i32)"
	sigHandle = "(i32, i32) -> (i64)"
	sigVoid   = "() -> ()"
)

// classify tells the ABI from the exports and checks every import is one
// this node provides, so a bad module fails at load with a precise reason
// instead of at first request.
func classify(cm wazero.CompiledModule) (ABI, error) {
	var missing []string
	for _, imp := range cm.ImportedFunctions() {
		mod, name, _ := imp.Import()
		switch mod {
		case "wasi_snapshot_preview1":
		case "cel":
			if !hostImports[name] {
				missing = append(missing, "cel."+name)
			}
		default:
			missing = append(missing, mod+"."+name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return 0, fmt.Errorf("module imports %s, which this node does not provide", strings.Join(missing, ", "))
	}
	if len(cm.ImportedMemories()) > 0 {
		return 0, fmt.Errorf("module imports a memory; cells must define their own")
	}
	exports := cm.ExportedFunctions()
	alloc, hasAlloc := exports["cel_alloc"]
	handle, hasHandle := exports["cel_handle"]
	if hasAlloc || hasHandle {
		if !hasAlloc || !hasHandle {
			return 0, fmt.Errorf("reactor ABI needs both cel_alloc and cel_handle exports; module has only one")
		}
		if _, ok := cm.ExportedMemories()["memory"]; !ok {
			return 0, fmt.Errorf("reactor ABI needs an exported memory named \"memory\"")
		}
		if got := signature(alloc); got != sigAlloc {
			return 0, fmt.Errorf("export cel_alloc has signature %s, want %s", got, sigAlloc)
		}
		if got := signature(handle); got != sigHandle {
			return 0, fmt.Errorf("export cel_handle has signature %s, want %s", got, sigHandle)
		}
		if init, ok := exports["_initialize"]; ok && signature(init) != sigVoid {
			return 0, fmt.Errorf("export _initialize has signature %s, want %s", signature(init), sigVoid)
		}
		return ABIReactor, nil
	}
	if start, ok := exports["_start"]; ok {
		if got := signature(start); got != sigVoid {
			return 0, fmt.Errorf("export _start has signature %s, want %s", got, sigVoid)
		}
		return ABICommand, nil
	}
	return 0, fmt.Errorf("module exports neither cel_alloc/cel_handle (reactor ABI) nor _start (command ABI)")
}

// abiMinor returns the minor version of the reactor ABI a module declares
// (see cellabi.Minor1Export).
func abiMinor(cm wazero.CompiledModule, abi ABI) int {
	if abi != ABIReactor {
		return 0
	}
	if _, ok := cm.ExportedFunctions()[cellabi.Minor1Export]; ok {
		return 1
	}
	return 0
}

func signature(f api.FunctionDefinition) string {
	names := func(ts []api.ValueType) string {
		s := make([]string, len(ts))
		for i, t := range ts {
			s[i] = api.ValueTypeName(t)
		}
		return strings.Join(s, ", ")
	}
	return "(" + names(f.ParamTypes()) + ") -> (" + names(f.ResultTypes()) + ")"
}

// instantiate creates an anonymous instance without running any start
// function; callers run _initialize or _start themselves under a time limit.
func (m *Module) instantiate(ctx context.Context, cfg wazero.ModuleConfig) (api.Module, error) {
	mod, err := m.rt.InstantiateModule(ctx, m.compiled, cfg.WithName("").WithStartFunctions())
	if err != nil {
		return nil, fmt.Errorf("instantiating module %s: %w", m.SHA256[:12], err)
	}
	return mod, nil
}
