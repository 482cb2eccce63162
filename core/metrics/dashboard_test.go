package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/celluster/celluster/core/fabric"
)

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	Title  string `json:"title"`
	UID    string `json:"uid"`
	Panels []struct {
		ID      int    `json:"id"`
		Title   string `json:"title"`
		Targets []struct {
			Expr         string `json:"expr"`
			LegendFormat string `json:"legendFormat"`
		} `json:"targets"`
	} `json:"panels"`
}

var (
	metricName = regexp.MustCompile(`\b(celluster_[a-z0-9_]+|process_[a-z0-9_]+)\b`)
	byLabels   = regexp.MustCompile(`by \(([^)]*)\)`)
	legendVar  = regexp.MustCompile(`\{\{(\w+)\}\}`)
)

// TestGrafanaDashboard: every metric the dashboard in grafana/ queries is
// one a node serves (histograms by their _bucket series), and every label
// it groups or names a series by is one of that metric's labels; so a
// renamed metric or label fails here rather than in an operator's
// Grafana.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana/celluster-node.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana/celluster-node.json: %v", err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard without title, uid or panels: %+v", d)
	}

	// What a node with a fabric serves.
	src, lat := newFixture()
	m := New(src, lat)
	m.ObserveVerb("clone", "done")
	m.WatchFabric(func() (fabric.Stats, bool) { return fabric.Stats{Connections: 1}, true })
	mfs, _ := scrape(t, serve(t, m))
	labels := map[string][]string{} // metric → its label names
	for name, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				if !slices.Contains(labels[name], lp.GetName()) {
					labels[name] = append(labels[name], lp.GetName())
				}
			}
		}
		if labels[name] == nil {
			labels[name] = []string{}
		}
	}

	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			names := metricName.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q uses no node metric", p.Title, tg.Expr)
			}
			var known []string
			for _, n := range names {
				base := strings.TrimSuffix(n, "_bucket")
				if _, ok := labels[base]; !ok {
					t.Errorf("panel %q: metric %s is not served by a node", p.Title, n)
					continue
				}
				known = append(known, labels[base]...)
				if base != n {
					known = append(known, "le")
				}
			}
			var used []string
			for _, g := range byLabels.FindAllStringSubmatch(tg.Expr, -1) {
				for _, l := range strings.Split(g[1], ",") {
					used = append(used, strings.TrimSpace(l))
				}
			}
			for _, v := range legendVar.FindAllStringSubmatch(tg.LegendFormat, -1) {
				used = append(used, v[1])
			}
			for _, l := range used {
				if !slices.Contains(known, l) {
					t.Errorf("panel %q: label %q is not a label of %v", p.Title, l, names)
				}
			}
		}
	}
}
