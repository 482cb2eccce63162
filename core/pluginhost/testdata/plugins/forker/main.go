// Command forker is a test verb plugin that forks a child process every time
// it runs (served or described) and leaves it running: the child writes
// child.<mode>.<pid> into $TPLUG_MARKER_DIR and sleeps until killed. The
// plugin goes on only once the child's marker exists.
package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/celluster/celluster/core/pluginhost/testdata/plugins/tplug"
)

func main() {
	dir := os.Getenv("TPLUG_MARKER_DIR")
	if mode := os.Getenv("FORKER_CHILD"); mode != "" {
		_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("child.%s.%d", mode, os.Getpid())), nil, 0o644)
		os.Stdout.Close() // tells the parent the marker exists
		select {}
	}
	mode := "serve"
	if len(os.Args) > 1 && os.Args[len(os.Args)-1] == "describe" {
		mode = "describe"
	}
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), "FORKER_CHILD="+mode)
	ready, err := child.StdoutPipe()
	if err == nil {
		err = child.Start()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "forking:", err)
		os.Exit(1)
	}
	_, _ = io.Copy(io.Discard, ready)
	tplug.Main(&tplug.Plugin{
		Info: tplug.Info(tplug.KindVerb, "forker"),
		Verb: &tplug.Verber{Names: []string{"fork"}},
	})
}
