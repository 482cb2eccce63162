package ingress

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Certs is the ingress's TLS certificate, loaded from a PEM certificate
// chain and key and loaded again when either file changes. A change that
// does not load (a half-written file, a key that does not match) is
// logged and the certificate in use stays.
type Certs struct {
	certFile, keyFile string
	log               *slog.Logger
	cur               atomic.Pointer[tls.Certificate]
}

// LoadCerts loads the certificate chain and key; the error says which
// file and why.
func LoadCerts(certFile, keyFile string, log *slog.Logger) (*Certs, error) {
	c := &Certs{certFile: certFile, keyFile: keyFile, log: log}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Certs) load() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("ingress TLS: loading --tls-cert %s and --tls-key %s: %w", c.certFile, c.keyFile, err)
	}
	if cert.Leaf == nil && len(cert.Certificate) > 0 {
		if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
			cert.Leaf = leaf
		}
	}
	// One signature before the key is shared: it proves the key signs,
	// and it fills crypto/ecdsa's per-key cache here, once, rather than
	// in two handshakes at once (TLS and QUIC), which race on it.
	if signer, ok := cert.PrivateKey.(crypto.Signer); ok {
		digest := sha256.Sum256([]byte("celluster ingress key check"))
		if _, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			return fmt.Errorf("ingress TLS: the key in --tls-key %s cannot sign: %w", c.keyFile, err)
		}
	}
	c.cur.Store(&cert)
	return nil
}

// GetCertificate is a tls.Config.GetCertificate: the certificate in use.
func (c *Certs) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// Leaf returns the certificate in use, parsed.
func (c *Certs) Leaf() *x509.Certificate { return c.cur.Load().Leaf }

// certSettle is how long the files must be left alone after a change
// before they are loaded again (a renewal writes two files).
const certSettle = 200 * time.Millisecond

// Watch loads the files again whenever they change, until ctx ends.
func (c *Certs) Watch(ctx context.Context) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		c.log.Error("cannot watch the TLS certificate files; a renewed certificate needs a restart", "err", err)
		return
	}
	defer fw.Close()
	dirs := map[string]bool{filepath.Dir(c.certFile): true, filepath.Dir(c.keyFile): true}
	for d := range dirs {
		if err := fw.Add(d); err != nil {
			c.log.Error("cannot watch the TLS certificate files; a renewed certificate needs a restart", "dir", d, "err", err)
			return
		}
	}
	names := map[string]bool{filepath.Clean(c.certFile): true, filepath.Clean(c.keyFile): true}
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-fw.Events:
			if !ok {
				return
			}
			if names[filepath.Clean(ev.Name)] {
				settle.Reset(certSettle)
			}
		case err, ok := <-fw.Errors:
			if !ok {
				return
			}
			c.log.Warn("watching the TLS certificate files", "err", err)
		case <-settle.C:
			if err := c.load(); err != nil {
				c.log.Error("the TLS certificate files changed but do not load; the certificate in use stays", "err", err)
				continue
			}
			leaf := c.Leaf()
			c.log.Info("TLS certificate reloaded", "subject", leaf.Subject.String(), "not_after", leaf.NotAfter, "serial", leaf.SerialNumber.String())
		}
	}
}
