// Command holdplug is a third-party verb plugin for the celcore tests,
// written against sdk/plugin. When configured with a "dir" setting it forks a
// child that writes child.<pid> there and sleeps until killed (a plugin
// that leaves processes behind). Its verb "hold" notes "holding" in the
// cell's journal and then waits until the call is canceled; its verb
// "ping" answers at once.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/celluster/celluster/sdk/plugin"
)

const childEnv = "HOLDPLUG_CHILD_DIR"

type holder struct{}

// Configure forks the child once its marker directory is known, and
// returns once the child's marker exists.
func (holder) Configure(_ context.Context, cfg plugin.Config, _ plugin.Host) error {
	dir := cfg.Settings["dir"]
	if dir == "" {
		return nil
	}
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), childEnv+"="+dir)
	ready, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return fmt.Errorf("forking: %w", err)
	}
	_, _ = io.Copy(io.Discard, ready) // EOF once the marker is written
	return nil
}

func (holder) Verbs() []string { return []string{"hold", "ping"} }

func (holder) Execute(ctx context.Context, host plugin.Host, req plugin.VerbRequest) (plugin.VerbResult, error) {
	if req.Verb == "ping" {
		return plugin.VerbResult{Outcome: plugin.Done, Message: "pong"}, nil
	}
	if err := host.AddJournalNote(ctx, req.Cell, "holding"); err != nil {
		return plugin.VerbResult{}, err
	}
	<-ctx.Done()
	return plugin.VerbResult{}, ctx.Err()
}

func main() {
	if dir := os.Getenv(childEnv); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("child.%d", os.Getpid())), nil, 0o644)
		os.Stdout.Close()
		select {}
	}
	plugin.Serve(plugin.Info{Name: "holdplug", Version: "0.0.1", Description: "holds verbs; forks a child"}, holder{})
}
