package identity

import (
	"errors"
	"fmt"
)

// Why a peer was refused. Errors from VerifyPeer, PeerNode, ParseNodeID and
// the TLS configs' handshakes match one of these under errors.Is; their
// messages say more (which trust domain, when it expired, ...).
var (
	// ErrNoPeerCertificate: the peer presented no certificate.
	ErrNoPeerCertificate = errors.New("peer presented no certificate")
	// ErrNotSVID: the peer certificate is not an X509-SVID (it does not
	// have exactly one URI SAN holding a SPIFFE ID, or is a CA certificate).
	ErrNotSVID = errors.New("peer certificate is not an X509-SVID")
	// ErrTrustDomain: the peer's SPIFFE ID is in another trust domain.
	ErrTrustDomain = errors.New("peer in another trust domain")
	// ErrOtherCA: the peer certificate does not chain to the trust
	// domain's CA.
	ErrOtherCA = errors.New("peer certificate from another CA")
	// ErrExpired: the peer certificate (or its CA) expired, per the clock.
	ErrExpired = errors.New("certificate expired")
	// ErrNotYetValid: the peer certificate (or its CA) is not valid yet,
	// per the clock.
	ErrNotYetValid = errors.New("certificate not valid yet")
	// ErrNotNodeID: the SPIFFE ID is not spiffe://TD/node/NAME.
	ErrNotNodeID = errors.New("not a node ID")
)

// Why a join token was refused by RedeemJoinToken.
var (
	// ErrTokenMalformed: the string is not a join token.
	ErrTokenMalformed = errors.New("malformed join token")
	// ErrTokenSignature: the token was not signed by this CA, or was
	// altered.
	ErrTokenSignature = errors.New("join token has an invalid signature")
	// ErrTokenExpired: the token's time to live has passed, per the CA's
	// clock.
	ErrTokenExpired = errors.New("join token expired")
	// ErrTokenUsed: the token was already redeemed.
	ErrTokenUsed = errors.New("join token already used")
	// ErrTokenUnknown: the token is signed by this CA but not in its
	// record of issued tokens (the record was lost or pruned).
	ErrTokenUnknown = errors.New("join token unknown to this CA")
)

// kindError carries an exact message and a sentinel for errors.Is, so the
// message need not repeat the sentinel's text.
// cause, if set, is the lower-level error behind it.
type kindError struct {
	kind  error
	cause error
	msg   string
}

func (e *kindError) Error() string { return e.msg }

func (e *kindError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

func kindErr(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

func kindErrCause(kind, cause error, format string, args ...any) error {
	return &kindError{kind: kind, cause: cause, msg: fmt.Sprintf(format, args...)}
}
