package fabric

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/celluster/celluster/core/fabric/frame"
)

// joinTimeout bounds a join connection, from accept to answer.
const joinTimeout = 30 * time.Second

// serveJoin answers the one TypeJoin request of a certificate-less
// connection, then closes it.
func (f *Fabric) serveJoin(conn *quic.Conn) {
	ctx, cancel := context.WithTimeout(f.ctx, joinTimeout)
	defer cancel()
	defer conn.CloseWithError(0, "join answered")
	s, err := conn.AcceptStream(ctx)
	if err != nil {
		return
	}
	defer s.Close()
	answer := func(typ frame.Type, b []byte) {
		_ = frame.Write(s, typ, b)
		// Closing now could discard the answer in flight: wait for the
		// joiner to read it and hang up (bounded by the join timeout).
		select {
		case <-conn.Context().Done():
		case <-ctx.Done():
		}
	}
	typ, req, err := frame.Read(s, 64<<10)
	if err != nil || typ != frame.TypeJoin {
		f.log.Warn("fabric: malformed join", "addr", conn.RemoteAddr().String(), "type", typ, "err", err)
		answer(frame.TypeError, []byte("a join connection carries one join request"))
		return
	}
	resp, err := f.cfg.Join(ctx, req)
	if err != nil {
		f.log.Warn("fabric: join refused", "addr", conn.RemoteAddr().String(), "reason", err.Error())
		answer(frame.TypeError, []byte(err.Error()))
		return
	}
	f.log.Info("fabric: answered a join", "addr", conn.RemoteAddr().String())
	answer(frame.TypeResponse, resp)
}

// RequestJoin asks the node at addr, over a certificate-less connection
// from a temporary socket, to answer a join request. tlsConf must verify
// the server (the joiner's only trust anchor is what its join token
// names); its NextProtos are set to JoinALPN.
func RequestJoin(ctx context.Context, addr string, tlsConf *tls.Config, request []byte) ([]byte, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("fabric: join %s: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, fmt.Errorf("fabric: join %s: %w", addr, err)
	}
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()
	defer udp.Close()
	c := tlsConf.Clone()
	c.NextProtos = []string{JoinALPN}
	c.MinVersion = tls.VersionTLS13
	conn, err := tr.Dial(ctx, raddr, c, quicConfig(0))
	if err != nil {
		return nil, fmt.Errorf("fabric: join %s: %w", addr, err)
	}
	defer conn.CloseWithError(0, "joined")
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("fabric: join %s: %w", addr, err)
	}
	if err := frame.Write(s, frame.TypeJoin, request); err != nil {
		return nil, fmt.Errorf("fabric: join %s: %w", addr, err)
	}
	s.Close()
	typ, resp, err := frame.Read(s, frame.DefaultMax)
	if err != nil {
		return nil, fmt.Errorf("fabric: join %s: reading the answer: %w", addr, err)
	}
	if typ == frame.TypeError {
		return nil, &RemoteError{Peer: addr, Message: string(resp)}
	}
	if typ != frame.TypeResponse {
		return nil, fmt.Errorf("fabric: join %s: answered with a %s frame", addr, typ)
	}
	return resp, nil
}
