package node

import (
	"fmt"
	"slices"
	"strings"

	"github.com/celluster/celluster/core/ingress"
	"github.com/celluster/celluster/core/intents"
	pb "github.com/celluster/celluster/pluginapi/v1"
)

// maxBodyLimit is the largest `limit body` the node honours: a request's
// body is held whole in memory, and copied into the cell's, while the
// cell runs.
const maxBodyLimit = 1 << 30

// cellRoutes returns the routes an intent asks for: each of its hosts
// (any host without `serve host`) under each of its `serve http` paths
// (every path, "/", without one). An intent with neither asks for none:
// the cell is served by name, at /<cell>. Paths were checked by
// checkStatements.
func cellRoutes(name string, spec *pb.IntentSpec) []ingress.Route {
	var paths []string
	for _, e := range spec.GetEndpoints() {
		paths = append(paths, ingress.CleanPrefix(e.GetPath()))
	}
	hosts := spec.GetHosts()
	if len(hosts) == 0 && len(paths) == 0 {
		return nil
	}
	if len(hosts) == 0 {
		hosts = []string{""}
	}
	if len(paths) == 0 {
		paths = []string{"/"}
	}
	var out []ingress.Route
	for _, h := range hosts {
		for _, p := range paths {
			out = append(out, ingress.Route{Host: strings.ToLower(h), Prefix: p, Cell: name})
		}
	}
	return out
}

// checkRoutes checks what an intent's routes and body limit ask of the
// node, for intents from any parser: paths that route by whole segments,
// host names without a port, and a body limit the node can hold.
func checkRoutes(name string, src intents.Source, spec *pb.IntentSpec) error {
	for _, e := range spec.GetEndpoints() {
		p := e.GetPath()
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?#*%") || strings.Contains(p, "//") ||
			slices.Contains(strings.Split(p, "/"), "..") || slices.Contains(strings.Split(p, "/"), ".") {
			return fmt.Errorf("%s: serve http %s: a path prefix starts with / and names whole segments, without a query, wildcard, escape, // or dot segment (e.g. serve http /%s)",
				where(src, "serve", p), p, name)
		}
	}
	for _, h := range spec.GetHosts() {
		rest, _ := strings.CutPrefix(h, "*.")
		if h == "" || strings.ContainsAny(rest, ":*/[] ") || strings.HasSuffix(h, ".") {
			return fmt.Errorf("%s: serve host %s: a host name routes without a port, and a wildcard stands only for the first label (e.g. serve host shop.example, *.shop.example)",
				where(src, "serve", h), h)
		}
	}
	if b := spec.GetLimits().GetBodyBytes(); b > maxBodyLimit {
		return fmt.Errorf("%s: limit body %d bytes: this node accepts request bodies of at most 1GiB per cell", where(src, "limit", "body"), b)
	}
	return nil
}

// rebuildRoutes puts in force the routes of every intent in force, and
// notes (log, `celctl cells`) what a cell does not get: a host and path
// another cell also claims and takes (the first by name), or its /<cell>
// path routed to another cell.
func (n *Node) rebuildRoutes() {
	n.rmu.Lock()
	defer n.rmu.Unlock()
	n.imu.Lock()
	var routes []ingress.Route
	for _, st := range n.intents {
		routes = append(routes, st.routes...)
	}
	n.imu.Unlock()
	notes := map[string]string{}
	note := func(cell, msg string) {
		if notes[cell] != "" {
			notes[cell] += "; "
		}
		notes[cell] += msg
	}
	var tab *ingress.Table
	if len(routes) > 0 {
		var conflicts []ingress.Conflict
		tab, conflicts = ingress.NewTable(routes)
		for _, c := range conflicts {
			for _, l := range c.Losers {
				note(l, fmt.Sprintf("route %s%s is claimed by cells %s and %s: %s takes it (the first by name), this cell does not get it",
					hostOrAny(c.Route.Host), c.Route.Prefix, c.Route.Cell, l, c.Route.Cell))
			}
		}
		for _, r := range tab.Routes() {
			if r.Host != "" || r.Prefix == "/" || strings.Count(r.Prefix, "/") != 1 {
				continue
			}
			if other := r.Prefix[1:]; other != r.Cell && !tab.Claimed(other) && n.reg.Lookup(other) != nil {
				note(other, fmt.Sprintf("path %s is routed to cell %s by its intent, so this cell is not served there (give it a serve statement of its own)", r.Prefix, r.Cell))
			}
		}
	}
	for cell, msg := range notes {
		if n.routeNotes[cell] != msg {
			n.log.Warn("route not served", "cell", cell, "note", msg)
		}
	}
	if inForce := tab.Routes(); !slices.Equal(inForce, n.routesInForce) {
		var list []string
		for i, r := range inForce {
			if i == 20 {
				list = append(list, fmt.Sprintf("... %d more", len(inForce)-i))
				break
			}
			list = append(list, hostOrAny(r.Host)+r.Prefix+" -> "+r.Cell)
		}
		n.log.Info("routes in force", "count", len(inForce), "routes", strings.Join(list, ", "), "notes", len(notes))
		n.routesInForce = inForce
	}
	n.imu.Lock()
	n.routeNotes = notes
	n.imu.Unlock()
	if n.ing != nil {
		n.ing.SetRoutes(tab)
	}
}

// setIngress gives rebuildRoutes the ingress to put routes in force on.
func (n *Node) setIngress(ing *ingress.Server) {
	n.rmu.Lock()
	n.ing = ing
	n.rmu.Unlock()
	n.rebuildRoutes()
}

// routeNote returns what the routes in force withhold from a cell, or "".
func (n *Node) routeNote(name string) string {
	n.imu.Lock()
	defer n.imu.Unlock()
	return n.routeNotes[name]
}

func hostOrAny(h string) string {
	if h == "" {
		return "(any host)"
	}
	return h
}
