// Package kvstore is the node's key-value store for cells (cel.kv_*, under
// `grant kv`): one bbolt file, <data>/kv/kv.db, per node, and in it one
// bucket per cell name, the cell's namespace.
//
// # Why bbolt
//
// go.etcd.io/bbolt is pure Go (no cgo in a node that cross-builds), keeps
// everything in one file, gives ACID transactions (one writer at a time,
// any number of readers, each on a consistent snapshot), and is crash-safe
// by construction: a copy-on-write B+tree whose new root is written only
// after the pages under it, so a crash or a power cut leaves the last
// committed transaction, never half of one, with no log to replay. Unlike
// LSM stores (pebble, badger) it runs no background goroutines —
// compaction, value-log GC — that would compete with requests on a small
// node, and reads are memory-mapped B+tree lookups: the workload cells give
// a store like this (configuration, sessions, notes) is mostly reads.
// What it costs: writes are serialised, and every commit is fsynced.
//
// # Why one file per node
//
// One file is one mmap, one file descriptor, one fsync domain and one flock
// for the whole node, however many cells it serves (thousands of cells
// would otherwise hold thousands of maps and descriptors). Buckets give each
// cell its own key space, and per-cell usage is counted here for quotas, so
// nothing is lost by sharing. The price is that writers of different cells
// queue behind one another; at one fsync per put that bounds the node's
// writes, not a cell's reads (see BenchmarkKV).
//
// # Durability
//
// Every Put and Delete is one bbolt transaction, committed and fsynced
// before it returns (bbolt's default, NoSync false): a put the cell was told
// succeeded survives a crash of the node or the machine. db.Batch would
// share fsyncs between concurrent writers but delays a lone writer by up to
// its MaxBatchDelay; cells write one key at a time, so each put pays its
// own fsync (BenchmarkKV/store/put measures it beside the read figure).
//
// # Consistency
//
// Replicas of a cell on one node share its bucket. Writes are serialised by
// bbolt; a Get or List sees one committed snapshot (a List never mixes two
// writes). There is no transaction across calls: read-modify-write by two
// replicas at once may lose an update, as with any get/put store.
//
// # Quotas and limits
//
// Keys are 1..MaxKey bytes, values at most MaxValue; a cell's usage is the
// sum of len(key)+len(value) over its keys, counted at Open and kept up to
// date by every write, and a Put that would take it past the cell's quota
// is refused (ErrQuota) without changing anything.
//
// # Failures
//
// A full disk or a read-only data directory fails the write (ErrUnavailable,
// wrapping the cause); a store that cannot be opened at all is Unavailable:
// every call fails with that error, and the node serves on without kv.
//
// # Movement
//
// Data stays on the node where it was written. It is not copied when a cell
// is cloned to, moved to or taken over by a peer: the copy there sees that
// node's bucket for the cell (empty unless it served there before). Cells
// that need their data everywhere keep it in a cell the others call.
package kvstore
