package identity

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FuzzAnswerJoin feeds the join endpoint's decoder (the one a peer without
// a certificate reaches) arbitrary requests. It must never panic, and it may
// issue a chain only for a token this CA made: every answer it gives is a
// chain for the node the seeded token names, under this CA.
func FuzzAnswerJoin(f *testing.F) {
	td := spiffeid.RequireTrustDomainFromString("fuzz.test")
	n, err := LoadNode(context.Background(), NodeConfig{
		Name: "ca-node", TrustDomain: td, DataDir: f.TempDir(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, nil)
	if err != nil {
		f.Fatal(err)
	}
	token, err := n.ca.NewJoinToken("joiner", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	key, err := NewKey()
	if err != nil {
		f.Fatal(err)
	}
	csr, err := NewCSR(key, "joiner")
	if err != nil {
		f.Fatal(err)
	}
	valid, _ := json.Marshal(joinRequest{Token: token, CSR: csr})
	f.Add(valid)
	f.Add([]byte(`{"token":"","csr":""}`))
	f.Add([]byte(`{"token":` + `"` + token + `"` + `,"csr":"AAAA"}`))
	f.Add([]byte(`{"token":1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := n.AnswerJoin(context.Background(), b)
		if err != nil {
			if out != nil {
				t.Fatalf("an error (%v) with an answer", err)
			}
			return
		}
		var ans joinAnswer
		if err := json.Unmarshal(out, &ans); err != nil {
			t.Fatalf("answer is not a join answer: %v", err)
		}
		chain, err := ParseChainPEM([]byte(ans.Chain))
		if err != nil || len(chain) == 0 {
			t.Fatalf("answer's chain: %v", err)
		}
		if cn := chain[0].Subject.CommonName; cn != "joiner" {
			t.Fatalf("issued a certificate for %q, a node no token names", cn)
		}
		if err := chain[0].CheckSignatureFrom(n.ca.Certificate()); err != nil {
			t.Fatalf("issued a chain this CA did not sign: %v", err)
		}
	})
}
