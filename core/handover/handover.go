// Package handover passes a node's listening sockets to the next node
// process on the same data directory, so that a restart or an upgrade of
// the celcore binary refuses no connection.
//
// # Design
//
// A stopping node (SIGTERM, SIGINT) duplicates its listening sockets and
// starts a keeper: a small process of its own (the celcore binary re-run as
// `celcore handover-keeper`, in a session of its own) that inherits the
// duplicates and listens on <data>/handover.sock. The node then stops
// accepting and drains its requests as before; the sockets themselves stay
// open in the keeper, so the kernel goes on completing handshakes into
// their accept queues (and queueing datagrams on the UDP one) while no
// node runs. The next node started on the same data directory connects to
// the keeper, receives the sockets (SCM_RIGHTS, with an offer naming them),
// acknowledges, and serves them once the cells it found have loaded; the
// keeper exits. A connection that arrived in between is accepted late,
// never refused. When no node comes within the hold time, the keeper closes
// the sockets and exits: from then on connections are refused, as after any
// stop.
//
// Passing descriptors was chosen over steering with sk_lookup into a
// sockmap: a socket in a sockmap is removed from it when its last
// descriptor closes, so between two processes someone must hold a
// descriptor anyway, and once one is held the plain socket serves the
// queued connections with no program in the path. It needs no privilege
// and works for TCP and UDP alike. What it cannot cover: a node killed
// with SIGKILL starts no keeper (its successor starts cold), and QUIC
// connections (HTTP/3, the fabric) do not survive a process, only the
// socket does (clients reconnect).
//
// Only a process of the same user may take the sockets (SO_PEERCRED).
package handover

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// SocketName is the keeper's socket in the data directory.
const SocketName = "handover.sock"

// Version is the offer format this package writes and reads.
const Version = 1

// maxOffer bounds an offer: a keeper holds a handful of sockets.
const (
	maxOffer   = 4096
	maxSockets = 16
)

// Socket is one socket handed over: its name (the role the node gives it,
// such as "http"), its network and local address as the keeper saw them.
type Socket struct {
	Name    string `json:"name"`
	Network string `json:"network"` // "tcp" or "udp"
	Addr    string `json:"addr"`
}

// Offer is what a keeper sends with the descriptors, one per socket in
// the same order.
type Offer struct {
	Version int       `json:"version"`
	From    int       `json:"from"`   // the pid of the node that stopped
	Keeper  int       `json:"keeper"` // the keeper's pid
	Since   time.Time `json:"since"`  // when the keeper took the sockets
	Sockets []Socket  `json:"sockets"`
}

// DecodeOffer reads an offer received from a keeper, checking it is one
// this package can use with n descriptors received.
func DecodeOffer(b []byte, n int) (Offer, error) {
	var o Offer
	if len(b) > maxOffer {
		return o, fmt.Errorf("handover offer: %d bytes, more than %d", len(b), maxOffer)
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return o, fmt.Errorf("handover offer: %w", err)
	}
	if o.Version != Version {
		return o, fmt.Errorf("handover offer: version %d, this node reads %d", o.Version, Version)
	}
	if len(o.Sockets) > maxSockets {
		return o, fmt.Errorf("handover offer: %d sockets, more than %d", len(o.Sockets), maxSockets)
	}
	if len(o.Sockets) != n {
		return o, fmt.Errorf("handover offer: names %d sockets but %d descriptors came with it", len(o.Sockets), n)
	}
	seen := map[string]bool{}
	for _, s := range o.Sockets {
		if s.Name == "" || seen[s.Name] {
			return o, fmt.Errorf("handover offer: socket name %q empty or repeated", s.Name)
		}
		seen[s.Name] = true
		if s.Network != "tcp" && s.Network != "udp" {
			return o, fmt.Errorf("handover offer: socket %q: network %q is neither tcp nor udp", s.Name, s.Network)
		}
	}
	return o, nil
}

// Held is a socket to hand over: its description and an open descriptor
// of it (a duplicate the caller may close once Hold returns).
type Held struct {
	Socket
	File *os.File
}

// Taken is what a node received from a keeper.
type Taken struct {
	Offer
	// Files holds the received descriptors by socket name. The node owns
	// them; those it does not use it must close.
	Files map[string]*os.File
	// At is when the node received them.
	At time.Time
}

// Held returns how long the keeper held the sockets: the time no node
// accepted on them.
func (t *Taken) Held() time.Duration { return t.At.Sub(t.Since) }

// Close closes every descriptor still in Files.
func (t *Taken) Close() {
	for name, f := range t.Files {
		f.Close()
		delete(t.Files, name)
	}
}

// Take removes the descriptor named name from t and returns it (nil if
// t has none by that name).
func (t *Taken) Take(name string) (*os.File, Socket) {
	if t == nil {
		return nil, Socket{}
	}
	f := t.Files[name]
	delete(t.Files, name)
	for _, s := range t.Sockets {
		if s.Name == name {
			return f, s
		}
	}
	return f, Socket{}
}

// ErrNoKeeper is returned by Take when no keeper waits in the directory.
var ErrNoKeeper = errors.New("no handover keeper")

func socketPath(dir string) string { return filepath.Join(dir, SocketName) }
