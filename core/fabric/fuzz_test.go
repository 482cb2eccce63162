package fabric

import (
	"bytes"
	"slices"
	"testing"
	"time"
)

// FuzzGossipPacket delivers arbitrary bytes from a verified peer as one
// memberlist packet, as a datagram or a TypeGossipPacket stream would: the
// node decodes it with memberlist and must not crash, must keep itself alive
// and still answers a request on the same connection. The seeds
// are a ping, a compound message and truncated and corrupted ones.
func FuzzGossipPacket(f *testing.F) {
	f.Add([]byte{0})                                 // pingMsg, no body
	f.Add([]byte{7, 2, 0, 1, 0, 1, 0, 0})            // compoundMsg claiming two parts
	f.Add([]byte{4, 0x85, 0xa4, 'N', 'o', 'd', 'e'}) // alive, truncated msgpack
	f.Add(bytes.Repeat([]byte{0xff}, 64))
	f.Add([]byte{})

	ca := newTestCA(f, testTD)
	a := startNode(f, ca, "a", nodeOpts{})
	b := startNode(f, ca, "b", nodeOpts{})
	b.HandleRequest(typeEcho, 0, echo)
	if err := a.Join(f.Context(), []string{b.addr()}); err != nil {
		f.Fatal(err)
	}
	eventually(f, 10*time.Second, "a and b see each other", func() bool { return allAlive(b.Members(), 2) })
	p, err := a.Dial(f.Context(), b.addr())
	if err != nil {
		f.Fatal(err)
	}
	bp := b.peerAt(a.addr())
	if bp == nil {
		f.Fatal("b has no connection to a")
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		b.gossip.deliverPacket(append([]byte(nil), data...), bp)
		if got, err := p.Request(t.Context(), typeEcho, []byte("x")); err != nil || string(got) != "a:X" {
			t.Fatalf("after the packet, echo = %q, %v", got, err)
		}
		if ms := b.Members(); !slices.ContainsFunc(ms, func(m Member) bool { return m.Name == "b" && m.State == StateAlive }) {
			t.Fatalf("after the packet b does not list itself alive: %v", ms)
		}
	})
}
