package plugin

import (
	"context"
	"errors"
	"time"
)

// Info describes a plugin: what [Serve] answers to the host's Info call and
// what `<binary> describe` prints. The kind is not part of it: it follows
// from which kind interface the implementation satisfies.
type Info struct {
	// Name identifies the plugin on a node and must be unique there, e.g.
	// "host" or "kv-intent". Required.
	Name string
	// Version is the plugin's own version, e.g. "1.4.0".
	Version string
	// Description is one line for listings.
	Description string
	// Capabilities are free-form feature flags, e.g. "signal:host.cpu".
	Capabilities []string
}

// Config is what the host hands a plugin when it configures it.
type Config struct {
	// Settings are the node configuration's settings for this plugin.
	Settings map[string]string
	// Node is the node's name, for plugins that label what they report.
	Node string
	// APIVersion is the plugin protocol version the host negotiated
	// (see pluginapi.ProtocolVersion).
	APIVersion uint32
}

// Configurer is implemented by plugins, of any kind, that want their
// settings or a [Host] handle. Configure is called once per start of the
// plugin process, before the host makes other calls of the plugin's kind.
// An error fails the plugin's start; the host reports it.
//
// The host passed in stays valid for the life of the process and may be
// kept; the ctx ends when Configure returns.
type Configurer interface {
	Configure(ctx context.Context, cfg Config, host Host) error
}

// Errors of host calls.
var (
	// ErrNoHost is returned by [Host] methods called before the host
	// configured the plugin, or when the host offered no host service.
	ErrNoHost = errors.New("celluster plugin: no host: the plugin has not been configured with a host service")
	// ErrHostGone is returned by [Host] methods when the connection to the
	// host has ended (the node is shutting down or restarting the plugin).
	// Calls fail with it immediately rather than hang.
	ErrHostGone = errors.New("celluster plugin: host connection is gone")
)

// Host is the plugin's handle on the core: the mechanism its policy drives.
// Its methods are safe for concurrent use. Each call carries ctx and also
// ends when the plugin's connection to the host ends, failing with an
// error that matches [ErrHostGone]. Before Configure they fail with
// [ErrNoHost]. Other failures wrap the host's gRPC status, so
// status.Code(err) works on them.
type Host interface {
	// ListCells lists the node's cells and their state.
	ListCells(ctx context.Context) ([]CellState, error)
	// ReadSignals returns the latest reading of each named signal (of
	// every signal when no name is given).
	ReadSignals(ctx context.Context, names ...string) ([]Reading, error)
	// SpawnReplicas brings a cell's live replicas up by count and returns
	// how many are live afterwards.
	SpawnReplicas(ctx context.Context, cell string, count int) (replicas int, err error)
	// DrainReplicas takes count replicas of a cell out of service and
	// returns how many are live afterwards.
	DrainReplicas(ctx context.Context, cell string, count int) (replicas int, err error)
	// SetRouteWeights sets how a cell's traffic is shared between targets.
	SetRouteWeights(ctx context.Context, cell string, weights []RouteWeight) error
	// EmitSignal publishes samples as if from a telemetry source.
	EmitSignal(ctx context.Context, samples ...Sample) error
	// AddJournalNote appends a note about a cell to the decision journal.
	AddJournalNote(ctx context.Context, cell, note string) error
	// RetireVersion takes a version of a cell (its sha256, or a unique
	// prefix of at least 8 hex digits) out of routing and drains it. The
	// last routed version cannot be retired.
	RetireVersion(ctx context.Context, cell, sha256 string) error
	// LoadBPF has the core load and attach a BPF object (an ELF file) the
	// plugin ships, under name (loading a name again replaces the object).
	// Every program must be of a type and attach point the node allows;
	// constants set the object's read-only variables ("target_tgid"
	// defaults to the core's process id).
	LoadBPF(ctx context.Context, name string, object []byte, constants map[string]uint64) (BPFObject, error)
	// ReadBPFMap returns every entry of a map of an object the plugin loaded.
	ReadBPFMap(ctx context.Context, objectID, mapName string) ([]BPFMapEntry, error)
	// UnloadBPF detaches and unloads an object the plugin loaded.
	UnloadBPF(ctx context.Context, objectID string) error
	// WaitBPFEvents waits up to timeout for records in a ring buffer map
	// of an object the plugin loaded and returns those available (none
	// when the timeout passes first).
	WaitBPFEvents(ctx context.Context, objectID, mapName string, timeout time.Duration) ([][]byte, error)
	// PlaceReplicas has a peer node serve count replicas of a cell (node
	// "" lets the core pick the least loaded live peer) and returns the
	// node and its live replicas.
	PlaceReplicas(ctx context.Context, cell, node string, count int, reason string) (string, int, error)
	// ListNodes lists the fabric's members as this node sees them; none
	// without a fabric.
	ListNodes(ctx context.Context) ([]NodeState, error)
}

// NodeState is one member of the fabric, from gossip.
type NodeState struct {
	// Name is the node's name; State is alive, suspect or dead.
	Name, State string
	// Load is the requests in flight or queued on the node.
	Load int64
	// Cells are the cells the node serves.
	Cells []string
	// Self is true for the node the plugin runs on.
	Self bool
}

// BPFObject is a BPF object the core loaded for the plugin.
type BPFObject struct {
	// ID names the object in ReadBPFMap and UnloadBPF.
	ID string
	// Maps are the object's map names.
	Maps []string
	// Programs are its programs as attached.
	Programs []BPFProgram
}

// BPFProgram is one attached program of a BPFObject.
type BPFProgram struct {
	// Name, Type and Attach say what and where, e.g. "cel_tcp_retrans",
	// "Tracing", "tcp_retransmit_skb".
	Name, Type, Attach string
	// ID is the kernel's program id.
	ID uint32
}

// BPFMapEntry is one entry of a BPF map: its raw key and value bytes (one
// value per possible CPU for per-CPU maps), in the kernel's byte order.
type BPFMapEntry struct {
	Key    []byte
	Values [][]byte
}

// CellState is one cell as the host reports it.
type CellState struct {
	// Name is the cell's name.
	Name string
	// SHA256 is the hex digest of the cell's current module.
	SHA256 string
	// ABI is "reactor" or "command".
	ABI string
	// State is the cell's lifecycle state, e.g. "ready".
	State string
	// Error explains a failed state.
	Error string
	// Replicas is the number of live replicas.
	Replicas int
	// Requests and Errors count requests served and failed since start.
	Requests, Errors uint64
	// InFlight is the number of requests being served now.
	InFlight int64
	// Warm is how many replicas the cell keeps ready.
	Warm int
	// MinReplicas and MaxReplicas are the bounds the core enforces.
	MinReplicas, MaxReplicas int
	// Idle is the time since the cell's last request.
	Idle time.Duration
	// Versions are the versions routed now, the primary first.
	Versions []VersionState
	// Spread, Prefer and Avoid are the intent's placement hints: spread
	// across nodes, prefer node, avoid node.
	Spread        bool
	Prefer, Avoid []string
}

// VersionState is one module version of a cell and the traffic it takes.
type VersionState struct {
	// SHA256 is the module's hex digest.
	SHA256 string
	// Weight is the version's route weight (its share is weight/sum).
	Weight uint32
	// Requests and Errors count what the version served since it loaded.
	Requests, Errors uint64
	// P99 is the version's p99 latency since it loaded.
	P99 time.Duration
	// Replicas is the number of live replicas of the version.
	Replicas int
	// Source is where the module came from, e.g. its file.
	Source string
}

// Reading is the latest value of a signal as the host knows it.
type Reading struct {
	// Signal is the signal's name.
	Signal string
	// Value is its value.
	Value float64
	// Labels scope the value.
	Labels map[string]string
	// Time is when the value was observed.
	Time time.Time
	// Source is the plugin (or "core") that reported it.
	Source string
}

// RouteWeight is the share of a cell's traffic one target receives.
type RouteWeight struct {
	// Target is a replica set: a module sha256 (a version; a unique prefix
	// of at least 8 hex digits will do) or a node name.
	Target string
	// Weight is relative to the other targets' weights.
	Weight uint32
}
