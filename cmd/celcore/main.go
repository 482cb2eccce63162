// Command celcore is the Celluster node daemon: it serves the WebAssembly
// cells dropped into a watched directory.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/node"
	"github.com/celluster/celluster/core/pluginhost"
	"github.com/celluster/celluster/plugins"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "celcore:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	var (
		cfg       node.Config
		logLevel  string
		logFormat string
		memory    string
		settings  []string
		pins      []string
		body      string
	)
	d := cell.DefaultLimits()
	cmd := &cobra.Command{
		Use:   "celcore",
		Short: "Celluster node daemon: serves WebAssembly cells from a watched directory",
		Long: `celcore serves every <name>.wasm in the cells directory at http://<http>/<name>.
Drop, replace (upgrade) or remove files there; the node compiles, warms, limits and serves them.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel, logFormat)
			if err != nil {
				return err
			}
			mem, err := parseSize(memory)
			if err != nil {
				return fmt.Errorf("--limit-memory: %w", err)
			}
			cfg.Limits.Memory = mem
			maxBody, err := parseSize(body)
			if err != nil || maxBody == 0 || maxBody > 1<<32-1 {
				return fmt.Errorf("--limit-body %q: want a size from 1 byte to 4GiB-1 (e.g. 8MiB)", body)
			}
			cfg.Limits.MaxBody = int64(maxBody)
			if cfg.PluginSettings, err = parseSettings(settings); err != nil {
				return err
			}
			if cfg.PluginPins, err = parsePins(pins); err != nil {
				return err
			}
			if cfg.Builtins, err = parseBuiltins(cfg.Builtins); err != nil {
				return err
			}
			for _, b := range cfg.Builtins {
				if !slices.Contains(plugins.Names(), b) {
					return fmt.Errorf("--builtin-plugins: no built-in plugin named %q (have %s)", b, strings.Join(plugins.Names(), ", "))
				}
			}
			cfg.Logger = log
			cfg.Version = version
			ctx, stop := stopOnSignal(cmd.Context(), log)
			defer stop()
			return node.Run(ctx, cfg, nil)
		},
	}
	cmd.AddCommand(pluginCmd())
	f := cmd.Flags()
	f.StringVar(&cfg.CellsDir, "cells", "./cells", "watched directory of cell modules (<name>.wasm); created if missing")
	f.StringVar(&cfg.DataDir, "data", "./.celluster", "data directory: compile cache, decision journal, admin socket")
	f.StringVar(&cfg.HTTPAddr, "http", "127.0.0.1:8080", "HTTP ingress listen address (HTTP/1.1 and h2c)")
	f.StringVar(&cfg.HTTPSAddr, "https", "", "HTTPS ingress address: HTTP/1.1 and HTTP/2 over TLS on TCP, HTTP/3 on UDP of the same port (advertised with Alt-Svc); needs --tls-cert and --tls-key; off when empty")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "the HTTPS ingress's certificate chain (PEM); loaded again when it changes")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "the HTTPS ingress's private key (PEM); loaded again when it changes")
	f.DurationVar(&cfg.Ingress.ReadHeaderTimeout, "http-header-timeout", 10*time.Second, "longest a client may take to send a request's header")
	f.DurationVar(&cfg.Ingress.ReadTimeout, "http-read-timeout", time.Minute, "longest a client may take to send a whole request, body included")
	f.DurationVar(&cfg.Ingress.IdleTimeout, "http-idle-timeout", 2*time.Minute, "how long an idle keep-alive connection is kept")
	f.IntVar(&cfg.Ingress.MaxStreams, "http-max-streams", 250, "requests one HTTP/2 or HTTP/3 connection may carry at once")
	f.IntVar(&cfg.Ingress.MaxConns, "http-max-conns", 10000, "TCP connections each ingress listener holds open; more wait to be accepted")
	f.StringVar(&cfg.FabricAddr, "fabric", "", "join the QUIC fabric on this UDP address (e.g. 127.0.0.1:7946); off when empty")
	f.StringSliceVar(&cfg.Join, "join", nil, "fabric addresses of nodes to join (ADDR[,ADDR])")
	f.StringVar(&cfg.TrustDomain, "trust-domain", "celluster.local", "the SPIFFE trust domain of the fabric")
	f.StringVar(&cfg.CADir, "ca", "", "the trust domain's CA directory (ca.crt, and ca.key to issue this node's certificates; default <data>/ca, created on first start)")
	f.DurationVar(&cfg.CertTTL, "cert-ttl", time.Hour, "lifetime of the node certificates this node issues (renewed at two thirds of it)")
	f.StringVar(&cfg.Token, "token", "", "a join token (celctl ca token NODE): get this node's certificate from the --join node, which holds the CA")
	f.BoolVar(&cfg.NoPrefetch, "no-prefetch", false, "do not keep and compile peers' modules ahead of need (a clone or take-over then fetches them)")
	f.StringVar(&cfg.CertFile, "cert", "", "this node's certificate chain (PEM), instead of issuing one from the CA key")
	f.StringVar(&cfg.KeyFile, "key", "", "this node's private key (PEM, with --cert)")
	f.StringVar(&cfg.MetricsAddr, "metrics", "", "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9090); off when empty")
	f.StringVar(&cfg.OTLPEndpoint, "otlp", "", "export OpenTelemetry traces over OTLP to ENDPOINT: grpc://HOST:4317 (or HOST:PORT) or http://HOST:4318; off when empty")
	f.Float64Var(&cfg.TraceSample, "trace-sample", 1, "share of new traces sampled with --otlp, 0 to 1 (a request that arrives sampled stays sampled)")
	f.StringVar(&cfg.UIAddr, "ui", "", "serve a live, read-only web view of this node at http://ADDR/ (e.g. 127.0.0.1:8090); off when empty; a loopback address unless --ui-public")
	f.BoolVar(&cfg.UIPublic, "ui-public", false, "let --ui listen on an address other hosts can reach (they would see the cells, intents and journal)")
	f.StringVar(&cfg.AdminPath, "admin", "", "admin API unix socket (default <data>/admin.sock)")
	f.StringVar(&cfg.Name, "node", "", "this node's name (default: the host name)")
	f.StringVar(&cfg.PluginsDir, "plugins", "", "directory of third-party plugin executables (default <data>/plugins)")
	f.StringSliceVar(&cfg.Builtins, "builtin-plugins", plugins.Names(), "first-party plugins to run (re-executing celcore); empty for none")
	f.StringArrayVar(&settings, "plugin-setting", nil, "a plugin setting NAME.KEY=VALUE (repeatable)")
	f.StringArrayVar(&pins, "plugin-sha256", nil, "pin a plugin binary: FILE=HEX sha256, FILE its name in the plugin directory (or a built-in's name); checked before it ever runs, a mismatch refuses it; with any pin given, unpinned plugin files are refused (repeatable)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.DurationVar(&cfg.Settle, "settle", 200*time.Millisecond, "how long a cell file must be left alone before it is loaded")
	f.DurationVar(&cfg.TelemetryInterval, "telemetry-interval", time.Second, "how often each cell's signals (latency.p99, rps, errors.rate, ...) are published")
	f.DurationVar(&cfg.UpgradeStepTime, "upgrade-step-time", 0, "how long an upgrade watches each traffic step of the new version (0: the upgrade verb's default, 1s)")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", 30*time.Second, "how long stopping waits for requests in flight")
	f.DurationVar(&cfg.Limits.RequestTimeout, "limit-time", d.RequestTimeout, "default per-request time limit (504 beyond)")
	f.StringVar(&memory, "limit-memory", "128MiB", "default per-instance memory limit (500 when exceeded)")
	f.StringVar(&body, "limit-body", "8MiB", "default largest request body a cell accepts (413 beyond)")
	f.IntVar(&cfg.Limits.Concurrency, "limit-concurrency", d.Concurrency, "default requests a cell runs at once")
	f.IntVar(&cfg.Limits.QueueLength, "limit-queue", d.QueueLength, "default requests that may wait for a slot (503 beyond); -1 for none")
	f.DurationVar(&cfg.Limits.QueueTimeout, "limit-queue-time", d.QueueTimeout, "default longest wait in the queue (503 beyond)")
	f.IntVar(&cfg.Limits.Warm, "warm", d.Warm, "default reactor instances kept initialised per cell")
	return cmd
}

// stopSignals end the node gracefully: it stops accepting, drains requests
// in flight (--drain-timeout), stops its plugins and exits 0. SIGHUP is one
// of them: it is what a closing terminal or session sends, and the node has
// no configuration file to reload (cells, intents and plugins are picked up
// from their directories as they change).
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

// stopOnSignal returns a context canceled, with a log line naming the
// signal, at the first of stopSignals. A second one exits at once, killing
// the plugins, without waiting for the drain.
func stopOnSignal(parent context.Context, log *slog.Logger) (context.Context, func()) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, stopSignals...)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			log.Info("signal received: stopping gracefully (a second signal stops at once)", "signal", s.String())
			cancel()
		case <-done:
			return
		}
		select {
		case s := <-sigs:
			log.Warn("second signal received: exiting without waiting for requests in flight", "signal", s.String())
			pluginhost.CleanupAll()
			os.Exit(1)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel()
	}
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is neither text nor json", format)
}

// parseSize parses sizes like 64MiB, 1GiB, 512KiB, 1048576.
func parseSize(s string) (uint64, error) {
	units := []struct {
		suffix string
		mul    uint64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			var n uint64
			if _, err := fmt.Sscanf(num, "%d", &n); err != nil || fmt.Sprint(n) != num {
				return 0, fmt.Errorf("bad size %q: want a whole number with KiB, MiB or GiB", s)
			}
			return n * u.mul, nil
		}
	}
	var n uint64
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || fmt.Sprint(n) != s {
		return 0, fmt.Errorf("bad size %q: want a whole number with KiB, MiB or GiB", s)
	}
	return n, nil
}

// pluginCmd runs a first-party plugin: the node re-executes its own binary
// as `celcore plugin NAME` so built-ins get process isolation too.
func pluginCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "plugin NAME [describe]",
		Short: "Serve a built-in plugin (started by the node, not by hand); 'describe' prints what it offers",
		Long:  "Built-in plugins: " + strings.Join(plugins.Names(), ", "),
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(_ *cobra.Command, args []string) error {
			// The SDK reads its own arguments (describe) from os.Args[1:].
			os.Args = append([]string{os.Args[0]}, args[1:]...)
			return plugins.Serve(args[0])
		},
	}
}

// parseBuiltins trims the --builtin-plugins names and drops empty ones, so
// that an empty value, a blank and a lone comma all mean none and
// "host, verbs" means two; a name given twice is an error.
func parseBuiltins(names []string) ([]string, error) {
	out := []string{}
	for _, b := range names {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		if slices.Contains(out, b) {
			return nil, fmt.Errorf("--builtin-plugins: %q given twice", b)
		}
		out = append(out, b)
	}
	return out, nil
}

// parseSettings turns NAME.KEY=VALUE flags into per-plugin settings.
func parseSettings(flags []string) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	for _, f := range flags {
		k, v, ok := strings.Cut(f, "=")
		name, key, ok2 := strings.Cut(k, ".")
		if !ok || !ok2 || name == "" || key == "" {
			return nil, fmt.Errorf("--plugin-setting %q: want NAME.KEY=VALUE", f)
		}
		if out[name] == nil {
			out[name] = map[string]string{}
		}
		out[name][key] = v
	}
	return out, nil
}

// parsePins turns NAME=HEX flags into plugin pins.
func parsePins(flags []string) (map[string]string, error) {
	out := map[string]string{}
	for _, f := range flags {
		name, sum, ok := strings.Cut(f, "=")
		sum = strings.ToLower(sum)
		if !ok || name == "" || len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" {
			return nil, fmt.Errorf("--plugin-sha256 %q: want FILE=<64 hex digits>", f)
		}
		out[name] = sum
	}
	return out, nil
}
