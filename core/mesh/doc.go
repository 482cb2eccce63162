// Package mesh is a node's side of the fabric: it owns what the fleet knows
// of its cells and acts on it — the catalog, the module store, placement
// on peers, healing after a death, forwarding and node route weights. The
// node only wires it (core/node); the transport and membership are
// core/fabric's, the certificates core/identity's, and serving an
// envelope (with call authorisation) the cell's (core/cell).
//
// # What each node gossips, and what it pulls
//
// Each node gossips, in its memberlist metadata (at most 512 bytes), its
// ingress address, its load (requests in flight and queued), a version of
// its catalog (a digest of the cells it serves with their module hashes
// and intents) and as many of its cells' names as fit. A peer's catalog is
// pulled over the fabric only when that version changes, so an idle fleet
// exchanges no catalogs: per-node idle cost is memberlist's (a probe per
// interval, gossip to a few nodes, a push/pull with one random member),
// which does not grow with the fleet. On a pull the node also fetches (and
// compiles) the modules it lacks, unless started with no prefetch. A node
// gossips a new version as soon as a cell is loaded, upgraded, removed or
// given a new intent (Mesh.Announce), not at its next metadata tick, and a
// node that receives a pushed state for a cell the pusher's catalog (as
// held) does not list pulls that catalog at once: a cell loaded moments
// before its node dies is known to the survivors, who take it over. The
// catalog also lists the cells the node withdrew (tombstones, below).
//
// # Agreeing without a coordinator
//
// No node leads. Each decision that must be taken by exactly one node is
// taken by the first node of a rendezvous ranking (highest hash of the key
// and the node name) over a set every node computes alike:
//
//   - Take-over. When memberlist confirms a node dead (never on a mere
//     suspicion), the cells only it served become orphans on every
//     survivor. The survivors known alive are ranked per cell; the first
//     takes the cell over at once, the one ranked k waits k·3s and acts
//     only if the cell is still not served. The node taking over gossips
//     the cell as its own at once (so nobody else starts), fetches the
//     module from its store or any live node that has it (never itself),
//     and retries with backoff. If it dies, the ranking without it names
//     the next node, which acts at once; if it fails, the next acts when
//     its turn comes.
//   - Stand-ins are fenced: a node that took a cell over remembers whose
//     it was; when that node is heard again serving the cell (a false
//     death, a healed partition, a restart) the stand-in is drained, so
//     one copy remains. Catalogs mark stand-ins; when survivors that each
//     saw the other dead both took a cell over, they find each other's
//     stand-in and all but the first by rendezvous over the stand-ins
//     drain theirs (every node ranks them the same way, so one stays).
//   - Spread. A cell whose intent says `spread across N nodes` (or
//     `spread across nodes` with `keep replicas N..M`) is kept on at least
//     N live nodes (or all of them, if fewer): among the nodes serving it,
//     the first by rendezvous
//     places a copy on another node (the intent's preferred nodes first,
//     then the least loaded), and waits for the news before placing
//     another. After a death or a restart the count drops and the same
//     rule restores it. When it is too high for 10 s (a holder back from a
//     restart after its copy was replaced), the copies placed for spread
//     ranked last by rendezvous among them drain, as many as are extra;
//     the home's copy, stand-ins and clones asked for are kept.
//   - Restarts. The cells a node serves for the fleet (placed by a peer or
//     taken over) are kept under <data>/mesh/placements.json with their
//     module in the store, and served again when the node restarts.
//   - Withdrawal. A cell whose module is removed on its home is withdrawn:
//     the home asks every live node to drop the copy it serves for the
//     fleet (placed, cloned or standing in), and for 30 s no node places
//     one (a holder that has not heard yet might ask); the home asking
//     again ends that. A node unreachable at the time (partitioned,
//     paused, restarting) learns it from the home's catalog, which lists
//     each cell the home withdrew (a tombstone, kept on disk for 24 h
//     and ended when the home serves the cell again): when it next pulls
//     that catalog it drops the copy it placed before the withdrawal, and
//     journals how long ago the home withdrew it.
//
// # Requests in transitions
//
// A request for a cell this node lacks goes to a remote replica: the less
// loaded of two picked at random (power of two choices on the gossiped
// load). A request that fails on the way is sent to another replica when
// it never reached a cell or is idempotent (GET, HEAD, PUT, DELETE,
// OPTIONS). A cell the fleet has but no live node serves right now (a
// take-over under way, or a stand-in drained for its home that this node
// does not see back yet: any cell a peer listed in the last 30 s, unless
// its home withdrew it) is waited for, at most 2s, and then answered 503
// with Retry-After — never 404.
//
// # Cell requests between nodes
//
// A forwarded request and a cel.call travel as one frame (see frame.go):
// the target cell, the calling cell (none for a forwarded request) and the
// request envelope. The receiving node hands the envelope to
// cell.ServeEnvelope with the caller from the frame and the peer the
// fabric verified; the cell's `allow from` decides.
package mesh
