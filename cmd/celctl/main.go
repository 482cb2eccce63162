// Command celctl is the command-line client of a Celluster node's admin API.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/celluster/celluster/core/admin/adminpb"
)

func main() {
	if err := newRootCmd(os.Stdout).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "celctl:", err)
		os.Exit(1)
	}
}

type options struct {
	admin   string
	output  string
	timeout time.Duration
	out     io.Writer
}

func newRootCmd(out io.Writer) *cobra.Command {
	o := &options{out: out}
	root := &cobra.Command{
		Use:           "celctl",
		Short:         "Inspect and control a Celluster node",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&o.admin, "admin", filepath.Join(".celluster", "admin.sock"), "the node's admin socket")
	root.PersistentFlags().StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	root.PersistentFlags().DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for the node")
	root.SetOut(out)
	root.AddCommand(statusCmd(o), cellsCmd(o), pluginsCmd(o), signalsCmd(o),
		journalCmd(o), whyCmd(o), intentCmd(o), verbCmd(o), embedIntentCmd(o), caCmd(o), nodesCmd(o))
	return root
}

func (o *options) call(cmd *cobra.Command, fn func(context.Context, adminpb.AdminClient) error) error {
	if o.output != "table" && o.output != "json" {
		return fmt.Errorf("-o %q: want table or json", o.output)
	}
	if _, err := os.Stat(o.admin); err != nil {
		return fmt.Errorf("no node admin socket at %s (is celcore running? use --admin): %w", o.admin, err)
	}
	abs, err := filepath.Abs(o.admin)
	if err != nil {
		return fmt.Errorf("admin socket path %s: %w", o.admin, err)
	}
	conn, err := grpc.NewClient("unix://"+abs, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", o.admin, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
	defer cancel()
	return fn(ctx, adminpb.NewAdminClient(conn))
}

func (o *options) json(v any) error {
	enc := json.NewEncoder(o.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func statusCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the node's status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, c adminpb.AdminClient) error {
				st, err := c.Status(ctx, &adminpb.StatusRequest{})
				if err != nil {
					return fmt.Errorf("status: %w", err)
				}
				l := st.GetDefaultLimits()
				if o.output == "json" {
					return o.json(map[string]any{
						"version":        st.GetVersion(),
						"started":        st.GetStarted().AsTime(),
						"uptime_s":       time.Since(st.GetStarted().AsTime()).Seconds(),
						"http":           st.GetHttpAddr(),
						"cells_dir":      st.GetCellsDir(),
						"data_dir":       st.GetDataDir(),
						"cells":          st.GetCells(),
						"serving":        st.GetServing(),
						"failed":         st.GetFailed(),
						"compilations":   st.GetCompilations(),
						"go_version":     st.GetGoVersion(),
						"wazero_version": st.GetWazeroVersion(),
						"default_limits": limitsJSON(l),
						"metrics":        st.GetMetricsAddr(),
						"bpf":            bpfJSON(st.GetBpf()),
					})
				}
				tw := tabwriter.NewWriter(o.out, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "version:\t%s (%s, wazero %s)\n", st.GetVersion(), st.GetGoVersion(), st.GetWazeroVersion())
				fmt.Fprintf(tw, "uptime:\t%s\n", time.Since(st.GetStarted().AsTime()).Round(time.Second))
				fmt.Fprintf(tw, "http:\t%s\n", st.GetHttpAddr())
				fmt.Fprintf(tw, "cells dir:\t%s\n", st.GetCellsDir())
				fmt.Fprintf(tw, "data dir:\t%s\n", st.GetDataDir())
				fmt.Fprintf(tw, "cells:\t%d (%d serving, %d failed)\n", st.GetCells(), st.GetServing(), st.GetFailed())
				fmt.Fprintf(tw, "compilations:\t%d\n", st.GetCompilations())
				fmt.Fprintf(tw, "default limits:\ttime %s, memory %s, concurrency %d, queue %d for %s, warm %d\n",
					l.GetRequestTimeout().AsDuration(), size(l.GetMemoryBytes()), l.GetConcurrency(), l.GetQueueLength(),
					l.GetQueueTimeout().AsDuration(), l.GetWarm())
				if m := st.GetMetricsAddr(); m != "" {
					fmt.Fprintf(tw, "metrics:\thttp://%s/metrics\n", m)
				}
				b := st.GetBpf()
				if b.GetAvailable() {
					fmt.Fprintf(tw, "ebpf:\tavailable (pinned under %s); %d programs loaded\n", b.GetPinPath(), len(b.GetPrograms()))
					fmt.Fprintf(tw, "ebpf kernel:\tprogram types %s; map types %s\n", strings.Join(b.GetProgramTypes(), ", "), strings.Join(b.GetMapTypes(), ", "))
					fmt.Fprintf(tw, "ebpf attach points:\t%s\n", strings.Join(b.GetAttachPoints(), ", "))
					for _, p := range b.GetPrograms() {
						fmt.Fprintf(tw, "  %s\t%s %s (id %d)\n", p.GetObject(), p.GetName(), p.GetAttach(), p.GetId())
					}
				} else {
					fmt.Fprintf(tw, "ebpf:\tunavailable: %s (bpf syscall %v, BTF %v); kernel signals are off\n", dash(b.GetError()), b.GetBpfSyscall(), b.GetBtf())
				}
				return tw.Flush()
			})
		},
	}
}

func cellsCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "cells",
		Short: "List the node's cells",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, c adminpb.AdminClient) error {
				resp, err := c.ListCells(ctx, &adminpb.ListCellsRequest{})
				if err != nil {
					return fmt.Errorf("cells: %w", err)
				}
				if o.output == "json" {
					out := make([]map[string]any, 0, len(resp.GetCells()))
					for _, c := range resp.GetCells() {
						m := map[string]any{
							"name":           c.GetName(),
							"sha256":         c.GetSha256(),
							"abi":            c.GetAbi(),
							"state":          c.GetState(),
							"error":          c.GetError(),
							"source":         c.GetSource(),
							"replicas":       c.GetReplicas(),
							"in_flight":      c.GetInFlight(),
							"queued":         c.GetQueued(),
							"requests":       c.GetRequests(),
							"errors":         c.GetErrors(),
							"p50_ms":         c.GetP50Ms(),
							"p99_ms":         c.GetP99Ms(),
							"size_bytes":     c.GetSizeBytes(),
							"upgrades":       c.GetUpgrades(),
							"updated":        c.GetUpdated().AsTime(),
							"limits":         limitsJSON(c.GetLimits()),
							"replica_bounds": map[string]any{"min": c.GetMinReplicas(), "max": c.GetMaxReplicas(), "warm": c.GetWarm()},
							"versions":       versionsJSON(c.GetVersions()),
							"snapshot":       snapshotJSON(c.GetSnapshot()),
						}
						if c.GetLastUsed() != nil {
							m["last_used"] = c.GetLastUsed().AsTime()
						}
						out = append(out, m)
					}
					return o.json(out)
				}
				tw := tabwriter.NewWriter(o.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSTATE\tABI\tSHA256\tREPLICAS\tSTARTS\tKEPT STATE\tREQUESTS\tERRORS\tP50\tP99\tERROR")
				// A cell mid-upgrade lists its versions and weights in the
				// SHA256 column: "3f2a9c01ab12=10,9e8d7c6b5a41=90".
				for _, c := range resp.GetCells() {
					sha := short(c.GetSha256())
					if vs := c.GetVersions(); len(vs) > 1 {
						parts := make([]string, len(vs))
						for i, v := range vs {
							parts[i] = fmt.Sprintf("%s=%d", short(v.GetSha256()), v.GetWeight())
						}
						sha = strings.Join(parts, ",")
					}
					replicas := fmt.Sprintf("%d", c.GetReplicas())
					if c.GetMaxReplicas() > 0 {
						replicas = fmt.Sprintf("%d (%d..%d)", c.GetReplicas(), c.GetMinReplicas(), c.GetMaxReplicas())
					}
					starts, kept, note := snapshotColumns(c.GetAbi(), c.GetSnapshot())
					errs := oneLine(c.GetError())
					if note != "" {
						errs = strings.TrimPrefix(errs+"; "+note, "; ")
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%.2fms\t%.2fms\t%s\n",
						c.GetName(), c.GetState(), dash(c.GetAbi()), dash(sha), replicas, starts, kept, c.GetRequests(),
						c.GetErrors(), c.GetP50Ms(), c.GetP99Ms(), errs)
				}
				return tw.Flush()
			})
		},
	}
}

func pluginsCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "plugins",
		Short: "List the node's plugins and their supervision state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, c adminpb.AdminClient) error {
				resp, err := c.ListPlugins(ctx, &adminpb.ListPluginsRequest{})
				if err != nil {
					return fmt.Errorf("plugins: %w", err)
				}
				if o.output == "json" {
					out := make([]map[string]any, 0, len(resp.GetPlugins()))
					for _, p := range resp.GetPlugins() {
						out = append(out, map[string]any{
							"name": p.GetName(), "kind": p.GetKind(), "version": p.GetVersion(),
							"api": p.GetApi(), "state": p.GetState(), "pid": p.GetPid(),
							"restarts": p.GetRestarts(), "last_error": p.GetLastError(),
							"path": p.GetPath(), "sha256": p.GetSha256(), "builtin": p.GetBuiltin(),
							"verbs": nonNil(p.GetVerbs()), "signals": nonNil(p.GetSignals()),
							"extensions": nonNil(p.GetExtensions()),
						})
					}
					return o.json(out)
				}
				tw := tabwriter.NewWriter(o.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tKIND\tVERSION\tAPI\tSTATE\tPID\tRESTARTS\tOFFERS\tLAST ERROR")
				for _, p := range resp.GetPlugins() {
					offers := strings.Join(append(append(append([]string{}, p.GetVerbs()...), p.GetSignals()...), p.GetExtensions()...), ",")
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\t%s\n", p.GetName(), p.GetKind(), dash(p.GetVersion()),
						p.GetApi(), p.GetState(), p.GetPid(), p.GetRestarts(), dash(oneLine(offers)), oneLine(p.GetLastError()))
				}
				return tw.Flush()
			})
		},
	}
}

func signalsCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "signals",
		Short: "List every live signal with its source, unit, last value and age",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, c adminpb.AdminClient) error {
				resp, err := c.ListSignals(ctx, &adminpb.ListSignalsRequest{})
				if err != nil {
					return fmt.Errorf("signals: %w", err)
				}
				now := time.Now()
				if o.output == "json" {
					out := make([]map[string]any, 0, len(resp.GetSignals()))
					for _, s := range resp.GetSignals() {
						labels := s.GetLabels()
						if labels == nil {
							labels = map[string]string{}
						}
						out = append(out, map[string]any{
							"name": s.GetName(), "labels": labels, "value": s.GetValue(), "unit": s.GetUnit(),
							"source": s.GetSource(), "time": s.GetTime().AsTime(),
							"age_s": now.Sub(s.GetTime().AsTime()).Seconds(),
						})
					}
					return o.json(out)
				}
				tw := tabwriter.NewWriter(o.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SIGNAL\tLABELS\tVALUE\tUNIT\tSOURCE\tAGE")
				for _, s := range resp.GetSignals() {
					var ls []string
					for k, v := range s.GetLabels() {
						ls = append(ls, k+"="+v)
					}
					sort.Strings(ls)
					fmt.Fprintf(tw, "%s\t%s\t%g\t%s\t%s\t%s\n", s.GetName(), dash(strings.Join(ls, ",")), s.GetValue(),
						dash(s.GetUnit()), s.GetSource(), now.Sub(s.GetTime().AsTime()).Round(time.Millisecond))
				}
				return tw.Flush()
			})
		},
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func limitsJSON(l *adminpb.Limits) map[string]any {
	return map[string]any{
		"request_timeout_ms": l.GetRequestTimeout().AsDuration().Milliseconds(),
		"memory_bytes":       l.GetMemoryBytes(),
		"concurrency":        l.GetConcurrency(),
		"queue_length":       l.GetQueueLength(),
		"queue_timeout_ms":   l.GetQueueTimeout().AsDuration().Milliseconds(),
		"max_body_bytes":     l.GetMaxBodyBytes(),
		"warm":               l.GetWarm(),
	}
}

func size(b uint64) string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", b>>30)
	case b >= 1<<20 && b%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", b>>20)
	}
	return fmt.Sprintf("%dB", b)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

// snapshotColumns renders how a cell's replicas start ("snapshot 3.1MiB",
// "initialise"), its kept state ("5e3a12bc9f01 3.1MiB 12s ago (decay)")
// and a note saying why replicas initialise one by one or why kept state
// was not restored.
func snapshotColumns(abi string, sn *adminpb.Snapshot) (starts, kept, note string) {
	starts, kept = "-", "-"
	if abi == "reactor" {
		starts = "initialise"
		if sn.GetInitBytes() > 0 {
			starts = "snapshot " + mib(sn.GetInitBytes())
		}
	}
	if sn.GetKept() {
		kept = "none yet"
		if sn.GetStateId() != "" {
			kept = fmt.Sprintf("%s %s %s ago (%s)", sn.GetStateId(), mib(sn.GetStateBytes()),
				time.Since(sn.GetStateTaken().AsTime()).Round(time.Second), sn.GetStateHow())
		}
	}
	if r := sn.GetNoSnapshot(); r != "" && abi == "reactor" {
		note = "no snapshot: " + r
	}
	if n := sn.GetNote(); n != "" {
		note = strings.TrimPrefix(note+"; "+n, "; ")
	}
	return starts, kept, note
}

func mib(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }

func snapshotJSON(sn *adminpb.Snapshot) map[string]any {
	m := map[string]any{"init_bytes": sn.GetInitBytes(), "no_snapshot": sn.GetNoSnapshot(), "kept": sn.GetKept(),
		"state_id": sn.GetStateId(), "state_bytes": sn.GetStateBytes(), "state_how": sn.GetStateHow(), "note": sn.GetNote()}
	if sn.GetStateTaken() != nil {
		m["state_taken"] = sn.GetStateTaken().AsTime()
	}
	return m
}
