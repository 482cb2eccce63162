package identity

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Credentials are a node's private key and certificate chain (leaf first),
// renewable in place: TLS configs built on them (ServerConfig, ClientConfig)
// ask for the certificate on every handshake, so Renew affects new
// handshakes and leaves established connections alone. Safe for concurrent
// use.
type Credentials struct {
	key crypto.Signer
	cur atomic.Pointer[credState]
}

// credState is one chain; it is replaced whole, never modified.
type credState struct {
	cert *tls.Certificate // nil if err != nil
	err  error            // why the chain given to NewCredentials is unusable
}

// NewCredentials returns credentials for key and chain (leaf first, the
// leaf certifying key.Public()). A chain that is empty or belongs to another
// key makes every handshake fail with an error saying so, until Renew is
// given a good chain.
func NewCredentials(key crypto.Signer, chain []*x509.Certificate) *Credentials {
	c := &Credentials{key: key}
	cert, err := tlsCertificate(key, chain)
	if err != nil {
		c.cur.Store(&credState{err: fmt.Errorf("identity: credentials: %w", err)})
	} else {
		c.cur.Store(&credState{cert: cert})
	}
	return c
}

// Renew replaces the chain (leaf first, certifying the same key). It
// refuses, keeping the current chain, if the chain is empty or for another
// key.
func (c *Credentials) Renew(chain []*x509.Certificate) error {
	cert, err := tlsCertificate(c.key, chain)
	if err != nil {
		return fmt.Errorf("identity: renewing credentials: %w", err)
	}
	c.cur.Store(&credState{cert: cert})
	return nil
}

// GetCertificate returns the current certificate; it has the signature of
// tls.Config.GetCertificate.
func (c *Credentials) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s := c.cur.Load()
	return s.cert, s.err
}

// GetClientCertificate returns the current certificate; it has the
// signature of tls.Config.GetClientCertificate.
func (c *Credentials) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	s := c.cur.Load()
	return s.cert, s.err
}

// Key returns the private key.
func (c *Credentials) Key() crypto.Signer { return c.key }

// Leaf returns the current leaf certificate, or nil if there is no usable
// chain. Callers must not modify it.
func (c *Credentials) Leaf() *x509.Certificate {
	if s := c.cur.Load(); s.cert != nil {
		return s.cert.Leaf
	}
	return nil
}

// NotAfter returns when the current leaf certificate expires (the zero time
// if there is no usable chain).
func (c *Credentials) NotAfter() time.Time {
	if l := c.Leaf(); l != nil {
		return l.NotAfter
	}
	return time.Time{}
}

// NeedsRenewal reports whether, at now, the current leaf is past two thirds
// of its lifetime (NotBefore to NotAfter) — or there is no usable chain.
func (c *Credentials) NeedsRenewal(now time.Time) bool {
	l := c.Leaf()
	if l == nil {
		return true
	}
	life := l.NotAfter.Sub(l.NotBefore)
	return !now.Before(l.NotBefore.Add(life / 3 * 2))
}

func tlsCertificate(key crypto.Signer, chain []*x509.Certificate) (*tls.Certificate, error) {
	switch {
	case key == nil:
		return nil, errors.New("no private key")
	case len(chain) == 0 || chain[0] == nil:
		return nil, errors.New("no certificate")
	case !samePublicKey(chain[0].PublicKey, key.Public()):
		return nil, fmt.Errorf("certificate (serial %x) is for another key", chain[0].SerialNumber)
	}
	raw := make([][]byte, len(chain))
	for i, c := range chain {
		if c == nil {
			return nil, fmt.Errorf("chain entry %d is nil", i)
		}
		raw[i] = c.Raw
	}
	return &tls.Certificate{Certificate: raw, PrivateKey: key, Leaf: chain[0]}, nil
}
