package identity

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// joinTokenPrefix starts every join token; the package documentation
// describes the format.
const joinTokenPrefix = "celjoin1"

// maxJoinTokenLen bounds what RedeemJoinToken will look at.
const maxJoinTokenLen = 1024

type tokenPayload struct {
	ID   string    `json:"id"`
	TD   string    `json:"td"`
	Node string    `json:"node"`
	Exp  time.Time `json:"exp"`
	// CA is the hex sha256 of the CA certificate (DER): a joining node,
	// which has no CA yet, trusts a server that proves a chain to it.
	CA string `json:"ca,omitempty"`
}

// tokenFile is the content of tokens.json.
type tokenFile struct {
	Version int                    `json:"version"`
	Tokens  map[string]tokenRecord `json:"tokens"` // by token id
}

type tokenRecord struct {
	Node    string     `json:"node"`
	Expires time.Time  `json:"expires"`
	Used    *time.Time `json:"used,omitempty"`
}

// NewJoinToken returns a single-use token that lets node join, valid for
// ttl (DefaultJoinTokenTTL if 0) per the CA's clock, and records it in
// tokens.json. The token is a secret: give it only to the node.
func (ca *CA) NewJoinToken(node string, ttl time.Duration) (string, error) {
	if err := ValidNodeName(node); err != nil {
		return "", fmt.Errorf("identity: new join token: %w", err)
	}
	if ttl < 0 {
		return "", fmt.Errorf("identity: new join token for node %s: negative TTL %s", node, ttl)
	}
	if ttl == 0 {
		ttl = DefaultJoinTokenTTL
	}
	var idb [16]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", fmt.Errorf("identity: new join token for node %s: %w", node, err)
	}
	now := ca.clock.now()
	caSum := sha256.Sum256(ca.Certificate().Raw)
	p := tokenPayload{ID: hex.EncodeToString(idb[:]), TD: ca.td.Name(), Node: node, Exp: now.Add(ttl).UTC(), CA: hex.EncodeToString(caSum[:])}
	pj, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("identity: new join token for node %s: %w", node, err)
	}
	signed := joinTokenPrefix + "." + base64.RawURLEncoding.EncodeToString(pj)
	token := signed + "." + base64.RawURLEncoding.EncodeToString(ca.tokenMAC(signed))

	ca.mu.Lock()
	defer ca.mu.Unlock()
	tf, err := ca.readTokens()
	if err != nil {
		return "", fmt.Errorf("identity: new join token for node %s: %w", node, err)
	}
	tf.prune(now)
	tf.Tokens[p.ID] = tokenRecord{Node: node, Expires: p.Exp}
	if err := ca.writeTokens(tf); err != nil {
		return "", fmt.Errorf("identity: new join token for node %s: %w", node, err)
	}
	return token, nil
}

// RedeemJoinToken checks token and, if it is good, marks it used and
// returns a node certificate chain (see IssueNode; DefaultNodeTTL) for the
// public key of the certificate signing request csrDER, naming the token's
// node. The CSR's signature must verify, and the name it asks for (its
// subject common name, or a URI SAN) must be the token's node or empty.
//
// Refusals match, under errors.Is: ErrTokenMalformed ("malformed join
// token"), ErrTokenSignature ("join token has an invalid signature"),
// ErrTokenExpired ("join token expired"), ErrTokenUsed ("join token ...
// already used") or ErrTokenUnknown. A refused CSR does not use the token
// up. Errors never quote the token.
func (ca *CA) RedeemJoinToken(token string, csrDER []byte) ([]*x509.Certificate, error) {
	p, err := ca.parseJoinToken(token)
	if err != nil {
		return nil, err
	}
	now := ca.clock.now()
	if !now.Before(p.Exp) {
		return nil, kindErr(ErrTokenExpired, "identity: join token for node %s expired at %s (now %s)", p.Node, stamp(p.Exp), stamp(now))
	}
	if p.TD != ca.td.Name() {
		return nil, kindErr(ErrTokenMalformed, "identity: join token is for trust domain %s, this CA is %s", p.TD, ca.td)
	}

	ca.mu.Lock()
	defer ca.mu.Unlock()
	tf, err := ca.readTokens()
	if err != nil {
		return nil, fmt.Errorf("identity: redeeming join token for node %s: %w", p.Node, err)
	}
	rec, ok := tf.Tokens[p.ID]
	switch {
	case !ok:
		return nil, kindErr(ErrTokenUnknown, "identity: join token for node %s is not in %s: not issued by this CA, or its record was lost", p.Node, filepath.Join(ca.dir, TokensFile))
	case rec.Used != nil:
		return nil, kindErr(ErrTokenUsed, "identity: join token for node %s already used at %s", p.Node, stamp(*rec.Used))
	}
	pub, err := csrKey(csrDER, ca, p.Node)
	if err != nil {
		return nil, fmt.Errorf("identity: redeeming join token for node %s: %w", p.Node, err)
	}
	// Sign first, record the use second: a certificate is only returned
	// once the use is on disk.
	chain, err := ca.IssueNode(p.Node, pub, 0)
	if err != nil {
		return nil, fmt.Errorf("identity: redeeming join token: %w", err)
	}
	used := now.UTC()
	rec.Used = &used
	tf.Tokens[p.ID] = rec
	tf.prune(now)
	if err := ca.writeTokens(tf); err != nil {
		return nil, fmt.Errorf("identity: redeeming join token for node %s: recording its use: %w", p.Node, err)
	}
	return chain, nil
}

// NewCSR returns a DER certificate signing request for key, asking for node
// (its subject common name; "" asks for no name), as RedeemJoinToken takes.
func NewCSR(key crypto.Signer, node string) ([]byte, error) {
	if node != "" {
		if err := ValidNodeName(node); err != nil {
			return nil, fmt.Errorf("identity: new CSR: %w", err)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}}, key)
	if err != nil {
		return nil, fmt.Errorf("identity: new CSR for node %q: %w", node, err)
	}
	return der, nil
}

func (ca *CA) tokenMAC(signed string) []byte {
	m := hmac.New(sha256.New, ca.tokenKey)
	m.Write([]byte(signed))
	return m.Sum(nil)
}

// parseJoinToken checks the token's form and signature and returns its
// payload.
func (ca *CA) parseJoinToken(token string) (tokenPayload, error) {
	malformed := func(why string) (tokenPayload, error) {
		return tokenPayload{}, kindErr(ErrTokenMalformed, "identity: malformed join token: %s", why)
	}
	if len(token) > maxJoinTokenLen {
		return malformed(fmt.Sprintf("%d bytes, more than %d", len(token), maxJoinTokenLen))
	}
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(parts) != 3 || parts[0] != joinTokenPrefix {
		return malformed(fmt.Sprintf("want %s.<payload>.<signature>", joinTokenPrefix))
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != sha256.Size {
		return malformed("signature is not a base64url HMAC-SHA256")
	}
	if !hmac.Equal(sig, ca.tokenMAC(parts[0]+"."+parts[1])) {
		return tokenPayload{}, kindErr(ErrTokenSignature, "identity: join token has an invalid signature (altered, or made by another CA)")
	}
	pj, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return malformed("payload is not base64url")
	}
	var p tokenPayload
	if err := json.Unmarshal(pj, &p); err != nil {
		return malformed("payload is not JSON")
	}
	if p.ID == "" || p.Exp.IsZero() || ValidNodeName(p.Node) != nil {
		return malformed("payload lacks id, node or exp")
	}
	return p, nil
}

// csrKey parses and checks a CSR for node and returns its public key.
func csrKey(der []byte, ca *CA, node string) (crypto.PublicKey, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("parsing CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature: %w", err)
	}
	if cn := csr.Subject.CommonName; cn != "" && cn != node {
		return nil, fmt.Errorf("CSR asks for node %q, the token is for %q", cn, node)
	}
	if len(csr.URIs) > 0 {
		want, err := NodeID(ca.td, node)
		if err != nil {
			return nil, err
		}
		if len(csr.URIs) != 1 || csr.URIs[0].String() != want.String() {
			return nil, fmt.Errorf("CSR asks for URI SANs %v, the token is for %s", csr.URIs, want)
		}
	}
	return csr.PublicKey, nil
}

// readTokens reads tokens.json; a missing file is an empty record.
func (ca *CA) readTokens() (*tokenFile, error) {
	path := filepath.Join(ca.dir, TokensFile)
	tf := &tokenFile{Version: 1, Tokens: map[string]tokenRecord{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return tf, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading join token record: %w", err)
	}
	if err := json.Unmarshal(b, tf); err != nil {
		return nil, fmt.Errorf("reading join token record %s: %w", path, err)
	}
	if tf.Version != 1 {
		return nil, fmt.Errorf("join token record %s: version %d, want 1", path, tf.Version)
	}
	if tf.Tokens == nil {
		tf.Tokens = map[string]tokenRecord{}
	}
	return tf, nil
}

func (ca *CA) writeTokens(tf *tokenFile) error {
	b, err := json.MarshalIndent(tf, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding join token record: %w", err)
	}
	path := filepath.Join(ca.dir, TokensFile)
	if err := writeFileAtomic(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing join token record %s: %w", path, err)
	}
	return nil
}

// prune forgets tokens that expired before now. That is safe: an expired
// token is refused before its record is looked at, and a token without a
// record is refused too, should the clock go back.
func (tf *tokenFile) prune(now time.Time) {
	for id, r := range tf.Tokens {
		if now.After(r.Expires) {
			delete(tf.Tokens, id)
		}
	}
}

// JoinTokenInfo is what a joining node reads from a join token, without the
// CA's key to check its signature (the CA checks it on redemption).
type JoinTokenInfo struct {
	Node        string
	TrustDomain string
	Expires     time.Time
	// CAFingerprint is the hex sha256 of the CA certificate the joining
	// node must see a chain to before it sends the token anywhere.
	CAFingerprint string
}

// ReadJoinToken decodes a join token's payload for the node that will use
// it. It does not verify the signature: only the CA can.
func ReadJoinToken(token string) (JoinTokenInfo, error) {
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(token) > maxJoinTokenLen || len(parts) != 3 || parts[0] != joinTokenPrefix {
		return JoinTokenInfo{}, kindErr(ErrTokenMalformed, "identity: malformed join token: want %s.<payload>.<signature>", joinTokenPrefix)
	}
	pj, err := base64.RawURLEncoding.DecodeString(parts[1])
	var p tokenPayload
	if err == nil {
		err = json.Unmarshal(pj, &p)
	}
	if err != nil || p.CA == "" || ValidNodeName(p.Node) != nil {
		return JoinTokenInfo{}, kindErr(ErrTokenMalformed, "identity: malformed join token: unreadable payload, or no node or CA fingerprint")
	}
	return JoinTokenInfo{Node: p.Node, TrustDomain: p.TD, Expires: p.Exp, CAFingerprint: p.CA}, nil
}
