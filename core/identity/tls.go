package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ALPN is the application protocol nodes negotiate.
const ALPN = "celluster/1"

// ServerConfig returns the TLS configuration a node serves with: TLS 1.3
// only, ALPN celluster/1, the current certificate of creds, and a client
// certificate required and verified by VerifyPeer against bundle, td and
// clock (nil: time.Now).
//
// About verification: crypto/tls's own checks are switched off
// (ClientAuth is RequireAnyClientCert, not RequireAndVerifyClientCert)
// because they verify against the wall clock and cannot say why a peer was
// refused. VerifyConnection does the whole SPIFFE verification instead and
// fails the handshake with VerifyPeer's error; crypto/tls calls it on every
// handshake, resumed ones included. This is go-spiffe's own pattern
// (spiffetls/tlsconfig). Never use the config with VerifyConnection removed.
func ServerConfig(creds *Credentials, bundle *x509bundle.Bundle, td spiffeid.TrustDomain, clock Clock) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		MaxVersion:       tls.VersionTLS13,
		NextProtos:       []string{ALPN},
		GetCertificate:   creds.GetCertificate,
		ClientAuth:       tls.RequireAnyClientCert,
		VerifyConnection: verifyConnection(bundle, td, clock),
	}
}

// ClientConfig returns the TLS configuration a node dials with: TLS 1.3
// only, ALPN celluster/1, the current certificate of creds as client
// certificate, and the server verified by VerifyPeer against bundle, td and
// clock (nil: time.Now): any node of td is accepted.
//
// About verification: InsecureSkipVerify is set, which switches off
// crypto/tls's host name and wall-clock checks only; VerifyConnection does
// the whole SPIFFE verification and fails the handshake with VerifyPeer's
// error, on every handshake, resumed ones included. This is go-spiffe's own
// pattern (spiffetls/tlsconfig). Never use the config with VerifyConnection
// removed.
func ClientConfig(creds *Credentials, bundle *x509bundle.Bundle, td spiffeid.TrustDomain, clock Clock) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		MaxVersion:           tls.VersionTLS13,
		NextProtos:           []string{ALPN},
		GetClientCertificate: creds.GetClientCertificate,
		InsecureSkipVerify:   true, // VerifyConnection verifies; see above.
		VerifyConnection:     verifyConnection(bundle, td, clock),
	}
}

func verifyConnection(bundle *x509bundle.Bundle, td spiffeid.TrustDomain, clock Clock) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		_, err := VerifyPeer(cs.PeerCertificates, bundle, td, clock.now())
		return err
	}
}

// VerifyPeer verifies a peer's certificate chain (leaf first) as a node of
// td and returns the node's name. It checks, in this order, and refuses
// with an error matching the sentinel in brackets:
//   - there is a certificate [ErrNoPeerCertificate];
//   - the leaf is an X509-SVID: exactly one URI SAN, a SPIFFE ID
//     [ErrNotSVID];
//   - the ID is in td: "trust domain X, want Y" [ErrTrustDomain];
//   - the chain leads to a CA certificate in bundle: "peer certificate from
//     another CA" [ErrOtherCA];
//   - the leaf and its CA are valid at now: "expired at ..." [ErrExpired],
//     "not valid before ..." [ErrNotYetValid];
//   - the ID is a node ID, spiffe://TD/node/NAME: "not a node ID"
//     [ErrNotNodeID].
//
// Messages read "identity: peer <SPIFFE ID> refused: <why>" and never
// include key material.
func VerifyPeer(certs []*x509.Certificate, bundle *x509bundle.Bundle, td spiffeid.TrustDomain, now time.Time) (string, error) {
	if len(certs) == 0 || certs[0] == nil {
		return "", kindErr(ErrNoPeerCertificate, "identity: peer refused: it presented no certificate")
	}
	leaf := certs[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return "", kindErrCause(ErrNotSVID, err, "identity: peer refused: certificate (serial %x) is not an X509-SVID: %v", leaf.SerialNumber, err)
	}
	if !id.MemberOf(td) {
		return "", kindErr(ErrTrustDomain, "identity: peer %s refused: trust domain %s, want %s", id, id.TrustDomain(), td)
	}
	if bundle == nil {
		return "", kindErr(ErrOtherCA, "identity: peer %s refused: no CA bundle to verify it with", id)
	}
	if _, _, err := x509svid.Verify(certs, bundle, x509svid.WithTime(now)); err != nil {
		return "", verifyError(id, certs, bundle, now, err)
	}
	name, err := ParseNodeID(id, td)
	if err != nil {
		return "", kindErrCause(ErrNotNodeID, err, "identity: peer %s refused: not a node ID (want spiffe://%s/node/NAME)", id, td)
	}
	return name, nil
}

// verifyError turns a failed x509svid.Verify into a refusal saying why.
func verifyError(id spiffeid.ID, certs []*x509.Certificate, bundle *x509bundle.Bundle, now time.Time, err error) error {
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) {
		return kindErrCause(ErrOtherCA, err, "identity: peer %s refused: peer certificate from another CA (not signed by the %s CA)", id, bundle.TrustDomain())
	}
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) && invalid.Reason == x509.Expired && invalid.Cert != nil {
		// crypto/x509 checks time before signatures: an expired
		// certificate from another CA is refused for its CA first.
		leaf := certs[0]
		mid := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
		if _, _, err2 := x509svid.Verify(certs, bundle, x509svid.WithTime(mid)); errors.As(err2, &unknown) {
			return kindErrCause(ErrOtherCA, err2, "identity: peer %s refused: peer certificate from another CA (not signed by the %s CA)", id, bundle.TrustDomain())
		}
		what := "certificate"
		if invalid.Cert.IsCA {
			what = "CA certificate"
		}
		if now.Before(invalid.Cert.NotBefore) {
			return kindErrCause(ErrNotYetValid, err, "identity: peer %s refused: %s not valid before %s (now %s)", id, what, stamp(invalid.Cert.NotBefore), stamp(now))
		}
		return kindErrCause(ErrExpired, err, "identity: peer %s refused: %s expired at %s (now %s)", id, what, stamp(invalid.Cert.NotAfter), stamp(now))
	}
	return kindErrCause(ErrNotSVID, err, "identity: peer %s refused: certificate does not verify: %v", id, err)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// PeerNode returns the node name of the peer of a connection made with
// ServerConfig or ClientConfig, whose handshake already verified the peer.
// It reads the name from the leaf's SPIFFE ID and checks it is a node of
// td; it does not verify the chain again.
func PeerNode(cs tls.ConnectionState, td spiffeid.TrustDomain) (string, error) {
	if !cs.HandshakeComplete {
		return "", errors.New("identity: peer node: handshake not complete")
	}
	if len(cs.PeerCertificates) == 0 {
		return "", kindErr(ErrNoPeerCertificate, "identity: peer node: the peer presented no certificate")
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return "", kindErrCause(ErrNotSVID, err, "identity: peer node: certificate is not an X509-SVID: %v", err)
	}
	return ParseNodeID(id, td)
}
