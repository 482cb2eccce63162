package node

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/celluster/celluster/core/fabric"
	"github.com/celluster/celluster/core/identity"
)

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

// joinTLS is the configuration of certificate-less join connections: this
// node's certificate with the CA's behind it, so the joiner can check it
// against the CA fingerprint in its token. Nil (no join service) when the
// node holds no CA key.
func (m *mesh) joinTLS() *tls.Config {
	leaf := m.creds.Leaf()
	if m.ca == nil || leaf == nil {
		return &tls.Config{} // refuses: no certificate
	}
	return &tls.Config{Certificates: []tls.Certificate{{
		Certificate: [][]byte{leaf.Raw, m.ca.Certificate().Raw},
		PrivateKey:  m.creds.Key(),
		Leaf:        leaf,
	}}}
}

// answerJoin redeems a join token for a CSR.
func (m *mesh) answerJoin(_ context.Context, b []byte) ([]byte, error) {
	if m.ca == nil {
		return nil, errors.New("this node holds no CA key: join through a node started with --ca")
	}
	var req joinRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, fmt.Errorf("malformed join request: %w", err)
	}
	chain, err := m.ca.RedeemJoinToken(req.Token, req.CSR)
	if err != nil {
		return nil, err
	}
	if ttl := m.certTTL(); ttl != identity.DefaultNodeTTL {
		// The node's lifetime for certificates, like every other node's.
		if chain, err = m.ca.IssueNode(chain[0].Subject.CommonName, chain[0].PublicKey, ttl); err != nil {
			return nil, err
		}
	}
	var ans joinAnswer
	for _, c := range chain {
		ans.Chain += string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	ans.CA = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.ca.Certificate().Raw}))
	m.n.log.Info("a node joined with a token", "node", chain[0].Subject.CommonName)
	return json.Marshal(ans)
}

// joinWithToken gets this node's certificate from a node holding the CA,
// over a certificate-less fabric connection: the server must prove a chain
// to the CA the token names before the token is sent. The key, chain and
// CA certificate are kept in <data>/identity.
func (m *mesh) joinWithToken() error {
	n := m.n
	info, err := identity.ReadJoinToken(n.cfg.Token)
	if err != nil {
		return fmt.Errorf("fabric: --token: %w", err)
	}
	if info.Node != n.cfg.Name {
		return fmt.Errorf("fabric: --token is for node %s; this node is %s (--node)", info.Node, n.cfg.Name)
	}
	if info.TrustDomain != m.td.Name() {
		return fmt.Errorf("fabric: --token is for trust domain %s, not %s (--trust-domain)", info.TrustDomain, m.td.Name())
	}
	if len(n.cfg.Join) == 0 {
		return errors.New("fabric: --token needs --join: the node to get the certificate from")
	}
	key, err := identity.NewKey()
	if err != nil {
		return err
	}
	csr, err := identity.NewCSR(key, n.cfg.Name)
	if err != nil {
		return err
	}
	req, _ := json.Marshal(joinRequest{Token: n.cfg.Token, CSR: csr})
	tlsConf := &tls.Config{
		InsecureSkipVerify:    true, // verified below, against the token's CA fingerprint
		VerifyPeerCertificate: verifyJoinServer(info.CAFingerprint, m.td),
	}
	var lastErr error
	for _, seed := range n.cfg.Join {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		out, err := fabric.RequestJoin(ctx, seed, tlsConf, req)
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		var ans joinAnswer
		if err := json.Unmarshal(out, &ans); err != nil {
			return fmt.Errorf("fabric: join answer from %s: %w", seed, err)
		}
		dir := filepath.Join(n.cfg.DataDir, "identity")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := identity.WriteKey(filepath.Join(dir, "node.key"), key); err != nil {
			return err
		}
		for name, body := range map[string]string{"node.crt": ans.Chain, identity.CACertFile: ans.CA} {
			chain, err := parseChainPEM([]byte(body))
			if err == nil {
				err = identity.WriteChain(filepath.Join(dir, name), chain)
			}
			if err != nil {
				return fmt.Errorf("fabric: join answer from %s: %s: %w", seed, name, err)
			}
		}
		n.log.Info("joined the trust domain with a token", "through", seed, "node", n.cfg.Name)
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
		if _, err := identity.ParseNodeID(id, td); err != nil {
			return fmt.Errorf("the join server is not a node of %s: %w", td, err)
		}
		return nil
	}
}
