// Package identity gives nodes their identity: a trust domain's CA,
// short-lived node certificates carrying SPIFFE IDs, renewable credentials,
// mutual-TLS configurations that verify peers as nodes of the trust domain,
// and single-use join tokens. IDs, bundles and chain verification come from
// go-spiffe (spiffeid, x509bundle, x509svid).
//
// # IDs
//
// A node is spiffe://TD/node/NAME (NodeID, ParseNodeID), a cell is
// spiffe://TD/cell/NAME (CellID). The CA certificate names the bare trust
// domain, spiffe://TD.
//
// # The CA directory
//
// InitCA writes, into a directory it creates with mode 0700:
//
//	ca.crt       the CA certificate, PEM: ECDSA P-256, self-signed, CA,
//	             path length 0, URI SAN spiffe://TD; the trust bundle
//	ca.key       its private key, PEM PKCS #8, mode 0600
//	tokens.json  written on the first NewJoinToken, mode 0600: the join
//	             tokens issued and when each was used
//
// It refuses to overwrite ca.crt or ca.key; LoadCA opens an existing
// directory. One CA value should own a directory at a time.
//
// # Node certificates
//
// IssueNode signs ECDSA, Ed25519 or RSA public keys for one hour by default:
// the only SAN is the URI spiffe://TD/node/NAME (no DNS or IP SANs: peers
// verify the SPIFFE ID), key usage DigitalSignature, extended key usage
// ServerAuth and ClientAuth, backdated one minute for clock skew. A node
// keeps its key and chain in Credentials, renews before NeedsRenewal says
// two thirds of the lifetime are gone, and calls Renew: TLS configs built on
// the credentials pick the new certificate for new handshakes without
// touching established connections. WriteKey/ReadKey and
// WriteChain/ReadChain keep them on disk.
//
// # Mutual TLS
//
// ServerConfig and ClientConfig are TLS 1.3 only with ALPN "celluster/1".
// Each side verifies the other with VerifyPeer: exactly one URI SAN holding a
// SPIFFE ID, in the trust domain, chained to the trust domain's CA, valid per
// the given Clock, and a node ID. crypto/tls's own verification is switched
// off (InsecureSkipVerify on the client, RequireAnyClientCert on the server)
// and VerifyConnection does the SPIFFE verification instead — go-spiffe's
// usual pattern, which lets the clock be controlled and refusals say why:
//
//	identity: peer spiffe://other.test/node/b refused: trust domain other.test, want example.test
//	identity: peer spiffe://example.test/node/b refused: peer certificate from another CA (not signed by the example.test CA)
//	identity: peer spiffe://example.test/node/b refused: certificate expired at 2030-01-01T02:00:00Z (now 2030-01-01T03:00:00Z)
//	identity: peer spiffe://example.test/cell/web refused: not a node ID (want spiffe://example.test/node/NAME)
//
// The side that refuses gets that error from its handshake (and it matches
// ErrTrustDomain, ErrOtherCA, ErrExpired or ErrNotNodeID under errors.Is);
// the other side sees a TLS "bad certificate" alert (a TLS 1.3 client whose
// certificate is refused may only see it on its first read). After a handshake,
// PeerNode returns the peer's node name.
//
// # Join tokens
//
// NewJoinToken makes a single-use token for a node name, valid ten minutes
// by default; the node redeems it (RedeemJoinToken), once, with a CSR
// (NewCSR) for its own key and gets its first node certificate. A token is
// three dot-separated parts:
//
//	celjoin1.<payload>.<signature>
//
// payload is the unpadded base64url encoding of the JSON object
//
//	{"id":"<32 hex digits>","td":"<trust domain>","node":"<name>","exp":"<RFC 3339 time>"}
//
// and signature the unpadded base64url HMAC-SHA256 of "celjoin1.<payload>"
// under a key derived (HKDF-SHA256) from the CA's private key, so only that
// CA can make or check its tokens. The CA records every token id it issues
// in tokens.json, and when each was used; the use is on disk before the
// certificate is returned, so a token works once, across restarts, and a
// token whose record is gone is refused. Refusals:
//
//	identity: malformed join token: <what is wrong>
//	identity: join token has an invalid signature (altered, or made by another CA)
//	identity: join token for node a expired at <time> (now <time>)
//	identity: join token for node a already used at <time>
//
// matching ErrTokenMalformed, ErrTokenSignature, ErrTokenExpired and
// ErrTokenUsed under errors.Is. No error quotes the token.
package identity
