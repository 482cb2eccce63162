package node

import (
	"strings"
	"testing"

	"github.com/celluster/celluster/core/intents"
	pb "github.com/celluster/celluster/pluginapi/v1"
)

// TestCheckStatements: the statements the node honours itself are either
// turned into a requirement on the module or rejected with file:line:col,
// never ignored.
func TestCheckStatements(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	src := func(text string) intents.Source {
		return intents.Source{Origin: intents.FromFile, Name: "/cells/hello.intent", Content: []byte(text)}
	}
	// Honoured: a pin, an ABI, the cell's own endpoint.
	text := "cell hello\nmodule hello.wasm sha256 " + sha + "\nabi command\nserve http /hello\n"
	req, err := checkStatements("hello", src(text), &pb.IntentSpec{
		Module: &pb.ModuleRef{Path: "hello.wasm", Sha256: sha}, Abi: pb.ABI_ABI_COMMAND,
		Endpoints: []*pb.Endpoint{{Protocol: "http", Path: "/hello"}},
	})
	if err != nil || req.SHA256 != sha || req.SHA256At != "/cells/hello.intent:2:8" || req.ABI != "command" || req.ABIAt != "/cells/hello.intent:3:1" {
		t.Fatalf("honoured statements: %+v, %v", req, err)
	}
	// Rejected, each at its token.
	for _, tc := range []struct {
		text string
		spec *pb.IntentSpec
		want string
	}{
		{"cell hello\nserve http :8080 /hello\n", &pb.IntentSpec{Endpoints: []*pb.Endpoint{{Protocol: "http", Listen: ":8080", Path: "/hello"}}},
			"/cells/hello.intent:2:12: serve http :8080 /hello: this node serves every cell on its one ingress"},
		{"cell hello\nserve grpc /hello\n", &pb.IntentSpec{Endpoints: []*pb.Endpoint{{Protocol: "grpc", Path: "/hello"}}},
			"/cells/hello.intent:2:12: serve grpc /hello: this node serves cells over http only"},
		{"cell hello\nmodule other.wasm\n", &pb.IntentSpec{Module: &pb.ModuleRef{Path: "other.wasm"}},
			"/cells/hello.intent:2:8: module other.wasm: an intent names its own cell's module, hello.wasm"},
	} {
		_, err := checkStatements("hello", src(tc.text), tc.spec)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.text, err, tc.want)
		}
	}
}
