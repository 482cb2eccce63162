package fabric

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/celluster/celluster/core/fabric/frame"
)

// Stream and connection error codes the fabric uses on the wire.
const (
	codeDone      quic.StreamErrorCode = 0 // the reader is done; nothing went wrong
	codeNoHandler quic.StreamErrorCode = 1 // no handler for the first frame's type
	codeBadFrame  quic.StreamErrorCode = 2 // the first frame is malformed
	codeCancelled quic.StreamErrorCode = 3 // the caller's context ended

	codeClosing quic.ApplicationErrorCode = 0 // the node closes the connection
	codeRefused quic.ApplicationErrorCode = 1 // the connection failed its setup
)

// Datagram kinds: the first byte of every fabric datagram.
const (
	dgGossip byte = 0
	dgApp    byte = 1
	dgProbe  byte = 2 // asks only for QUIC's acknowledgement; ignored
)

// headerTimeout bounds how long an accepted stream may take to send its
// first frame header.
const headerTimeout = 10 * time.Second

// maxHello bounds a hello frame's payload (empty today).
const maxHello = 4 << 10

// maxGossipPacket bounds a memberlist packet sent as a stream.
const maxGossipPacket = 1 << 20

// maxIdleLanes bounds the idle lanes a Peer keeps for its requests; a
// lane beyond them is closed when its request is done.
const maxIdleLanes = 8

// gossipQueue bounds the memberlist packets waiting to go out to one peer.
// A peer that stops acknowledging stalls only its own queue: memberlist's
// probes of the other members never wait for it.
const gossipQueue = 64

// Peer is a verified connection to another node.
type Peer struct {
	f      *Fabric
	conn   *quic.Conn
	name   string
	addr   string
	remote net.Addr
	ctx    context.Context // ends when the connection or the fabric closes
	cancel context.CancelFunc
	gossip chan []byte  // memberlist packets, datagram-ready, for sendGossipLoop
	lanes  chan *Stream // idle lanes for Request, at most maxIdleLanes

	closedLocally atomic.Bool
}

func (f *Fabric) newPeer(conn *quic.Conn, name, addr string) *Peer {
	ctx, cancel := context.WithCancel(f.ctx)
	return &Peer{
		f: f, conn: conn, name: name, addr: addr, remote: conn.RemoteAddr(), ctx: ctx, cancel: cancel,
		gossip: make(chan []byte, gossipQueue), lanes: make(chan *Stream, maxIdleLanes),
	}
}

// Name returns the peer's verified node name.
func (p *Peer) Name() string { return p.name }

// Addr returns the peer's fabric address (host:port).
func (p *Peer) Addr() string { return p.addr }

// OpenStream opens a new stream to the peer, waiting while the peer's
// stream limit is reached until ctx is done. The peer's fabric dispatches
// the stream by the type of the first frame written to it.
func (p *Peer) OpenStream(ctx context.Context) (*Stream, error) {
	s, err := p.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("fabric: open stream to %s: %w", p.name, err)
	}
	p.f.stats.streamsOpened.Add(1)
	return s, nil
}

// SendDatagram sends b to the peer's datagram handler, unreliably. b must
// fit in one QUIC packet; a larger b is an error naming the limit. It blocks
// while the connection's datagram queue (32) is full, which happens only
// when the peer stops acknowledging.
func (p *Peer) SendDatagram(b []byte) error {
	buf := make([]byte, 1+len(b))
	buf[0] = dgApp
	copy(buf[1:], b)
	if err := p.conn.SendDatagram(buf); err != nil {
		if tl, ok := errors.AsType[*quic.DatagramTooLargeError](err); ok {
			return fmt.Errorf("fabric: datagram of %d bytes to %s is over the path's limit of %d", len(b), p.name, tl.MaxDatagramPayloadSize-1)
		}
		return fmt.Errorf("fabric: datagram to %s: %w", p.name, err)
	}
	p.f.stats.datagramsSent.Add(1)
	return nil
}

// RemoteError is the message of a frame.TypeError a peer answered a request
// with.
type RemoteError struct {
	Peer    string
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("fabric: peer %s: %s", e.Peer, e.Message)
}

// Request sends one frame of type typ to the peer's request handler for it
// (Fabric.HandleRequest) and returns the payload of the answer, a
// frame.TypeResponse. An answer of type frame.TypeError is returned as a
// *RemoteError. The answer may be at most Config.MaxFrame bytes.
//
// Requests travel on lanes: streams that carry one request after another,
// kept open between requests (up to 8 idle per peer), so that a request is
// one packet each way — no stream set-up and no FIN. A request whose ctx
// ends, or that fails, resets its lane; concurrent requests use lanes of
// their own.
func (p *Peer) Request(ctx context.Context, typ frame.Type, payload []byte) ([]byte, error) {
	fail := func(err error) ([]byte, error) {
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return nil, fmt.Errorf("fabric: %s request to %s: %w", typ, p.name, err)
	}
	var req bytes.Buffer
	if err := frame.Write(&req, typ, payload); err != nil {
		return fail(err)
	}
	msg := req.Bytes()
	var s *Stream
	select {
	case s = <-p.lanes:
	default:
		var err error
		if s, err = p.OpenStream(ctx); err != nil {
			return nil, err
		}
		var lane bytes.Buffer
		_ = frame.Write(&lane, frame.TypeLane, nil)
		lane.Write(msg)
		msg = lane.Bytes()
	}
	stop := context.AfterFunc(ctx, func() { reset(s, codeCancelled) })
	// The handler may answer before it has read all of the request (a
	// refusal, which resets the lane): a failed write is reported only when
	// there is no answer to read.
	_, werr := s.Write(msg)
	rt, resp, err := frame.Read(s, p.f.cfg.MaxFrame)
	reusable := stop() && werr == nil
	if err != nil {
		reset(s, codeCancelled)
		return fail(cmp.Or(werr, err))
	}
	switch rt {
	case frame.TypeResponse, frame.TypeError:
		if reusable {
			p.releaseLane(s)
		} else {
			reset(s, codeCancelled)
		}
		if rt == frame.TypeError {
			return nil, &RemoteError{Peer: p.name, Message: string(resp)}
		}
		return resp, nil
	}
	reset(s, codeBadFrame)
	return fail(fmt.Errorf("answered with a %s frame", rt))
}

// releaseLane keeps an idle lane for the next request, or closes it when
// enough are kept.
func (p *Peer) releaseLane(s *Stream) {
	select {
	case p.lanes <- s:
	default:
		finish(s)
	}
}

// close closes the connection from our side.
func (p *Peer) close(reason string) {
	p.closedLocally.Store(true)
	p.conn.CloseWithError(codeClosing, reason)
}

// watch forgets the peer once its connection closes.
func (p *Peer) watch() {
	defer p.f.wg.Done()
	<-p.conn.Context().Done()
	p.cancel()
	cause := context.Cause(p.conn.Context())
	p.f.removePeer(p, cause)
	p.f.log.Debug("fabric: connection closed", "peer", p.name, "addr", p.addr, "cause", cause)
}

func (p *Peer) acceptStreams() {
	defer p.f.wg.Done()
	for {
		s, err := p.conn.AcceptStream(p.ctx)
		if err != nil {
			return
		}
		p.f.stats.streamsAccepted.Add(1)
		p.f.wg.Add(1)
		go p.serveStream(s)
	}
}

// serveStream dispatches an accepted stream by its first frame's type.
func (p *Peer) serveStream(s *Stream) {
	defer p.f.wg.Done()
	var hb [frame.HeaderSize]byte
	s.SetReadDeadline(time.Now().Add(headerTimeout))
	n, err := s.Peek(hb[:])
	s.SetReadDeadline(time.Time{})
	if err != nil {
		if p.ctx.Err() == nil && !(n == 0 && errors.Is(err, io.EOF)) {
			p.f.log.Warn("fabric: bad stream from peer: no frame header", "peer", p.name, "addr", p.addr,
				"stream", int64(s.StreamID()), "got_bytes", n, "err", err)
		}
		reset(s, codeBadFrame)
		return
	}
	h, err := frame.ParseHeader(hb, frame.HardMax)
	if err != nil {
		p.f.log.Warn("fabric: bad stream from peer", "peer", p.name, "addr", p.addr, "stream", int64(s.StreamID()), "err", err)
		reset(s, codeBadFrame)
		return
	}
	switch h.Type {
	case frame.TypeHello:
		if _, _, err := frame.Read(s, maxHello); err == nil {
			_ = frame.Write(s, frame.TypeHello, nil) // a failure is the dialer's to see
		}
		finish(s)
	case frame.TypeGossip:
		if h.Len != 0 {
			p.f.log.Warn("fabric: bad stream from peer: gossip stream frame with a payload", "peer", p.name, "addr", p.addr, "bytes", h.Len)
			reset(s, codeBadFrame)
			return
		}
		if _, _, err := frame.Read(s, 1); err != nil {
			reset(s, codeBadFrame)
			return
		}
		p.f.gossip.deliverStream(newStreamConn(s, p))
	case frame.TypeLane:
		if _, _, err := frame.Read(s, 1); err != nil {
			reset(s, codeBadFrame)
			return
		}
		p.serveLane(s)
	case frame.TypeGossipPacket:
		_, b, err := frame.Read(s, maxGossipPacket)
		if err != nil {
			p.f.log.Warn("fabric: bad gossip packet stream from peer", "peer", p.name, "addr", p.addr, "err", err)
			p.f.stats.gossipDropped.Add(1)
			reset(s, codeBadFrame)
			return
		}
		finish(s)
		p.f.gossip.deliverPacket(b, p)
	default:
		if rh, ok := p.f.requestHandler(h.Type); ok {
			if p.serveRequest(s, rh) {
				finish(s)
			}
			return
		}
		handler := p.f.streamHandler(h.Type)
		if handler == nil {
			p.f.log.Debug("fabric: no handler for stream", "peer", p.name, "type", h.Type.String())
			reset(s, codeNoHandler)
			return
		}
		handler(p.ctx, p.name, s)
		finish(s)
	}
}

// serveLane answers the requests on a lane, one after another, until the
// peer closes it or sends what is not a request for a handler of this
// fabric's.
func (p *Peer) serveLane(s *Stream) {
	for {
		var hb [frame.HeaderSize]byte
		n, err := s.Peek(hb[:])
		if err != nil {
			if n == 0 && errors.Is(err, io.EOF) {
				finish(s)
			} else {
				reset(s, codeBadFrame)
			}
			return
		}
		h, err := frame.ParseHeader(hb, frame.HardMax)
		if err != nil {
			p.f.log.Warn("fabric: bad request on a lane from peer", "peer", p.name, "addr", p.addr, "stream", int64(s.StreamID()), "err", err)
			reset(s, codeBadFrame)
			return
		}
		rh, ok := p.f.requestHandler(h.Type)
		if !ok {
			p.f.log.Debug("fabric: no request handler", "peer", p.name, "type", h.Type.String())
			if _, err := io.CopyN(io.Discard, s, int64(frame.HeaderSize+h.Len)); err != nil {
				reset(s, codeBadFrame)
				return
			}
			if err := frame.Write(s, frame.TypeError, []byte("no handler for "+h.Type.String()+" requests")); err != nil {
				return
			}
			continue
		}
		if !p.serveRequest(s, rh) {
			return
		}
	}
}

// serveRequest reads one request frame from s, runs its handler and writes
// the answer. It reports whether s can carry more: false after a bad or
// too large request (s is reset) or a failed write.
func (p *Peer) serveRequest(s *Stream, rh requestHandler) bool {
	typ, payload, err := frame.Read(s, rh.max)
	if err != nil {
		p.f.log.Warn("fabric: bad request from peer", "peer", p.name, "addr", p.addr, "stream", int64(s.StreamID()), "err", err)
		reset(s, codeBadFrame)
		return false
	}
	out, err := rh.h(p.ctx, p.name, payload)
	if err != nil {
		err = frame.Write(s, frame.TypeError, []byte(err.Error()))
	} else {
		err = frame.Write(s, frame.TypeResponse, out)
	}
	if err != nil {
		p.f.log.Debug("fabric: answering a request", "peer", p.name, "type", typ.String(), "err", err)
		reset(s, codeCancelled)
		return false
	}
	return true
}

// finish ends a served stream: FIN on our side, and stop reading whatever
// the peer still sends.
func finish(s *Stream) {
	s.Close()
	s.CancelRead(codeDone)
}

func reset(s *Stream, code quic.StreamErrorCode) {
	s.CancelRead(code)
	s.CancelWrite(code)
}

func (p *Peer) receiveDatagrams() {
	defer p.f.wg.Done()
	for {
		b, err := p.conn.ReceiveDatagram(p.ctx)
		if err != nil {
			return
		}
		p.f.stats.datagramsReceived.Add(1)
		if len(b) == 0 {
			continue
		}
		switch b[0] {
		case dgGossip:
			p.f.gossip.deliverPacket(b[1:], p)
		case dgApp:
			if h := p.f.datagramHandler(); h != nil {
				h(p.name, b[1:])
			}
		}
	}
}

// sendGossip queues one memberlist packet for the peer, or drops it (as UDP
// would) when the peer's queue is full. node is the memberlist name the
// packet is for, checked against the peer's certificate when known.
func (p *Peer) sendGossip(b []byte, node string) error {
	if node != "" && node != p.name {
		return fmt.Errorf("fabric: memberlist node %q is at %s, whose certificate names %q", node, p.addr, p.name)
	}
	buf := make([]byte, 1+len(b))
	buf[0] = dgGossip
	copy(buf[1:], b)
	select {
	case p.gossip <- buf:
		return nil
	default:
		p.f.stats.gossipDropped.Add(1)
		return fmt.Errorf("fabric: gossip to %s dropped: %d packets waiting", p.name, gossipQueue)
	}
}

func (p *Peer) sendGossipLoop() {
	defer p.f.wg.Done()
	for {
		select {
		case <-p.ctx.Done():
			return
		case buf := <-p.gossip:
			if err := p.writeGossip(buf); err != nil {
				p.f.log.Debug("fabric: gossip packet not sent", "peer", p.name, "err", err)
			}
		}
	}
}

// writeGossip sends a queued packet: as a datagram when it fits, as a
// TypeGossipPacket stream when it does not.
func (p *Peer) writeGossip(buf []byte) error {
	err := p.conn.SendDatagram(buf)
	if _, ok := errors.AsType[*quic.DatagramTooLargeError](err); !ok {
		if err == nil {
			p.f.stats.datagramsSent.Add(1)
			p.f.stats.gossipSent.Add(1)
		}
		return err
	}
	s, err := p.conn.OpenStream()
	if err != nil {
		return err
	}
	p.f.stats.streamsOpened.Add(1)
	p.f.stats.gossipSent.Add(1)
	s.SetWriteDeadline(time.Now().Add(time.Second))
	err = frame.Write(s, frame.TypeGossipPacket, buf[1:])
	s.CancelRead(codeDone)
	if err != nil {
		s.CancelWrite(codeCancelled)
		return err
	}
	return s.Close()
}

// Certificate returns the leaf certificate the peer presented.
func (p *Peer) Certificate() *x509.Certificate {
	if certs := p.conn.ConnectionState().TLS.PeerCertificates; len(certs) > 0 {
		return certs[0]
	}
	return nil
}

// PeerCertificate returns the certificate presented on a live connection
// with the named node, if there is one.
func (f *Fabric) PeerCertificate(node string) (*x509.Certificate, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p := range f.all {
		if p.name == node && p.ctx.Err() == nil {
			if c := p.Certificate(); c != nil {
				return c, true
			}
		}
	}
	return nil, false
}
