// Package webui serves a live, read-only web view of one node: the fabric
// (nodes, their state, load and cells), each cell (versions and route
// weights, replicas, requests per second, p50/p99 latency and error rate
// over the last minutes, kept state), the reflexes (each cell's compiled
// rules with their live state, and the decision stream from the journal as
// it is written), the plugins and the kernel (eBPF) programs attached.
//
// # What it reads
//
// The view takes the node through Node, a subset of core/admin.Node (the
// node's *Node satisfies both). A Node that also has JournalSeq (JournalSeq
// interface) lets the view read the journal only when it has grown; without
// it the journal's newest entries are read at every poll, and a read
// decodes the journal's whole active file (about 55 ms for 2 MiB).
//
// # How it updates
//
// The browser opens one server-sent event stream, /events, and never polls.
// The server keeps one loop for every viewer:
//
//   - every Config.Interval (the node's telemetry interval, 1 s by default)
//     it samples each cell's latest signals (replicas, rps, latency.p50,
//     latency.p99, errors.rate) into a ring of Config.History points, always,
//     so a page opened later has the last minutes to plot; while anyone
//     watches it also builds one JSON snapshot of the node and pushes it,
//     with the points added since the last one, to every viewer (event
//     "snapshot");
//   - every Config.JournalPoll (250 ms) while anyone watches it reads the
//     journal entries with a higher seq than the last it sent and pushes
//     them (event "journal").
//
// A viewer joining gets event "hello" (the node's name, the interval, the
// plot history), a snapshot and the journal's last 200 entries at once. A
// viewer too slow to take its events (64 waiting) is disconnected; the
// browser's EventSource reconnects and starts over. At most
// Config.MaxViewers streams are served at once (503 beyond).
//
// The plots are hand-written SVG in plain JavaScript: no charting library,
// no build step, nothing fetched from elsewhere. The assets (assets/) are
// embedded in the binary and work offline.
//
// # Safety
//
// Everything shown that came from outside — cell names, intent text,
// journal messages and arguments, plugin errors — is user input: the page
// builds its DOM with createElement and textContent only, never innerHTML.
// Every answer carries a Content-Security-Policy that allows scripts,
// styles and connections from the view itself only (no inline script or
// style), forbids framing, and X-Content-Type-Options: nosniff. Errors are
// short fixed texts. Host paths (the cells and data directories) are cut
// from what is shown, and a cell's module path is not sent.
//
// On a loopback address (the only kind Listen accepts unless public is set)
// a request whose Host is not a loopback name or address is refused, so a
// web page cannot reach the view through DNS rebinding.
//
// The view is read-only: it has no actions (verbs stay with celctl and
// the admin socket).
package webui
