package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/celluster/celluster/core/admin/adminpb"
	"github.com/celluster/celluster/core/intents"
)

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func versionsJSON(vs []*adminpb.Version) []map[string]any {
	out := make([]map[string]any, 0, len(vs))
	for _, v := range vs {
		out = append(out, map[string]any{
			"sha256": v.GetSha256(), "source": v.GetSource(), "weight": v.GetWeight(), "replicas": v.GetReplicas(),
			"requests": v.GetRequests(), "errors": v.GetErrors(), "p99_ms": v.GetP99Ms(),
		})
	}
	return out
}

func entryJSON(e *adminpb.JournalEntry) map[string]any {
	vals := make([]map[string]any, 0, len(e.GetValues()))
	for _, v := range e.GetValues() {
		vals = append(vals, map[string]any{"signal": v.GetSignal(), "labels": v.GetLabels(), "value": v.GetValue(), "time": v.GetTime().AsTime()})
	}
	return map[string]any{
		"seq": e.GetSeq(), "time": e.GetTime().AsTime(), "cell": e.GetCell(), "verb": e.GetVerb(),
		"args": nonNil(e.GetArgs()), "rule": e.GetRule(), "origin": e.GetOrigin(), "condition": e.GetCondition(),
		"manual": e.GetManual(), "values": vals, "outcome": e.GetOutcome(), "message": e.GetMessage(),
		"duration_ms": float64(e.GetDuration().AsDuration()) / 1e6, "plugin": e.GetPlugin(),
		"explanation": e.GetExplanation(), "trace_id": e.GetTraceId(),
	}
}

// journalEntries reads the entries req selects through StreamJournal, so a
// journal larger than one gRPC message still arrives whole.
func journalEntries(ctx context.Context, c adminpb.AdminClient, req *adminpb.JournalRequest) ([]*adminpb.JournalEntry, error) {
	stream, err := c.StreamJournal(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []*adminpb.JournalEntry
	for {
		batch, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, batch.GetEntries()...)
	}
}

func journalCmd(o *options) *cobra.Command {
	var limit int32
	cmd := &cobra.Command{
		Use:   "journal [CELL]",
		Short: "Show the decision journal: every verb, the rule and signal values behind it, and its outcome",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var cell string
			if len(args) == 1 {
				cell = args[0]
			}
			return o.call(cmd, func(ctx context.Context, c adminpb.AdminClient) error {
				entries, err := journalEntries(ctx, c, &adminpb.JournalRequest{Cell: cell, Limit: limit})
				if err != nil {
					return fmt.Errorf("journal: %w", err)
				}
				if o.output == "json" {
					out := make([]map[string]any, 0, len(entries))
					for _, e := range entries {
						out = append(out, entryJSON(e))
					}
					return o.json(out)
				}
				tw := tabwriter.NewWriter(o.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tTIME\tCELL\tVERB\tRULE\tOUTCOME\tTOOK\tMESSAGE")
				for _, e := range entries {
					verb := strings.TrimSpace(e.GetVerb() + " " + strings.Join(e.GetArgs(), " "))
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.GetSeq(), e.GetTime().AsTime().Local().Format("15:04:05.000"),
						e.GetCell(), dash(verb), e.GetRule(), e.GetOutcome(), e.GetDuration().AsDuration().Round(time.Microsecond), oneLine(e.GetMessage()))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().Int32Var(&limit, "limit", 50, "show the newest N entries (0: all kept)")
	return cmd
}

func whyCmd(o *options) *cobra.Command {
	var limit int32
	cmd := &cobra.Command{
		Use:   "why CELL",
		Short: "Explain, in words, the last decisions about a cell and their causes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, c adminpb.AdminClient) error {
				entries, err := journalEntries(ctx, c, &adminpb.JournalRequest{Cell: args[0], Limit: limit})
				if err != nil {
					return fmt.Errorf("why: %w", err)
				}
				if o.output == "json" {
					out := make([]string, 0, len(entries))
					for _, e := range entries {
						out = append(out, e.GetExplanation())
					}
					return o.json(out)
				}
				if len(entries) == 0 {
					fmt.Fprintf(o.out, "no decisions about %s in the journal\n", args[0])
					return nil
				}
				for _, e := range entries {
					fmt.Fprintln(o.out, e.GetExplanation())
					if id := e.GetTraceId(); id != "" {
						fmt.Fprintf(o.out, "  trace %s\n", id)
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().Int32Var(&limit, "limit", 10, "explain the newest N decisions")
	return cmd
}

func ts(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().Local().Format("15:04:05.000")
}

func intentCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "intent CELL",
		Short: "Show the intent a cell runs on and the rules compiled from it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, c adminpb.AdminClient) error {
				in, err := c.Intent(ctx, &adminpb.IntentRequest{Cell: args[0]})
				if err != nil {
					return fmt.Errorf("intent: %w", err)
				}
				if o.output == "json" {
					rules := make([]map[string]any, 0, len(in.GetRules()))
					for _, r := range in.GetRules() {
						m := map[string]any{"name": r.GetName(), "rule": r.GetText(), "origin": r.GetOrigin(), "holding": r.GetHolding(), "last_value": r.GetLastValue()}
						for k, t := range map[string]*timestamppb.Timestamp{"since": r.GetSince(), "last_fired": r.GetLastFired(), "quiet_until": r.GetQuietUntil(), "last_seen": r.GetLastSeen()} {
							if t != nil {
								m[k] = t.AsTime()
							}
						}
						rules = append(rules, m)
					}
					return o.json(map[string]any{
						"cell": in.GetCell(), "origin": in.GetOrigin(), "source": in.GetSource(), "text": in.GetText(),
						"parser": in.GetParser(), "applied": in.GetApplied().AsTime(), "error": in.GetError(),
						"replicas":           map[string]any{"min": in.GetMinReplicas(), "max": in.GetMaxReplicas(), "warm": in.GetWarm()},
						"decay_after_idle_s": in.GetDecayAfterIdle().AsDuration().Seconds(),
						"keep_state":         in.GetKeepState(),
						"state_every_s":      in.GetStateEvery().AsDuration().Seconds(),
						"upgrade_args":       nonNil(in.GetUpgradeArgs()), "rules": rules,
						"warnings": nonNil(in.GetWarnings()),
					})
				}
				fmt.Fprintf(o.out, "cell %s: intent from %s (%s), parsed by %s, applied %s\n", in.GetCell(), in.GetSource(), in.GetOrigin(), dash(in.GetParser()), ts(in.GetApplied()))
				if e := in.GetError(); e != "" {
					fmt.Fprintf(o.out, "REJECTED (the intent below stays in force): %s\n", e)
				}
				for _, w := range in.GetWarnings() {
					fmt.Fprintf(o.out, "WARNING: %s\n", w)
				}
				fmt.Fprintf(o.out, "replicas %d..%d, warm %d", in.GetMinReplicas(), in.GetMaxReplicas(), in.GetWarm())
				if d := in.GetDecayAfterIdle().AsDuration(); d > 0 {
					fmt.Fprintf(o.out, ", decay to zero after %s idle", d)
				}
				if in.GetKeepState() {
					fmt.Fprint(o.out, ", state kept")
					if d := in.GetStateEvery().AsDuration(); d > 0 {
						fmt.Fprintf(o.out, " and replicated every %s", d)
					}
				}
				if ua := in.GetUpgradeArgs(); len(ua) > 0 {
					fmt.Fprintf(o.out, ", upgrades checked against %s", strings.Join(ua, " "))
				}
				fmt.Fprintln(o.out)
				fmt.Fprintln(o.out, "\ncompiled rules:")
				tw := tabwriter.NewWriter(o.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tRULE\tFROM\tHOLDING\tLAST VALUE\tLAST FIRED")
				for _, r := range in.GetRules() {
					holding := "no"
					if r.GetHolding() {
						holding = "since " + ts(r.GetSince())
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%g\t%s\n", r.GetName(), r.GetText(), dash(r.GetOrigin()), holding, r.GetLastValue(), ts(r.GetLastFired()))
				}
				if len(in.GetRules()) == 0 {
					fmt.Fprintln(tw, "(none)")
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintf(o.out, "\nintent text:\n%s", in.GetText())
				return nil
			})
		},
	}
}

func verbCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "verb VERB CELL [ARGS...]",
		Short: "Run a verb (spawn, clone, reroute, upgrade, decay) by hand through the node's dispatch loop",
		Example: "  celctl verb clone hello 2\n  celctl verb decay hello all\n" +
			"  celctl verb reroute hello 3f2a9c01=90 9e8d7c6b=10",
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, c adminpb.AdminClient) error {
				e, err := c.Verb(ctx, &adminpb.VerbRequest{Verb: args[0], Cell: args[1], Args: args[2:]})
				if err != nil {
					return fmt.Errorf("verb %s: %w", args[0], err)
				}
				if o.output == "json" {
					return o.json(entryJSON(e))
				}
				fmt.Fprintln(o.out, e.GetExplanation())
				if e.GetOutcome() == "failed" || e.GetOutcome() == "refused" {
					return fmt.Errorf("%s %s: %s", args[0], e.GetOutcome(), e.GetMessage())
				}
				return nil
			})
		},
	}
}

func embedIntentCmd(o *options) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "embed-intent MODULE.wasm FILE.intent",
		Short: "Write an intent into a module's cel.intent custom section, so the module carries its own intent",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			mod, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			intent, err := os.ReadFile(args[1])
			if err != nil {
				return err
			}
			b, err := intents.Embed(mod, intent)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if out == "" {
				out = args[0]
			}
			tmp := out + ".tmp"
			if err := os.WriteFile(tmp, b, 0o644); err != nil {
				return err
			}
			if err := os.Rename(tmp, out); err != nil {
				return err
			}
			fmt.Fprintf(o.out, "embedded %s (%d bytes) into %s as custom section %s\n", args[1], len(intent), out, intents.SectionName)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write the result here (default: rewrite MODULE in place, atomically)")
	return cmd
}

func bpfJSON(b *adminpb.BPF) map[string]any {
	progs := make([]map[string]any, 0, len(b.GetPrograms()))
	for _, p := range b.GetPrograms() {
		progs = append(progs, map[string]any{"object": p.GetObject(), "name": p.GetName(), "type": p.GetType(), "attach": p.GetAttach(), "id": p.GetId()})
	}
	return map[string]any{
		"available": b.GetAvailable(), "error": b.GetError(), "bpf_syscall": b.GetBpfSyscall(), "btf": b.GetBtf(),
		"program_types": nonNil(b.GetProgramTypes()), "map_types": nonNil(b.GetMapTypes()),
		"attach_points": nonNil(b.GetAttachPoints()), "pin_path": b.GetPinPath(), "programs": progs,
	}
}

func nodesCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "nodes",
		Short: "List the fabric's nodes as this node sees them: state, cells, load",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, c adminpb.AdminClient) error {
				resp, err := c.ListNodes(ctx, &adminpb.ListNodesRequest{})
				if err != nil {
					return fmt.Errorf("nodes: %w", err)
				}
				if o.output == "json" {
					out := make([]map[string]any, 0, len(resp.GetNodes()))
					for _, n := range resp.GetNodes() {
						out = append(out, map[string]any{"name": n.GetName(), "address": n.GetAddress(), "state": n.GetState(),
							"cells": nonNil(n.GetCells()), "load": n.GetLoad(), "http": n.GetHttp(), "self": n.GetSelf()})
					}
					return o.json(out)
				}
				if resp.GetFabricAddr() == "" {
					fmt.Fprintln(o.out, "this node runs without a fabric (start celcore with --fabric ADDR)")
					return nil
				}
				tw := tabwriter.NewWriter(o.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tADDRESS\tSTATE\tLOAD\tCELLS")
				for _, n := range resp.GetNodes() {
					name := n.GetName()
					if n.GetSelf() {
						name += " (this)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", name, n.GetAddress(), n.GetState(), n.GetLoad(), dash(strings.Join(n.GetCells(), ",")))
				}
				return tw.Flush()
			})
		},
	}
}
