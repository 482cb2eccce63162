package wasm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// CommandRequest is one CGI-style run of a command module.
type CommandRequest struct {
	InstanceConfig
	// Env is the environment as KEY=VALUE strings.
	Env []string
	// Stdin is the request body.
	Stdin io.Reader
	// Stdout receives the CGI response.
	Stdout io.Writer
	// Timeout bounds the run; zero means no limit.
	Timeout time.Duration
}

// RunCommand runs the module's _start in a fresh instance and closes it.
// A guest exit with code 0 is success.
func (m *Module) RunCommand(ctx context.Context, req CommandRequest) error {
	if m.ABI != ABICommand {
		return fmt.Errorf("module %s is a %s, not a command", m.SHA256[:12], m.ABI)
	}
	gctx := req.guestContext(m.engine.log)
	g := guestFrom(gctx)
	cfg := baseModuleConfig().
		WithArgs(req.Cell).
		WithStdin(req.Stdin).
		WithStdout(req.Stdout).
		WithStderr(newLogWriter(g.log, req.Cell, "stderr"))
	for _, kv := range req.Env {
		k, v, _ := strings.Cut(kv, "=")
		cfg = cfg.WithEnv(k, v)
	}
	mod, err := m.instantiateFrom(gctx, cfg, nil)
	if err != nil {
		return err
	}
	defer mod.Close(context.Background())
	start := mod.ExportedFunction("_start")
	if start == nil {
		return errors.New("instantiated module lacks _start")
	}
	in, err := m.interrupter(mod)
	if err != nil {
		return err
	}
	var stack [1]uint64
	return in.run(ctx, gctx, req.Timeout, func(cctx context.Context) error {
		err := start.CallWithStack(cctx, stack[:])
		if err == nil {
			return nil
		}
		var te *TrapError
		if errors.As(trapError("_start", err), &te) && te.ExitCode == 0 {
			return nil
		}
		return trapError("_start", err)
	})
}
