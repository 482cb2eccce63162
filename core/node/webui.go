package node

import (
	"context"
	"net"

	"github.com/celluster/celluster/core/webui"
)

// serveUI serves the web view of the node on addr until ctx ends.
func (n *Node) serveUI(ctx context.Context, addr string) (net.Addr, <-chan error, error) {
	l, err := webui.Listen(addr, n.cfg.UIPublic)
	if err != nil {
		return nil, nil, err
	}
	ui := webui.New(n, webui.Config{Name: n.cfg.Name, Interval: n.cfg.TelemetryInterval, Logger: n.log})
	errc := make(chan error, 1)
	go func() { errc <- ui.Serve(ctx, l) }()
	return l.Addr(), errc, nil
}

// JournalSeq implements webui.JournalSeq: the view reads the journal only
// when it has grown.
func (n *Node) JournalSeq() uint64 { return n.journal.LastSeq() }

var (
	_ webui.Node       = (*Node)(nil)
	_ webui.JournalSeq = (*Node)(nil)
)
