package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/celluster/celluster/core/admin"
	"github.com/celluster/celluster/core/hostapi"
	"github.com/celluster/celluster/core/pluginhost"
	"github.com/celluster/celluster/core/signals"
	pb "github.com/celluster/celluster/pluginapi/v1"
)

// startPlugins launches the built-in and third-party plugins in the
// background; cells serve whether or not any plugin runs. Telemetry batches
// land in the signal store.
func (n *Node) startPlugins(ctx context.Context) error {
	started := false
	defer func() {
		if !started {
			close(n.pluginsReady)
		}
	}()
	var builtins []pluginhost.Spec
	if len(n.cfg.Builtins) > 0 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("plugins: locating celcore for built-in plugins: %w", err)
		}
		for _, name := range n.cfg.Builtins {
			builtins = append(builtins, pluginhost.Spec{Name: name, Path: exe, Args: []string{"plugin", name}, Builtin: true})
		}
	}
	// The data directory names this node's plugin processes across
	// restarts: what a node killed outright left behind is killed at start.
	owner, err := filepath.Abs(n.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("plugins: %w", err)
	}
	n.plugins = pluginhost.New(pluginhost.Config{
		Owner:    owner,
		Dir:      n.cfg.PluginsDir,
		Builtins: builtins,
		Pins:     n.cfg.PluginPins,
		Settings: n.cfg.PluginSettings,
		HostFor: func(plugin string) pluginhost.HostService {
			return hostapi.New(plugin, n.reg, n.sig, n, n.bpfHost(), n.placer(), n.log)
		},
		Node:   n.cfg.Name,
		Logger: n.log,
	})
	n.plugins.Subscribe(n.onSamples)
	started = true
	go func() {
		defer close(n.pluginsReady)
		if err := n.plugins.Start(ctx); err != nil {
			n.log.Error("plugins did not start", "err", err)
			return
		}
		for _, st := range n.plugins.Status() {
			n.log.Info("plugin", "plugin", st.Name, "kind", st.Kind, "state", st.State, "error", st.LastError)
		}
	}()
	return nil
}

// onSamples stores a telemetry batch from a plugin.
func (n *Node) onSamples(plugin string, batch *pb.SampleBatch) {
	n.sig.Put(hostapi.Readings(plugin, batch.GetSamples())...)
}

// Plugins implements admin.Node.
func (n *Node) Plugins() []admin.PluginStatus {
	if n.plugins == nil {
		return nil
	}
	sts := n.plugins.Status()
	out := make([]admin.PluginStatus, 0, len(sts))
	for _, st := range sts {
		out = append(out, admin.PluginStatus{
			Name: st.Name, Kind: st.Kind, Version: st.Version, State: string(st.State),
			LastError: st.LastError, Path: st.Path, SHA256: st.SHA256, API: st.API,
			PID: st.PID, Restarts: st.Restarts, Builtin: st.Builtin,
			Verbs: st.Verbs, Signals: st.Signals, Extensions: st.Extensions,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// SignalDesc implements admin.Node: what a signal is, from the plugin that
// offers it.
func (n *Node) SignalDesc(name string) (signals.Desc, bool) {
	if d, ok := n.sig.Desc(name); ok {
		return d, true
	}
	if n.plugins == nil {
		return signals.Desc{}, false
	}
	for plugin, descs := range n.plugins.Signals() {
		for _, d := range descs {
			if d.GetName() == name {
				desc := signals.Desc{Name: name, Unit: d.GetUnit(), Kind: d.GetKind().String(), Help: d.GetHelp(), Source: plugin}
				n.sig.Describe(desc)
				return desc, true
			}
		}
	}
	return signals.Desc{}, false
}
