package identity

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// NodeConfig says where a node's identity comes from.
type NodeConfig struct {
	// Name is the node's name.
	Name string
	// TrustDomain is the SPIFFE trust domain.
	TrustDomain spiffeid.TrustDomain
	// DataDir holds <DataDir>/identity (the node's key, and the chain and
	// CA certificate a token join got) and, by default, <DataDir>/ca.
	DataDir string
	// CADir holds the trust domain's CA; default <DataDir>/ca, created on
	// first start when CertFile, KeyFile and Token are unset.
	CADir string
	// CertFile and KeyFile give the node's chain and key instead.
	CertFile, KeyFile string
	// Token is a join token, redeemed through Seeds on first start.
	Token string
	// Seeds are the fabric addresses a token is redeemed at.
	Seeds []string
	// CertTTL is the lifetime of the node certificates issued with the CA
	// key (DefaultNodeTTL when zero).
	CertTTL time.Duration
	// Logger receives what happened.
	Logger *slog.Logger
}

// JoinFunc sends a join request to a seed over a certificate-less
// connection configured by tlsConf and returns the answer (the fabric's
// RequestJoin).
type JoinFunc func(ctx context.Context, seed string, tlsConf *tls.Config, request []byte) ([]byte, error)

// Node is a node's identity: its credentials, the trust bundle, and the CA
// when the node holds its key. It bootstraps (a private CA, a CA directory,
// given files or a join token) and renews the node's certificate.
type Node struct {
	cfg    NodeConfig
	ca     *CA // nil when the node holds no CA key
	bundle *x509bundle.Bundle
	creds  *Credentials
}

// LoadNode loads or creates the node's identity. Without CertFile, KeyFile
// or Token the node makes a private CA in its data directory on first
// start; with a Token it gets its certificate through join (once: the
// result is kept under <DataDir>/identity).
func LoadNode(ctx context.Context, cfg NodeConfig, join JoinFunc) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &Node{cfg: cfg}
	caDir := cfg.CADir
	if caDir == "" {
		caDir = filepath.Join(cfg.DataDir, "ca")
	}
	idDir := filepath.Join(cfg.DataDir, "identity")
	if cfg.CertFile == "" && cfg.KeyFile == "" {
		joined := filepath.Join(idDir, "node.crt")
		if _, err := os.Stat(joined); err == nil {
			// Joined before with a token: the certificate it got.
			n.cfg.CertFile, n.cfg.KeyFile, caDir = joined, filepath.Join(idDir, "node.key"), idDir
		} else if cfg.Token != "" {
			if err := n.joinWithToken(ctx, join); err != nil {
				return nil, err
			}
			n.cfg.CertFile, n.cfg.KeyFile, caDir = joined, filepath.Join(idDir, "node.key"), idDir
		}
	}
	if n.cfg.CertFile != "" || n.cfg.KeyFile != "" {
		key, err := ReadKey(n.cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("fabric: --key: %w", err)
		}
		chain, err := ReadChain(n.cfg.CertFile)
		if err != nil {
			return nil, fmt.Errorf("fabric: --cert: %w", err)
		}
		cas, err := ReadChain(filepath.Join(caDir, CACertFile))
		if err != nil {
			return nil, fmt.Errorf("fabric: the trust domain's CA certificate: %w", err)
		}
		n.bundle = x509bundle.FromX509Authorities(cfg.TrustDomain, cas)
		n.creds = NewCredentials(key, chain)
		return n, nil
	}
	ca, err := LoadCA(caDir, CAOptions{})
	if errors.Is(err, os.ErrNotExist) && cfg.CADir == "" {
		ca, err = InitCA(caDir, cfg.TrustDomain, CAOptions{})
		if err == nil {
			cfg.Logger.Info("created a private CA for a single node", "dir", caDir, "trust_domain", cfg.TrustDomain.String())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("fabric: CA in %s: %w", caDir, err)
	}
	if ca.TrustDomain() != cfg.TrustDomain {
		return nil, fmt.Errorf("fabric: the CA in %s is for trust domain %s, not %s (--trust-domain)", caDir, ca.TrustDomain(), cfg.TrustDomain)
	}
	n.ca, n.bundle = ca, ca.Bundle()
	keyPath := filepath.Join(idDir, "node.key")
	key, err := ReadKey(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		if key, err = NewKey(); err == nil {
			if err = os.MkdirAll(idDir, 0o700); err == nil {
				err = WriteKey(keyPath, key)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("fabric: node key %s: %w", keyPath, err)
	}
	chain, err := ca.IssueNode(cfg.Name, key.Public(), n.certTTL())
	if err != nil {
		return nil, fmt.Errorf("fabric: issuing this node's certificate: %w", err)
	}
	n.creds = NewCredentials(key, chain)
	return n, nil
}

// Credentials are the node's key and current chain.
func (n *Node) Credentials() *Credentials { return n.creds }

// Bundle is the trust domain's CA bundle.
func (n *Node) Bundle() *x509bundle.Bundle { return n.bundle }

// HoldsCA reports whether this node holds the CA key (issues certificates).
func (n *Node) HoldsCA() bool { return n.ca != nil }

func (n *Node) certTTL() time.Duration {
	if n.cfg.CertTTL > 0 {
		return n.cfg.CertTTL
	}
	return DefaultNodeTTL
}

// Renew replaces the node certificate once two thirds of its lifetime
// have passed, without dropping a connection, until ctx ends: a node
// holding the CA key issues it itself, any other asks a peer through
// fetch, which it calls until one answers with a chain for this key.
func (n *Node) Renew(ctx context.Context, fetch func(ctx context.Context, try func(pemChain []byte, from string) error) error) {
	for {
		// Check twenty times a lifetime (at most every minute).
		every := time.Minute
		if leaf := n.creds.Leaf(); leaf != nil {
			every = min(max(leaf.NotAfter.Sub(leaf.NotBefore)/20, 100*time.Millisecond), time.Minute)
		}
		select {
		case <-ctx.Done():
			return
		case now := <-time.After(every):
			if !RenewalDue(n.creds.Leaf(), now) {
				continue
			}
			var chain []*x509.Certificate
			var err error
			if n.ca != nil {
				chain, err = n.ca.IssueNode(n.cfg.Name, n.creds.Key().Public(), n.certTTL())
			} else {
				err = fetch(ctx, func(b []byte, from string) error {
					c, err := ParseChainPEM(b)
					if err != nil {
						return err
					}
					if !c[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(n.creds.Key().Public()) {
						return fmt.Errorf("node %s renewed a certificate for another key", from)
					}
					chain = c
					return nil
				})
			}
			if err == nil {
				err = n.creds.Renew(chain)
			}
			if err == nil && n.ca == nil && n.cfg.CertFile != "" {
				err = WriteChain(n.cfg.CertFile, chain)
			}
			if err != nil {
				n.cfg.Logger.Error("renewing the node certificate", "err", err, "expires", n.creds.NotAfter())
				continue
			}
			n.cfg.Logger.Info("node certificate renewed", "expires", n.creds.NotAfter())
		}
	}
}

// RenewalDue reports whether two thirds of a certificate's life have
// passed, counted from its issue (NotBefore is backdated by Backdate for
// clock skew).
func RenewalDue(leaf *x509.Certificate, now time.Time) bool {
	if leaf == nil {
		return true
	}
	issued := leaf.NotBefore.Add(Backdate)
	return !now.Before(issued.Add(2 * leaf.NotAfter.Sub(issued) / 3))
}

// AnswerRenew issues a fresh chain (PEM) to peer for pub, the key of the
// certificate the peer proved at the handshake.
func (n *Node) AnswerRenew(peer string, pub crypto.PublicKey) ([]byte, error) {
	if n.ca == nil {
		return nil, errors.New("this node holds no CA key")
	}
	chain, err := n.ca.IssueNode(peer, pub, n.certTTL())
	if err != nil {
		return nil, err
	}
	n.cfg.Logger.Info("renewed a peer's certificate", "node", peer)
	return encodeChain(chain), nil
}

// ParseChainPEM parses PEM certificates; at least one.
func ParseChainPEM(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate in the answer")
	}
	return out, nil
}

// joinRequest is what a node without a certificate sends to a node holding
// the CA: its join token and a CSR for its key.
type joinRequest struct {
	Token string `json:"token"`
	CSR   []byte `json:"csr"`
}

// joinAnswer carries the issued chain and the CA certificate, PEM.
type joinAnswer struct {
	Chain string `json:"chain"`
	CA    string `json:"ca"`
}

// JoinTLS is the configuration of certificate-less join connections: this
// node's certificate with the CA's behind it, so the joiner can check it
// against the CA fingerprint in its token. Without the CA key it has no
// certificate, so joins are refused.
func (n *Node) JoinTLS() *tls.Config {
	leaf := n.creds.Leaf()
	if n.ca == nil || leaf == nil {
		return &tls.Config{} // refuses: no certificate
	}
	return &tls.Config{Certificates: []tls.Certificate{{
		Certificate: [][]byte{leaf.Raw, n.ca.Certificate().Raw},
		PrivateKey:  n.creds.Key(),
		Leaf:        leaf,
	}}}
}

// AnswerJoin redeems a join token for a CSR (a peer's join request).
func (n *Node) AnswerJoin(_ context.Context, b []byte) ([]byte, error) {
	if n.ca == nil {
		return nil, errors.New("this node holds no CA key: join through a node started with --ca")
	}
	var req joinRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, fmt.Errorf("malformed join request: %w", err)
	}
	chain, err := n.ca.RedeemJoinToken(req.Token, req.CSR)
	if err != nil {
		return nil, err
	}
	if ttl := n.certTTL(); ttl != DefaultNodeTTL {
		// The node's lifetime for certificates, like every other node's.
		if chain, err = n.ca.IssueNode(chain[0].Subject.CommonName, chain[0].PublicKey, ttl); err != nil {
			return nil, err
		}
	}
	ans := joinAnswer{Chain: string(encodeChain(chain)), CA: string(encodeChain([]*x509.Certificate{n.ca.Certificate()}))}
	n.cfg.Logger.Info("a node joined with a token", "node", chain[0].Subject.CommonName)
	return json.Marshal(ans)
}

// joinWithToken gets this node's certificate from a node holding the CA,
// over a certificate-less connection: the server must prove a chain to the
// CA the token names before the token is sent. The key, chain and CA
// certificate are kept in <DataDir>/identity.
func (n *Node) joinWithToken(ctx context.Context, join JoinFunc) error {
	cfg := n.cfg
	info, err := ReadJoinToken(cfg.Token)
	if err != nil {
		return fmt.Errorf("fabric: --token: %w", err)
	}
	if info.Node != cfg.Name {
		return fmt.Errorf("fabric: --token is for node %s; this node is %s (--node)", info.Node, cfg.Name)
	}
	if info.TrustDomain != cfg.TrustDomain.Name() {
		return fmt.Errorf("fabric: --token is for trust domain %s, not %s (--trust-domain)", info.TrustDomain, cfg.TrustDomain.Name())
	}
	if len(cfg.Seeds) == 0 {
		return errors.New("fabric: --token needs --join: the node to get the certificate from")
	}
	key, err := NewKey()
	if err != nil {
		return err
	}
	csr, err := NewCSR(key, cfg.Name)
	if err != nil {
		return err
	}
	req, _ := json.Marshal(joinRequest{Token: cfg.Token, CSR: csr})
	tlsConf := &tls.Config{
		InsecureSkipVerify:    true, // verified below, against the token's CA fingerprint
		VerifyPeerCertificate: verifyJoinServer(info.CAFingerprint, cfg.TrustDomain),
	}
	var lastErr error
	for _, seed := range cfg.Seeds {
		jctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		out, err := join(jctx, seed, tlsConf, req)
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		var ans joinAnswer
		if err := json.Unmarshal(out, &ans); err != nil {
			return fmt.Errorf("fabric: join answer from %s: %w", seed, err)
		}
		dir := filepath.Join(cfg.DataDir, "identity")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := WriteKey(filepath.Join(dir, "node.key"), key); err != nil {
			return err
		}
		for name, body := range map[string]string{"node.crt": ans.Chain, CACertFile: ans.CA} {
			chain, err := ParseChainPEM([]byte(body))
			if err == nil {
				err = WriteChain(filepath.Join(dir, name), chain)
			}
			if err != nil {
				return fmt.Errorf("fabric: join answer from %s: %s: %w", seed, name, err)
			}
		}
		cfg.Logger.Info("joined the trust domain with a token", "through", seed, "node", cfg.Name)
		return nil
	}
	return fmt.Errorf("fabric: joining with the token: %w", lastErr)
}

// verifyJoinServer accepts a server whose chain reaches the CA certificate
// with the given sha256 and whose leaf is a node of the trust domain.
func verifyJoinServer(fingerprint string, td spiffeid.TrustDomain) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		var ca *x509.Certificate
		certs := make([]*x509.Certificate, 0, len(raw))
		for _, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return fmt.Errorf("join server certificate: %w", err)
			}
			certs = append(certs, c)
			if sum := sha256.Sum256(r); hex.EncodeToString(sum[:]) == fingerprint {
				ca = c
			}
		}
		if ca == nil || len(certs) == 0 {
			return errors.New("the join server did not prove the CA named by the token (wrong node, or a man in the middle)")
		}
		roots := x509.NewCertPool()
		roots.AddCert(ca)
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("the join server's certificate does not chain to the token's CA: %w", err)
		}
		if len(certs[0].URIs) != 1 {
			return errors.New("the join server's certificate has no single SPIFFE ID")
		}
		id, err := spiffeid.FromURI(certs[0].URIs[0])
		if err != nil {
			return err
		}
		if _, err := ParseNodeID(id, td); err != nil {
			return fmt.Errorf("the join server is not a node of %s: %w", td, err)
		}
		return nil
	}
}
