package fabric

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/quic-go/quic-go"
)

// connInfoKey keys the *connInfo that the transport's ConnContext puts into
// every accepted connection's context, where the handshake finds it through
// tls.ClientHelloInfo.Context.
type connInfoKey struct{}

// connInfo is what a server-side handshake knows about the connection.
type connInfo struct {
	remote net.Addr
}

func (f *Fabric) connContext(ctx context.Context, ci *quic.ClientInfo) (context.Context, error) {
	return context.WithValue(ctx, connInfoKey{}, &connInfo{remote: ci.RemoteAddr}), nil
}

// listenTLS is the configuration handed to quic-go: every handshake gets a
// fresh configuration from Config.TLSServer.
func (f *Fabric) listenTLS() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{ALPN},
		GetConfigForClient: f.configForClient,
	}
}

func (f *Fabric) configForClient(chi *tls.ClientHelloInfo) (*tls.Config, error) {
	var remote net.Addr
	if info, ok := chi.Context().Value(connInfoKey{}).(*connInfo); ok {
		remote = info.remote
	}
	if f.cfg.JoinTLS != nil && f.cfg.Join != nil && slices.Contains(chi.SupportedProtos, JoinALPN) {
		jc := f.cfg.JoinTLS().Clone()
		jc.MinVersion = tls.VersionTLS13
		jc.NextProtos = []string{JoinALPN}
		jc.ClientAuth = tls.NoClientCert
		jc.GetConfigForClient = nil
		jc.SessionTicketsDisabled = true
		return jc, nil
	}
	base := f.cfg.TLSServer()
	if err := checkServerTLS(base); err != nil {
		f.log.Error("fabric: refused peer", "addr", addrString(remote), "reason", err.Error())
		return nil, err
	}
	c := base.Clone()
	c.MinVersion = tls.VersionTLS13
	c.NextProtos = []string{ALPN}
	c.GetConfigForClient = nil
	c.SessionTicketsDisabled = true
	vpc, vc := c.VerifyPeerCertificate, c.VerifyConnection
	c.VerifyPeerCertificate = nil
	if c.ClientAuth == tls.RequireAndVerifyClientCert {
		// Verify the chain here rather than in crypto/tls, which would reject
		// a bad chain before any hook could log why.
		roots, now := c.ClientCAs, c.Time
		c.ClientAuth = tls.RequireAnyClientCert
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			chains, err := verifyClientChain(cs.PeerCertificates, roots, now)
			if err == nil {
				cs.VerifiedChains = chains
				err = runHooks(cs, chains, vpc, vc)
			}
			return f.refused(remote, cs.PeerCertificates, err)
		}
	} else { // RequireAnyClientCert with hooks (checkServerTLS)
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			return f.refused(remote, cs.PeerCertificates, runHooks(cs, nil, vpc, vc))
		}
	}
	return c, nil
}

// dialTLS is the configuration for one dial to remote.
func (f *Fabric) dialTLS(remote string) (*tls.Config, error) {
	base := f.cfg.TLSClient()
	if err := checkClientTLS(base); err != nil {
		return nil, err
	}
	c := base.Clone()
	c.MinVersion = tls.VersionTLS13
	c.NextProtos = []string{ALPN}
	c.ClientSessionCache = nil
	if vc := c.VerifyConnection; vc != nil {
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			return f.refused(remoteAddr(remote), cs.PeerCertificates, vc(cs))
		}
	}
	return c, nil
}

// runHooks runs a configuration's own verification hooks, in the order
// crypto/tls would.
func runHooks(cs tls.ConnectionState, chains [][]*x509.Certificate, vpc func([][]byte, [][]*x509.Certificate) error, vc func(tls.ConnectionState) error) error {
	if vpc != nil {
		raw := make([][]byte, len(cs.PeerCertificates))
		for i, c := range cs.PeerCertificates {
			raw[i] = c.Raw
		}
		if err := vpc(raw, chains); err != nil {
			return err
		}
	}
	if vc != nil {
		return vc(cs)
	}
	return nil
}

// refused logs a refusal (err != nil) with the peer's address, the identity
// its certificate claims and the reason, and returns err.
func (f *Fabric) refused(remote net.Addr, certs []*x509.Certificate, err error) error {
	if err != nil {
		f.log.Warn("fabric: refused peer", "addr", addrString(remote), "claimed", claimedID(certs), "reason", err.Error())
	}
	return err
}

// identify runs Config.VerifyPeer on a connection whose handshake
// completed, and returns the peer's node name.
func (f *Fabric) identify(conn *quic.Conn) (string, error) {
	cs := conn.ConnectionState().TLS
	name, err := f.cfg.VerifyPeer(cs)
	if err == nil && name == "" {
		err = errors.New("VerifyPeer returned an empty node name")
	}
	return name, f.refused(conn.RemoteAddr(), cs.PeerCertificates, err)
}

// verifyClientChain is the client-certificate check crypto/tls performs for
// ClientAuth RequireAndVerifyClientCert.
func verifyClientChain(certs []*x509.Certificate, roots *x509.CertPool, now func() time.Time) ([][]*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, errors.New("peer sent no certificate")
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		CurrentTime:   time.Now(),
	}
	if now != nil {
		opts.CurrentTime = now()
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	chains, err := certs[0].Verify(opts)
	if err != nil {
		return nil, fmt.Errorf("peer certificate: %w", err)
	}
	return chains, nil
}

// checkServerTLS refuses a server configuration that does not verify client
// certificates.
func checkServerTLS(c *tls.Config) error {
	switch {
	case c == nil:
		return errors.New("fabric: TLSServer returned nil")
	case c.GetConfigForClient != nil:
		return errors.New("fabric: server TLS config must not set GetConfigForClient (TLSServer is called for every handshake instead)")
	case c.ClientAuth == tls.RequireAndVerifyClientCert:
		return nil
	case c.ClientAuth == tls.RequireAnyClientCert && (c.VerifyPeerCertificate != nil || c.VerifyConnection != nil):
		return nil
	}
	return fmt.Errorf("fabric: server TLS config must require and verify client certificates (ClientAuth %s)", c.ClientAuth)
}

// checkClientTLS refuses a client configuration that would accept any
// server.
func checkClientTLS(c *tls.Config) error {
	switch {
	case c == nil:
		return errors.New("fabric: TLSClient returned nil")
	case c.InsecureSkipVerify && c.VerifyPeerCertificate == nil && c.VerifyConnection == nil:
		return errors.New("fabric: client TLS config skips verification and has no verification hook")
	case c.Certificates == nil && c.GetClientCertificate == nil:
		return errors.New("fabric: client TLS config has no client certificate")
	}
	return nil
}

// claimedID is the identity a peer's leaf certificate claims (its URI SANs),
// for logs; it is not verified.
func claimedID(certs []*x509.Certificate) string {
	if len(certs) == 0 {
		return "(no certificate)"
	}
	uris := make([]string, len(certs[0].URIs))
	for i, u := range certs[0].URIs {
		uris[i] = u.String()
	}
	if len(uris) == 0 {
		return "(no URI SAN) " + certs[0].Subject.String()
	}
	return strings.Join(uris, ",")
}

type remoteAddr string

func (a remoteAddr) Network() string { return "udp" }
func (a remoteAddr) String() string  { return string(a) }

func addrString(a net.Addr) string {
	if a == nil {
		return "?"
	}
	return a.String()
}
