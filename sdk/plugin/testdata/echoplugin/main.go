// Command echoplugin is the smallest verb plugin, built and run by the
// SDK's tests: its verb "echo" answers with its arguments (after the
// "prefix" setting) and notes them in the journal through the host.
package main

import (
	"context"
	"strings"

	"github.com/celluster/celluster/sdk/plugin"
)

var log = plugin.NewLogger(nil)

type echo struct{ prefix string }

func (e *echo) Configure(ctx context.Context, cfg plugin.Config, host plugin.Host) error {
	e.prefix = cfg.Settings["prefix"]
	log.Info("configured", "node", cfg.Node, "prefix", e.prefix)
	return nil
}

func (e *echo) Verbs() []string { return []string{"echo"} }

func (e *echo) Execute(ctx context.Context, host plugin.Host, req plugin.VerbRequest) (plugin.VerbResult, error) {
	msg := e.prefix + strings.Join(req.Args, " ")
	if err := host.AddJournalNote(ctx, req.Cell, msg); err != nil {
		return plugin.VerbResult{Outcome: plugin.Failed, Message: err.Error()}, nil
	}
	return plugin.VerbResult{Outcome: plugin.Done, Message: msg}, nil
}

func main() {
	plugin.Serve(plugin.Info{
		Name:         "echo",
		Version:      "0.1.0",
		Description:  "echoes its arguments",
		Capabilities: []string{"verb:echo"},
	}, &echo{})
}
