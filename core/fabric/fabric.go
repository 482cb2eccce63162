package fabric

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/quic-go/quic-go"

	"github.com/celluster/celluster/core/fabric/frame"
)

// ALPN is the application protocol every fabric handshake negotiates.
const ALPN = "celluster/1"

// DefaultDialTimeout bounds a connection attempt (QUIC handshake plus the
// hello exchange) when Config.DialTimeout is zero.
const DefaultDialTimeout = 5 * time.Second

// Stream is a bidirectional QUIC stream to a peer. Close ends the write
// direction (the peer reads io.EOF); CancelRead and CancelWrite abort one
// direction. Read and Write may be used from different goroutines; Close must
// not run concurrently with Write.
type Stream = quic.Stream

// StreamHandler serves a stream a peer opened. peer is the peer's verified
// node name. The stream's first frame is still unread: read it with
// frame.Read. ctx ends when the connection or the fabric closes. When the
// handler returns, the fabric closes the stream; the handler must not keep
// it.
type StreamHandler func(ctx context.Context, peer string, s *Stream)

// RequestHandler answers one request a peer sent with Peer.Request. peer is
// the peer's verified node name and payload the request frame's payload.
// The answer goes back as a frame.TypeResponse; an error as a
// frame.TypeError carrying its message, which the peer sees (say what
// failed, not host paths). ctx ends when the connection or the fabric
// closes.
type RequestHandler func(ctx context.Context, peer string, payload []byte) ([]byte, error)

// requestHandler is a RequestHandler with the largest request it takes.
type requestHandler struct {
	max int
	h   RequestHandler
}

// DatagramHandler receives a datagram a peer sent. It runs on the
// connection's receive loop, so it must not block; b is the handler's to
// keep.
type DatagramHandler func(peer string, b []byte)

// ErrClosed is returned by calls on a Fabric that has been closed.
var ErrClosed = errors.New("fabric: closed")

// Config configures a Fabric.
type Config struct {
	// Addr is the UDP address to listen on, e.g. "127.0.0.1:0".
	Addr string
	// Advertise is the address peers reach this node at. Empty means the
	// bound address, which then must not be an unspecified IP (0.0.0.0, ::).
	Advertise string
	// Node is this node's name. Membership gossips it, and peers refuse
	// gossip that puts a name at an address whose certificate names another
	// node, so it must be the name in this node's certificate.
	Node string
	// TLSServer returns the configuration for connections peers open to us
	// (identity.ServerConfig). It is called for every handshake. It must
	// require a client certificate and verify it: ClientAuth
	// RequireAndVerifyClientCert, or RequireAnyClientCert with a
	// VerifyPeerCertificate or VerifyConnection hook.
	TLSServer func() *tls.Config
	// TLSClient returns the configuration for connections we open
	// (identity.ClientConfig). It is called for every dial. With
	// InsecureSkipVerify it must carry a VerifyPeerCertificate or
	// VerifyConnection hook that verifies the chain.
	TLSClient func() *tls.Config
	// VerifyPeer returns the node name of the peer of a completed, verified
	// handshake, or an error that refuses the peer (identity.PeerNode with
	// the trust domain). It runs after every handshake, on both sides; a
	// refusal closes the connection with application error 1 ("certificate
	// refused"). On connections accepted under RequireAndVerifyClientCert,
	// cs.VerifiedChains is empty (see the package comment).
	VerifyPeer func(cs tls.ConnectionState) (node string, err error)
	// Logger receives the fabric's and memberlist's logs. Nil means
	// slog.Default().
	Logger *slog.Logger
	// DialTimeout bounds a connection attempt; zero means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// KeepAlivePeriod, when positive, makes every connection send a QUIC
	// keep-alive after that long without sending anything (for a path
	// through NAT or a stateful firewall). Zero, the default, sends none:
	// keep-alives cost each node packets in proportion to its
	// connections, see the package comment.
	KeepAlivePeriod time.Duration
	// MaxFrame limits the frames the fabric reads for its callers (the
	// response of Peer.Request); zero means frame.DefaultMax.
	MaxFrame int
	// Membership configures failure detection, node metadata and member
	// events.
	Membership Membership
	// JoinTLS and Join, when both set, serve nodes that have no
	// certificate yet: a connection offering ALPN JoinALPN gets JoinTLS (no
	// client certificate asked) and may make one TypeJoin request, which
	// Join answers (e.g. a join token and a CSR in, a certificate out).
	// Such a connection is never a peer.
	JoinTLS func() *tls.Config
	Join    func(ctx context.Context, request []byte) ([]byte, error)
}

// JoinALPN is the protocol of a certificate-less join connection.
const JoinALPN = "celluster-join/1"

// Fabric is one node's endpoint: a UDP socket, the QUIC connections to its
// peers, the stream and datagram handlers, and the node's memberlist.
type Fabric struct {
	cfg       Config
	log       *slog.Logger
	ctx       context.Context
	cancel    context.CancelFunc
	udp       *net.UDPConn
	tr        *quic.Transport
	ln        *quic.Listener
	qconf     *quic.Config
	advertise *net.UDPAddr

	mu          sync.Mutex
	closed      bool
	peers       map[string]*Peer // by remote address: the connection new work uses
	all         map[*Peer]struct{}
	dials       map[string]*dialCall
	unreachable map[string]error // remote address -> why the last connection ended or dial failed

	hmu     sync.RWMutex
	streams map[frame.Type]StreamHandler
	// requests holds the request handlers (HandleRequest).
	requests map[frame.Type]requestHandler
	dgram    DatagramHandler

	gossip *gossipTransport
	ml     *memberlist.Memberlist
	// catchUpOnce starts the pulls after the first successful join.
	catchUpOnce sync.Once
	members     *memberView
	events      *eventQueue

	stats counters

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// maxIdleTimeout closes a connection that carried nothing for this long.
const maxIdleTimeout = 60 * time.Second

// quicConfig is shared by every connection, dialed or accepted.
func quicConfig(keepAlive time.Duration) *quic.Config {
	return &quic.Config{
		EnableDatagrams:       true,
		MaxIncomingStreams:    1024,
		MaxIncomingUniStreams: -1,
		// No keep-alives: they would cost every node packets in proportion
		// to its connections, so N² for the cluster. Memberlist's probes
		// keep a connection open while its peer is probed at least once
		// per MaxIdleTimeout; one that goes idle closes and is dialed
		// again on demand (see the package comment).
		KeepAlivePeriod: max(0, keepAlive),
		MaxIdleTimeout:  maxIdleTimeout,
	}
}

// Listen binds cfg.Addr and starts serving peers and membership. The fabric
// lives until Close is called or ctx is done, whichever comes first; handler
// contexts derive from ctx.
func Listen(ctx context.Context, cfg Config) (*Fabric, error) {
	return listen(ctx, cfg, true)
}

// listen is Listen; tests of the gossip transport start no memberlist, so
// they can read the transport's packets themselves.
func listen(ctx context.Context, cfg Config, membership bool) (*Fabric, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = frame.DefaultMax
	}
	cfg.Membership = cfg.Membership.withDefaults()

	laddr, err := net.ResolveUDPAddr("udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("fabric: listen address %q: %w", cfg.Addr, err)
	}
	udp, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("fabric: listen on %s: %w", cfg.Addr, err)
	}
	advertise := udp.LocalAddr().(*net.UDPAddr)
	if cfg.Advertise != "" {
		if advertise, err = net.ResolveUDPAddr("udp", cfg.Advertise); err != nil {
			udp.Close()
			return nil, fmt.Errorf("fabric: advertise address %q: %w", cfg.Advertise, err)
		}
	}
	if advertise.IP == nil || advertise.IP.IsUnspecified() || advertise.Port == 0 {
		udp.Close()
		return nil, fmt.Errorf("fabric: cannot advertise %s to peers; set Config.Advertise", advertise)
	}

	fctx, cancel := context.WithCancel(ctx)
	f := &Fabric{
		cfg:         cfg,
		log:         cfg.Logger.With("node", cfg.Node),
		ctx:         fctx,
		cancel:      cancel,
		udp:         udp,
		qconf:       quicConfig(cfg.KeepAlivePeriod),
		advertise:   advertise,
		peers:       make(map[string]*Peer),
		all:         make(map[*Peer]struct{}),
		dials:       make(map[string]*dialCall),
		unreachable: make(map[string]error),
		streams:     make(map[frame.Type]StreamHandler),
		requests:    make(map[frame.Type]requestHandler),
		members:     newMemberView(),
	}
	f.events = newEventQueue(f.ctx, cfg.Membership)
	f.gossip = newGossipTransport(f)
	f.tr = &quic.Transport{Conn: udp, ConnContext: f.connContext}
	f.ln, err = f.tr.Listen(f.listenTLS(), f.qconf)
	if err != nil {
		f.tr.Close()
		udp.Close()
		cancel()
		return nil, fmt.Errorf("fabric: listen on %s: %w", udp.LocalAddr(), err)
	}
	f.wg.Add(2)
	go f.acceptLoop()
	go func() {
		defer f.wg.Done()
		f.events.run()
	}()

	if membership {
		if f.ml, err = memberlist.Create(f.memberlistConfig()); err != nil {
			f.Close()
			return nil, fmt.Errorf("fabric: start membership: %w", err)
		}
	}
	context.AfterFunc(fctx, func() { f.Close() })
	f.log.Info("fabric: listening", "addr", udp.LocalAddr().String(), "advertise", advertise.String())
	return f, nil
}

func (c *Config) check() error {
	switch {
	case c.Node == "":
		return errors.New("fabric: Config.Node is empty")
	case c.TLSServer == nil || c.TLSClient == nil:
		return errors.New("fabric: Config.TLSServer and Config.TLSClient are required")
	case c.VerifyPeer == nil:
		return errors.New("fabric: Config.VerifyPeer is required")
	}
	if err := checkServerTLS(c.TLSServer()); err != nil {
		return err
	}
	return checkClientTLS(c.TLSClient())
}

// Addr returns the UDP address the fabric listens on.
func (f *Fabric) Addr() net.Addr { return f.udp.LocalAddr() }

// Node returns this node's name.
func (f *Fabric) Node() string { return f.cfg.Node }

// HandleStream registers h for streams whose first frame has type typ,
// replacing any earlier handler for typ. Types the fabric reserves for
// itself (typ.Reserved()) cannot be handled; HandleStream panics on them, as
// on a nil handler.
func (f *Fabric) HandleStream(typ frame.Type, h StreamHandler) {
	if typ.Reserved() {
		panic(fmt.Sprintf("fabric: HandleStream: type %s is reserved for the fabric", typ))
	}
	if h == nil {
		panic("fabric: HandleStream: nil handler")
	}
	f.hmu.Lock()
	delete(f.requests, typ)
	f.streams[typ] = h
	f.hmu.Unlock()
}

// HandleRequest registers h for requests of type typ whose payload is at
// most max bytes (frame.DefaultMax when max <= 0), replacing any earlier
// handler for typ, stream handlers included. Requests arrive on lanes
// (streams that carry one request after another, see Peer.Request) or, from
// a peer that opens a stream per request, on their own stream; h serves
// both. A larger request is refused: its lane or stream is reset. Types the
// fabric reserves, and frame.TypeResponse and frame.TypeError, cannot be
// handled; HandleRequest panics on them, as on a nil handler.
func (f *Fabric) HandleRequest(typ frame.Type, max int, h RequestHandler) {
	if typ.Reserved() || typ == frame.TypeResponse || typ == frame.TypeError {
		panic(fmt.Sprintf("fabric: HandleRequest: type %s cannot be a request", typ))
	}
	if h == nil {
		panic("fabric: HandleRequest: nil handler")
	}
	f.hmu.Lock()
	delete(f.streams, typ)
	f.requests[typ] = requestHandler{max: max, h: h}
	f.hmu.Unlock()
}

// HandleDatagram sets the handler for datagrams peers send with
// Peer.SendDatagram, replacing any earlier one. Datagrams that arrive while
// no handler is set are dropped.
func (f *Fabric) HandleDatagram(h DatagramHandler) {
	f.hmu.Lock()
	f.dgram = h
	f.hmu.Unlock()
}

func (f *Fabric) streamHandler(typ frame.Type) StreamHandler {
	f.hmu.RLock()
	defer f.hmu.RUnlock()
	return f.streams[typ]
}

func (f *Fabric) requestHandler(typ frame.Type) (requestHandler, bool) {
	f.hmu.RLock()
	defer f.hmu.RUnlock()
	h, ok := f.requests[typ]
	return h, ok
}

func (f *Fabric) datagramHandler() DatagramHandler {
	f.hmu.RLock()
	defer f.hmu.RUnlock()
	return f.dgram
}

// dialCall is one connection attempt, shared by everyone who asks for the
// same address while it runs. pending holds memberlist packets to send once
// it succeeds.
type dialCall struct {
	done    chan struct{}
	peer    *Peer
	err     error
	pending []pendingPacket
}

type pendingPacket struct {
	buf  []byte
	node string // the memberlist node name the packet is for, if known
}

// maxPending bounds the memberlist packets queued behind one dial.
const maxPending = 64

// Dial returns a connection to the node listening at addr, reusing the
// existing one if there is one (ours or one the peer opened to us). A new
// connection's handshake verifies the peer (Config.VerifyPeer) and waits for
// the peer to accept our certificate; a refusal by either side is an error
// that says why. The attempt is shared by concurrent callers and bounded by
// Config.DialTimeout; Dial itself returns early when ctx is done. A Peer
// stays valid until its connection closes; Dial again after that.
func (f *Fabric) Dial(ctx context.Context, addr string) (*Peer, error) {
	key, raddr, err := resolve(addr)
	if err != nil {
		return nil, err
	}
	if key == f.advertise.String() {
		return nil, fmt.Errorf("fabric: dial %s: that is this node", addr)
	}
	f.mu.Lock()
	p, call, err := f.peerOrDialLocked(key, raddr)
	f.mu.Unlock()
	if err != nil || p != nil {
		return p, err
	}
	select {
	case <-call.done:
		return call.peer, call.err
	case <-ctx.Done():
		return nil, fmt.Errorf("fabric: dial %s: %w", key, context.Cause(ctx))
	}
}

func resolve(addr string) (string, *net.UDPAddr, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("fabric: dial %q: %w", addr, err)
	}
	return raddr.String(), raddr, nil
}

// peerOrDialLocked returns the live connection to key, or the dial that is
// (now) under way to it. f.mu must be held.
func (f *Fabric) peerOrDialLocked(key string, raddr *net.UDPAddr) (*Peer, *dialCall, error) {
	if f.closed {
		return nil, nil, ErrClosed
	}
	if p := f.peers[key]; p != nil && p.ctx.Err() == nil {
		return p, nil, nil
	}
	if call := f.dials[key]; call != nil {
		return nil, call, nil
	}
	call := &dialCall{done: make(chan struct{})}
	f.dials[key] = call
	f.wg.Add(1)
	go f.runDial(call, key, raddr)
	return nil, call, nil
}

func (f *Fabric) runDial(call *dialCall, key string, raddr *net.UDPAddr) {
	defer f.wg.Done()
	ctx, cancel := context.WithTimeout(f.ctx, f.cfg.DialTimeout)
	defer cancel()
	p, err := f.dial(ctx, key, raddr)

	f.mu.Lock()
	delete(f.dials, key)
	pending := call.pending
	call.pending = nil
	if err == nil {
		err = f.addPeerLocked(p)
		if err != nil {
			p.close("node closing")
			p = nil
		}
	} else {
		f.unreachable[key] = err
	}
	f.mu.Unlock()

	call.peer, call.err = p, err
	close(call.done)
	if err != nil {
		f.stats.dialFailures.Add(1)
		f.stats.gossipDropped.Add(uint64(len(pending)))
		if len(pending) > 0 {
			f.log.Debug("fabric: dropped gossip packets for unreachable peer", "addr", key, "packets", len(pending), "err", err)
		}
		return
	}
	f.stats.dials.Add(1)
	for _, pk := range pending {
		if err := p.sendGossip(pk.buf, pk.node); err != nil {
			f.log.Debug("fabric: gossip packet not sent", "peer", p.name, "err", err)
		}
	}
}

// dial opens a connection to raddr and exchanges hellos.
func (f *Fabric) dial(ctx context.Context, key string, raddr *net.UDPAddr) (*Peer, error) {
	tc, err := f.dialTLS(key)
	if err != nil {
		return nil, fmt.Errorf("fabric: dial %s: %w", key, err)
	}
	conn, err := f.tr.Dial(ctx, raddr, tc, f.qconf)
	if err != nil {
		return nil, f.describeDialError(key, err)
	}
	name, err := f.identify(conn)
	if err != nil {
		conn.CloseWithError(codeRefused, "certificate refused")
		f.countClosed(conn)
		return nil, fmt.Errorf("fabric: dial %s: refused the peer: %w", key, err)
	}
	f.stats.streamsOpened.Add(1)
	if err := hello(ctx, conn); err != nil {
		conn.CloseWithError(codeClosing, "hello failed")
		f.countClosed(conn)
		return nil, f.describeDialError(key, err)
	}
	return f.newPeer(conn, name, key), nil
}

// describeDialError turns a dial failure into an error that says which side
// refused whom, and logs refusals.
func (f *Fabric) describeDialError(key string, err error) error {
	if te, ok := errors.AsType[*quic.TransportError](err); ok && te.ErrorCode.IsCryptoError() {
		if te.Remote {
			f.log.Warn("fabric: refused by peer", "addr", key, "reason", te.Error())
			return fmt.Errorf("fabric: dial %s: peer refused the handshake: %w", key, te)
		}
		return fmt.Errorf("fabric: dial %s: refused the peer: %w", key, te)
	}
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok && ae.Remote {
		if ae.ErrorCode == codeRefused {
			f.log.Warn("fabric: refused by peer", "addr", key, "reason", ae.Error())
			return fmt.Errorf("fabric: dial %s: peer refused this node: %w", key, ae)
		}
		return fmt.Errorf("fabric: dial %s: peer closed the connection: %w", key, ae)
	}
	return fmt.Errorf("fabric: dial %s: %w", key, err)
}

// hello opens the first stream of a dialed connection and waits for the
// listener's answer, which proves the listener accepted our certificate.
func hello(ctx context.Context, conn *quic.Conn) error {
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	defer s.CancelRead(codeDone)
	stop := context.AfterFunc(ctx, func() { s.CancelRead(codeCancelled); s.CancelWrite(codeCancelled) })
	defer stop()
	if err := frame.Write(s, frame.TypeHello, nil); err != nil {
		return err
	}
	s.Close()
	typ, _, err := frame.Read(s, maxHello)
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return err
	}
	if typ != frame.TypeHello {
		return fmt.Errorf("peer answered hello with a %s frame", typ)
	}
	return nil
}

// addPeerLocked records a new connection. The first live connection to an
// address is the one new work uses; a second one (both sides dialed at
// once) is served until it closes. f.mu must be held.
func (f *Fabric) addPeerLocked(p *Peer) error {
	if f.closed {
		return ErrClosed
	}
	f.all[p] = struct{}{}
	if old := f.peers[p.addr]; old == nil || old.ctx.Err() != nil {
		f.peers[p.addr] = p
	}
	delete(f.unreachable, p.addr)
	f.wg.Add(4)
	go p.acceptStreams()
	go p.receiveDatagrams()
	go p.sendGossipLoop()
	go p.watch()
	return nil
}

// countClosed adds a connection that is not (or no longer) in f.all to
// the closed connections' packet and byte counts.
func (f *Fabric) countClosed(conn *quic.Conn) {
	cs := conn.ConnectionStats()
	f.stats.closedPacketsSent.Add(cs.PacketsSent)
	f.stats.closedPacketsReceived.Add(cs.PacketsReceived)
	f.stats.closedBytesSent.Add(cs.BytesSent)
	f.stats.closedBytesReceived.Add(cs.BytesReceived)
}

// removePeer forgets a connection that has closed.
func (f *Fabric) removePeer(p *Peer, cause error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.all[p]; ok {
		f.countClosed(p.conn)
	}
	delete(f.all, p)
	if f.peers[p.addr] == p {
		delete(f.peers, p.addr)
		if !f.closed && cause != nil && !p.closedLocally.Load() {
			f.unreachable[p.addr] = cause
		}
	}
}

// dropPeer runs when memberlist declares the node at addr dead: it forgets
// why the address was unreachable and closes the connection to it, unless
// the connection shows the node still answering. A death declared by
// mistake (a node starved for longer than the suspicion timeout) must not
// also cut the streams in flight to a node that is about to refute it: the
// fabric sends a probe datagram, which QUIC acknowledges, and keeps the
// connection when anything arrives on it within deadPeerWindow.
func (f *Fabric) dropPeer(addr string) {
	f.mu.Lock()
	p := f.peers[addr]
	delete(f.unreachable, addr)
	f.mu.Unlock()
	if p == nil || p.ctx.Err() != nil {
		return
	}
	before := p.conn.ConnectionStats().PacketsReceived
	_ = p.conn.SendDatagram([]byte{dgProbe})
	f.stats.datagramsSent.Add(1)
	select {
	case <-p.ctx.Done():
		return
	case <-time.After(deadPeerWindow):
	}
	if p.conn.ConnectionStats().PacketsReceived != before {
		f.log.Info("fabric: member declared dead still answers on its connection; keeping it", "peer", p.name, "addr", addr)
		return
	}
	p.close("declared dead")
}

// deadPeerWindow is how long dropPeer waits for a dead member's connection
// to show a sign of life.
const deadPeerWindow = time.Second

func (f *Fabric) isUnreachable(addr string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.peers[addr]; p != nil && p.ctx.Err() == nil {
		return false
	}
	_, ok := f.unreachable[addr]
	return ok
}

func (f *Fabric) peerAt(addr string) *Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.peers[addr]; p != nil && p.ctx.Err() == nil {
		return p
	}
	return nil
}

func (f *Fabric) acceptLoop() {
	defer f.wg.Done()
	for {
		conn, err := f.ln.Accept(f.ctx)
		if err != nil {
			return
		}
		if conn.ConnectionState().TLS.NegotiatedProtocol == JoinALPN {
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.serveJoin(conn)
			}()
			continue
		}
		name, err := f.identify(conn)
		if err != nil {
			conn.CloseWithError(codeRefused, "certificate refused")
			continue
		}
		p := f.newPeer(conn, name, conn.RemoteAddr().String())
		f.stats.accepts.Add(1)
		f.mu.Lock()
		err = f.addPeerLocked(p)
		f.mu.Unlock()
		if err != nil {
			p.close("node closing")
			return
		}
		f.log.Debug("fabric: accepted peer", "peer", name, "addr", p.addr)
	}
}

// Close stops the fabric without telling anyone: memberlist stops (no leave
// broadcast, so peers detect the node as failed; call Leave first for a
// graceful exit), connections close, the socket is released, and Close
// waits for the fabric's goroutines, handlers included. Close is idempotent.
func (f *Fabric) Close() error {
	f.closeOnce.Do(func() {
		f.mu.Lock()
		f.closed = true
		peers := make([]*Peer, 0, len(f.all))
		for p := range f.all {
			peers = append(peers, p)
		}
		f.mu.Unlock()

		if f.ml != nil {
			if err := f.ml.Shutdown(); err != nil {
				f.log.Warn("fabric: memberlist shutdown", "err", err)
			}
		}
		f.cancel()
		for _, p := range peers {
			p.close("node closing")
		}
		f.ln.Close()
		f.tr.Close()
		f.udp.Close()
		f.wg.Wait()
		f.log.Info("fabric: closed")
	})
	return nil
}
