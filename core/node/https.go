package node

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/celluster/celluster/core/ingress"
)

// httpsListeners are the HTTPS ingress's sockets: TCP for HTTP/1.1 and
// HTTP/2, UDP on the same port for HTTP/3.
type httpsListeners struct {
	tcp   net.Listener
	udp   net.PacketConn
	certs *ingress.Certs
}

func (h *httpsListeners) close() {
	if h == nil {
		return
	}
	h.tcp.Close()
	h.udp.Close()
}

// listenHTTPS loads the certificate and opens --https on TCP and UDP, one
// port for both (with port 0, a port free for both is picked).
func (n *Node) listenHTTPS() (*httpsListeners, error) {
	if n.cfg.HTTPSAddr == "" {
		return nil, nil
	}
	if n.cfg.TLSCert == "" || n.cfg.TLSKey == "" {
		return nil, errors.New("--https needs --tls-cert and --tls-key")
	}
	certs, err := ingress.LoadCerts(n.cfg.TLSCert, n.cfg.TLSKey, n.log)
	if err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(n.cfg.HTTPSAddr)
	if err != nil {
		return nil, fmt.Errorf("--https %s: %w", n.cfg.HTTPSAddr, err)
	}
	tries := 1
	if port == "0" {
		tries = 20 // the TCP port picked may be taken on UDP
	}
	for i := 0; ; i++ {
		tl, err := net.Listen("tcp", n.cfg.HTTPSAddr)
		if err != nil {
			return nil, fmt.Errorf("ingress HTTPS: listening on %s: %w", n.cfg.HTTPSAddr, err)
		}
		addr := net.JoinHostPort(host, fmt.Sprint(tl.Addr().(*net.TCPAddr).Port))
		ul, err := net.ListenPacket("udp", addr)
		if err == nil {
			return &httpsListeners{tcp: tl, udp: ul, certs: certs}, nil
		}
		tl.Close()
		if i+1 >= tries {
			return nil, fmt.Errorf("ingress HTTP/3: listening on UDP %s: %w", addr, err)
		}
	}
}

// serveHTTPS serves the HTTPS ingress and follows its certificate files
// until ctx ends.
func (n *Node) serveHTTPS(ctx context.Context, ing *ingress.Server, h *httpsListeners, errc chan<- error) {
	go h.certs.Watch(ctx)
	go func() { errc <- ing.ServeTLS(h.tcp, h.udp, h.certs) }()
}
