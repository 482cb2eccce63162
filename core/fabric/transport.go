package fabric

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/celluster/celluster/core/fabric/frame"
)

// gossipTransport is memberlist's Transport over the fabric: packets are
// QUIC datagrams, streams are QUIC streams opened with a TypeGossip frame.
type gossipTransport struct {
	f       *Fabric
	packets chan *memberlist.Packet
	streams chan net.Conn

	once sync.Once
	done chan struct{}
}

var _ memberlist.NodeAwareTransport = (*gossipTransport)(nil)

func newGossipTransport(f *Fabric) *gossipTransport {
	return &gossipTransport{
		f:       f,
		packets: make(chan *memberlist.Packet, 1024),
		streams: make(chan net.Conn, 16),
		done:    make(chan struct{}),
	}
}

// FinalAdvertiseAddr returns the fabric's advertised address, whatever
// memberlist's configuration says.
func (t *gossipTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return t.f.advertise.IP, t.f.advertise.Port, nil
}

// WriteTo sends a packet to addr.
func (t *gossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress sends a packet like UDP would: at once over an existing
// connection, or queued behind a connection attempt, never waiting for one.
func (t *gossipTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	key, raddr, err := resolve(a.Addr)
	if err != nil {
		return now, err
	}
	if key == t.f.advertise.String() {
		return now, fmt.Errorf("fabric: gossip packet to this node's own address %s", key)
	}
	t.f.mu.Lock()
	p, call, err := t.f.peerOrDialLocked(key, raddr)
	if call != nil {
		if len(call.pending) < maxPending {
			call.pending = append(call.pending, pendingPacket{buf: bytes.Clone(b), node: a.Name})
		} else {
			t.f.stats.gossipDropped.Add(1)
		}
	}
	t.f.mu.Unlock()
	if err != nil || p == nil {
		return now, err
	}
	return now, p.sendGossip(b, a.Name)
}

// PacketCh delivers the packets peers sent.
func (t *gossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout opens a memberlist stream to addr.
func (t *gossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout opens a memberlist stream to a, checking that the
// connection's certificate names the node memberlist expects there.
func (t *gossipTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(t.f.ctx, timeout)
	defer cancel()
	p, err := t.f.Dial(ctx, a.Addr)
	if err != nil {
		return nil, err
	}
	if a.Name != "" && a.Name != p.name {
		return nil, fmt.Errorf("fabric: memberlist node %q is at %s, whose certificate names %q", a.Name, p.addr, p.name)
	}
	s, err := p.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	if err := frame.Write(s, frame.TypeGossip, nil); err != nil {
		reset(s, codeCancelled)
		return nil, fmt.Errorf("fabric: gossip stream to %s: %w", p.name, err)
	}
	return newStreamConn(s, p), nil
}

// StreamCh delivers the memberlist streams peers opened.
func (t *gossipTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown stops delivery; the fabric owns the connections.
func (t *gossipTransport) Shutdown() error {
	t.once.Do(func() { close(t.done) })
	return nil
}

// deliverPacket hands memberlist a packet, dropping it (as UDP would) when
// memberlist is not keeping up.
func (t *gossipTransport) deliverPacket(b []byte, from *Peer) {
	select {
	case <-t.done:
		return
	default:
	}
	t.f.stats.gossipReceived.Add(1)
	select {
	case t.packets <- &memberlist.Packet{Buf: b, From: from.remote, Timestamp: time.Now()}:
	default:
		t.f.stats.gossipDropped.Add(1)
		t.f.log.Debug("fabric: gossip packet dropped: memberlist is behind", "peer", from.name)
	}
}

// deliverStream hands memberlist a stream, waiting for it to take it.
func (t *gossipTransport) deliverStream(c net.Conn) {
	select {
	case t.streams <- c:
	case <-t.done:
		c.Close()
	case <-t.f.ctx.Done():
		c.Close()
	}
}

// streamConn is a QUIC stream as the net.Conn memberlist expects: Close
// ends both directions.
type streamConn struct {
	*Stream
	local, remote net.Addr
}

var _ net.Conn = (*streamConn)(nil)

func newStreamConn(s *Stream, p *Peer) *streamConn {
	return &streamConn{Stream: s, local: p.f.udp.LocalAddr(), remote: p.remote}
}

func (c *streamConn) Close() error {
	err := c.Stream.Close()
	c.Stream.CancelRead(codeDone)
	return err
}

func (c *streamConn) LocalAddr() net.Addr  { return c.local }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }
