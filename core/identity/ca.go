package identity

import (
	"crypto"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Files in a CA directory.
const (
	// CACertFile holds the CA certificate (PEM), the trust domain's bundle.
	CACertFile = "ca.crt"
	// CAKeyFile holds the CA private key (PEM PKCS #8, mode 0600).
	CAKeyFile = "ca.key"
	// TokensFile records the join tokens the CA issued and which were used
	// (JSON, mode 0600).
	TokensFile = "tokens.json"
)

// Defaults.
const (
	// DefaultCAValidity is how long a new CA certificate is valid (10 years).
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// DefaultNodeTTL is how long a node certificate is valid when IssueNode
	// is given no TTL.
	DefaultNodeTTL = time.Hour
	// DefaultJoinTokenTTL is how long a join token is valid when
	// NewJoinToken is given no TTL.
	DefaultJoinTokenTTL = 10 * time.Minute
	// Backdate is how far before "now" certificates start, to absorb clock
	// skew between nodes.
	Backdate = time.Minute
)

// Clock tells the time. A nil Clock means time.Now; tests pass a clock they
// control to exercise expiry and renewal.
type Clock func() time.Time

func (c Clock) now() time.Time {
	if c == nil {
		return time.Now()
	}
	return c()
}

// CAOptions configure InitCA and LoadCA. The zero value uses the defaults.
type CAOptions struct {
	// Clock is the CA's time for certificate validity and join token expiry
	// (default time.Now).
	Clock Clock
	// Validity is how long a new CA certificate is valid (default
	// DefaultCAValidity). LoadCA ignores it.
	Validity time.Duration
}

// CA is a trust domain's certificate authority: it signs node certificates
// and join tokens. It is safe for concurrent use; one CA value at a time
// should own a directory (join token bookkeeping is not locked across
// processes).
type CA struct {
	dir   string
	td    spiffeid.TrustDomain
	cert  *x509.Certificate
	key   crypto.Signer
	clock Clock

	tokenKey []byte // HMAC key for join tokens, derived from key

	mu sync.Mutex // serialises tokens.json read-modify-write
}

// InitCA creates a new CA for td in dir: an ECDSA P-256 key and a
// self-signed CA certificate whose only URI SAN is spiffe://TD. It writes
// ca.crt (PEM) and ca.key (PEM PKCS #8, mode 0600) into dir, creating dir
// with mode 0700 if needed. It refuses to overwrite: if either file exists,
// nothing is written.
func InitCA(dir string, td spiffeid.TrustDomain, opts CAOptions) (*CA, error) {
	if td.IsZero() {
		return nil, errors.New("identity: init CA: no trust domain")
	}
	if opts.Validity < 0 {
		return nil, fmt.Errorf("identity: init CA: negative validity %s", opts.Validity)
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultCAValidity
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("identity: init CA: %s already exists; refusing to overwrite (use LoadCA)", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("identity: init CA: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity: init CA: creating %s: %w", dir, err)
	}

	key, err := NewKey()
	if err != nil {
		return nil, fmt.Errorf("identity: init CA: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("identity: init CA: %w", err)
	}
	now := opts.Clock.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Celluster"}, CommonName: "Celluster CA " + td.Name()},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(opts.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // node certificates are signed directly
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("identity: init CA: signing CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("identity: init CA: parsing CA certificate: %w", err)
	}
	keyPEM, err := marshalKey(key)
	if err != nil {
		return nil, fmt.Errorf("identity: init CA: %w", err)
	}
	// The key first: a CA certificate without its key is useless, a key
	// without its certificate is cleaned up below.
	if err := writeFileExcl(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("identity: init CA: writing %s: %w", keyPath, err)
	}
	if err := writeFileExcl(certPath, encodeChain([]*x509.Certificate{cert}), 0o644); err != nil {
		os.Remove(keyPath)
		return nil, fmt.Errorf("identity: init CA: writing %s: %w", certPath, err)
	}
	return newCA(dir, td, cert, key, opts.Clock)
}

// LoadCA loads the CA InitCA wrote in dir. The trust domain comes from the
// CA certificate's URI SAN; the key must match the certificate.
func LoadCA(dir string, opts CAOptions) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	chain, err := ReadChain(certPath)
	if err != nil {
		return nil, fmt.Errorf("identity: load CA: %w", err)
	}
	if len(chain) != 1 {
		return nil, fmt.Errorf("identity: load CA: %s holds %d certificates, want 1", certPath, len(chain))
	}
	cert := chain[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("identity: load CA: %s is not a CA certificate", certPath)
	}
	id, err := x509svid.IDFromCert(cert)
	if err != nil {
		return nil, fmt.Errorf("identity: load CA: %s has no trust domain URI SAN: %w", certPath, err)
	}
	if id.Path() != "" {
		return nil, fmt.Errorf("identity: load CA: %s names %s, want a bare trust domain ID (spiffe://TD)", certPath, id)
	}
	key, err := ReadKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("identity: load CA: %w", err)
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("identity: load CA: %s does not belong to %s", keyPath, certPath)
	}
	return newCA(dir, id.TrustDomain(), cert, key, opts.Clock)
}

func newCA(dir string, td spiffeid.TrustDomain, cert *x509.Certificate, key crypto.Signer, clock Clock) (*CA, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("identity: CA key: %w", err)
	}
	tk, err := hkdf.Key(sha256.New, der, nil, "celluster join token v1", sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("identity: deriving join token key: %w", err)
	}
	return &CA{dir: dir, td: td, cert: cert, key: key, clock: clock, tokenKey: tk}, nil
}

// TrustDomain returns the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Certificate returns the CA certificate. Callers must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Bundle returns the trust domain's X.509 bundle: the CA certificate, as
// peers need it to verify node certificates.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
}

// IssueNode signs a certificate for node name's public key pub, valid from
// one minute ago (Backdate, per the CA's clock) for ttl (DefaultNodeTTL if
// 0), but never past the CA certificate. Its only SAN is the URI
// spiffe://TD/node/NAME (peers verify the SPIFFE ID, not host names); key
// usage DigitalSignature, extended key usage ServerAuth and ClientAuth. The
// chain returned is the leaf alone: the CA certificate is the trust anchor
// peers already hold.
func (ca *CA) IssueNode(name string, pub crypto.PublicKey, ttl time.Duration) ([]*x509.Certificate, error) {
	id, err := NodeID(ca.td, name)
	if err != nil {
		return nil, err
	}
	chain, err := ca.issue(id, name, pub, ttl)
	if err != nil {
		return nil, fmt.Errorf("identity: issuing certificate for node %s: %w", name, err)
	}
	return chain, nil
}

// issue signs a leaf for id; IssueNode is the public way in, tests use it
// to make certificates with other IDs.
func (ca *CA) issue(id spiffeid.ID, cn string, pub crypto.PublicKey, ttl time.Duration) ([]*x509.Certificate, error) {
	if ttl < 0 {
		return nil, fmt.Errorf("negative TTL %s", ttl)
	}
	if ttl == 0 {
		ttl = DefaultNodeTTL
	}
	if pub == nil {
		return nil, errors.New("no public key")
	}
	now := ca.clock.now()
	if !now.Before(ca.cert.NotAfter) {
		return nil, fmt.Errorf("CA certificate expired at %s", ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	notAfter := now.Add(ttl)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the signed certificate: %w", err)
	}
	return []*x509.Certificate{leaf}, nil
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// samePublicKey reports whether a and b are the same public key.
func samePublicKey(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}
