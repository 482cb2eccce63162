package node

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/celluster/celluster/core/cell"
	"github.com/celluster/celluster/core/cellwatch"
	"github.com/celluster/celluster/core/intents"
	"github.com/celluster/celluster/core/reflex"
	pb "github.com/celluster/celluster/pluginapi/v1"
)

// checkStatements checks the statements of an intent that the node honours
// itself, and returns what the intent pins about the cell's module:
//
//   - "module PATH [sha256 HEX]": PATH must be the cell's own module file;
//     the hash, when given, is a pin: a module with another hash is refused
//     and the serving version keeps serving;
//   - "abi reactor|command": a module of the other ABI is refused likewise;
//   - "serve http [ADDR] PATH": the node serves every cell on its one
//     ingress; PATH is a route (checkRoutes, cellRoutes), but an endpoint
//     asking for another address or protocol is rejected, not ignored.
func checkStatements(name string, src intents.Source, spec *pb.IntentSpec) (cell.Requirement, error) {
	var req cell.Requirement
	if m := spec.GetModule(); m != nil {
		at := where(src, "module", m.GetPath())
		if p := strings.TrimPrefix(m.GetPath(), "./"); p != "" && p != name+cellwatch.Ext {
			return req, fmt.Errorf("%s: module %s: an intent names its own cell's module, %s%s (the module file it sits beside)", at, m.GetPath(), name, cellwatch.Ext)
		}
		if h := strings.ToLower(m.GetSha256()); h != "" {
			req.SHA256, req.SHA256At = h, at
		}
	}
	switch spec.GetAbi() {
	case pb.ABI_ABI_REACTOR:
		req.ABI, req.ABIAt = "reactor", where(src, "abi", "")
	case pb.ABI_ABI_COMMAND:
		req.ABI, req.ABIAt = "command", where(src, "abi", "")
	}
	for _, e := range spec.GetEndpoints() {
		at := where(src, "serve", e.GetPath())
		if e.GetListen() != "" {
			at = where(src, "serve", e.GetListen())
		}
		desc := strings.Join(strings.Fields("serve "+e.GetProtocol()+" "+e.GetListen()+" "+e.GetPath()), " ")
		switch {
		case e.GetProtocol() != "http":
			return req, fmt.Errorf("%s: %s: this node serves cells over http only", at, desc)
		case e.GetListen() != "":
			return req, fmt.Errorf("%s: %s: this node serves every cell on its one ingress (celcore --http); a listen address per cell is not supported: write serve http %s", at, desc, e.GetPath())
		}
	}
	return req, nil
}

// where returns "FILE:LINE:COL" for the first statement of src starting
// with keyword (and containing the token arg, if given): COL is arg's
// column, or the keyword's. Without a match it returns the file alone.
func where(src intents.Source, keyword, arg string) string {
	if src.Origin == intents.FromDefault {
		return src.Name
	}
	for i, line := range strings.Split(string(src.Content), "\n") {
		code, _, _ := strings.Cut(line, "#")
		f := strings.Fields(code)
		if len(f) == 0 || f[0] != keyword || (arg != "" && !slices.Contains(f, arg)) {
			continue
		}
		col := strings.Index(code, keyword)
		if arg != "" {
			for j := col + len(keyword); j < len(code); {
				k := strings.Index(code[j:], arg)
				if k < 0 {
					break
				}
				at := j + k
				endOK := at+len(arg) == len(code) || code[at+len(arg)] == ' ' || code[at+len(arg)] == '\t'
				if (code[at-1] == ' ' || code[at-1] == '\t') && endOK {
					col = at
					break
				}
				j = at + 1
			}
		}
		return fmt.Sprintf("%s:%d:%d", src.Name, i+1, utf8.RuneCountInString(code[:col])+1)
	}
	return src.Name
}

// silentSignals returns a warning for each rule watching a signal that no
// source emits: not one the node publishes per cell, not one a telemetry
// plugin declared, and not one seen in the signal store. Such a rule never
// fires; the intent is applied regardless (the source may come later).
// When the intent grants signal, a name the cell may publish itself with
// cel.signal is taken to be one.
func (n *Node) silentSignals(src intents.Source, rules []reflex.Rule, grantsSignal bool) []string {
	known := map[string]bool{}
	for _, d := range cellSignals {
		known[d.Name] = true
	}
	if n.plugins != nil {
		for _, ds := range n.plugins.Signals() {
			for _, d := range ds {
				known[d.GetName()] = true
			}
		}
	}
	for _, r := range n.sig.Latest() {
		known[r.Name] = true
	}
	var out []string
	for _, r := range rules {
		if known[r.Signal] || (grantsSignal && cell.ValidSignalName(r.Signal)) {
			continue
		}
		at := src.Name
		if r.Line > 0 {
			at = fmt.Sprintf("%s:%d", src.Name, r.Line)
		}
		names := make([]string, 0, len(known))
		for k := range known {
			names = append(names, k)
		}
		sort.Strings(names)
		out = append(out, fmt.Sprintf("%s: rule %s watches signal %q, which no source emits, so it never fires (signals known now: %s)",
			at, r.Name, r.Signal, strings.Join(names, ", ")))
	}
	return out
}
