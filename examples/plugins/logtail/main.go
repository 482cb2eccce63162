// Command logtail is a third-party Celluster telemetry plugin, built only
// against the Celluster SDK in its own module: it follows a log file (like
// tail -F, surviving truncation and rotation) and turns the lines matching a
// regular expression into a signal, so a cell's intent can react to what an
// application logs.
//
// Settings (celcore --plugin-setting logtail.KEY=VALUE):
//
//	file     the log file to follow (required)
//	pattern  a Go regular expression; matching lines count (default "error")
//	signal   the counter's name (default "logtail.matches")
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/celluster/celluster/sdk/plugin"
)

// version is the plugin's version, set with -ldflags "-X main.version=...".
var version = "0.1.0"

func main() {
	plugin.Serve(plugin.Info{
		Name:         "logtail",
		Version:      version,
		Description:  "follows a log file and counts lines matching a pattern",
		Capabilities: []string{"follow-file"},
	}, &Source{})
}

// Source implements plugin.TelemetrySource and plugin.Configurer.
type Source struct {
	cfg    settings
	tailer *tailer
}

// Configure implements plugin.Configurer.
func (s *Source) Configure(_ context.Context, cfg plugin.Config, _ plugin.Host) error {
	st, err := parseSettings(cfg.Settings)
	if err != nil {
		return fmt.Errorf("logtail: %w", err)
	}
	s.cfg = st
	s.tailer = newTailer(st.file, st.pattern)
	return nil
}

// Signals implements plugin.TelemetrySource.
func (s *Source) Signals(context.Context) ([]plugin.Signal, error) {
	name := s.cfg.signal
	if name == "" {
		name = defaultSignal
	}
	return []plugin.Signal{
		{Name: name, Unit: "1", Kind: plugin.Counter, Help: "lines matching the pattern since the plugin started", Labels: []string{"file"}},
		{Name: "logtail.lines", Unit: "1", Kind: plugin.Counter, Help: "lines read since the plugin started", Labels: []string{"file"}},
	}, nil
}

// Stream implements plugin.TelemetrySource.
func (s *Source) Stream(ctx context.Context, interval time.Duration, send func([]plugin.Sample) error) error {
	if s.tailer == nil {
		return fmt.Errorf("logtail: not configured: set --plugin-setting logtail.file=PATH")
	}
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	labels := map[string]string{"file": s.cfg.file}
	for {
		if err := s.tailer.poll(); err != nil {
			return err
		}
		now := time.Now()
		batch := []plugin.Sample{
			{Signal: s.cfg.signal, Value: float64(s.tailer.matches), Time: now, Labels: labels},
			{Signal: "logtail.lines", Value: float64(s.tailer.lines), Time: now, Labels: labels},
		}
		if err := send(batch); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
