package fabric

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/celluster/celluster/core/fabric/frame"
)

// BenchmarkRoundTrip measures one request/response round trip between two
// nodes on loopback: over the fabric (QUIC, mutual TLS 1.3) with
// Peer.Request, which reuses a lane (a stream kept open between requests);
// in the same run, over the fabric with a stream of its own per request
// (opened, FIN each way), as Request did before lanes; and over gRPC with
// mutual TLS 1.3 on TCP using the same certificates (one HTTP/2 stream per
// unary call). Each echoes the payload back.
func BenchmarkRoundTrip(b *testing.B) {
	for _, size := range []int{64, 16 << 10} {
		payload := bytes.Repeat([]byte{'x'}, size)
		b.Run(fmt.Sprintf("size=%d/fabric", size), func(b *testing.B) { benchFabric(b, payload, false) })
		b.Run(fmt.Sprintf("size=%d/fabric-stream-per-request", size), func(b *testing.B) { benchFabric(b, payload, true) })
		b.Run(fmt.Sprintf("size=%d/grpc-tls", size), func(b *testing.B) { benchGRPC(b, payload) })
	}
}

func benchFabric(b *testing.B, payload []byte, streamPerRequest bool) {
	ca := newTestCA(b, testTD)
	client := startNode(b, ca, "client", nodeOpts{})
	server := startNode(b, ca, "server", nodeOpts{})
	server.HandleRequest(typeEcho, 0, func(_ context.Context, _ string, body []byte) ([]byte, error) { return body, nil })
	p, err := client.Dial(b.Context(), server.addr())
	if err != nil {
		b.Fatal(err)
	}
	request := p.Request
	if streamPerRequest {
		request = func(ctx context.Context, typ frame.Type, body []byte) ([]byte, error) {
			s, err := p.OpenStream(ctx)
			if err != nil {
				return nil, err
			}
			defer s.CancelRead(codeDone)
			if err := frame.Write(s, typ, body); err != nil {
				return nil, err
			}
			s.Close()
			_, out, err := frame.Read(s, 0)
			return out, err
		}
	}
	// One request outside the loop: the first opens the lane.
	if _, err := request(b.Context(), typeEcho, payload); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(2 * len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		got, err := request(b.Context(), typeEcho, payload)
		if err != nil {
			b.Fatal(err)
		}
		if len(got) != len(payload) {
			b.Fatalf("echo of %d bytes, want %d", len(got), len(payload))
		}
	}
}

// echoService is a one-method gRPC service without generated code: the
// messages are protobuf BytesValues.
var echoService = grpc.ServiceDesc{
	ServiceName: "celluster.bench.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return in, nil
		},
	}},
}

func benchGRPC(b *testing.B, payload []byte) {
	ca := newTestCA(b, testTD)
	roots := pool(ca)
	h2 := func(c *tls.Config) *tls.Config {
		c.NextProtos = nil // credentials.NewTLS adds h2
		return c
	}
	srvCreds := credentials.NewTLS(h2(serverTLS(ca.node(b, "server"), roots)))
	cliCreds := credentials.NewTLS(h2(clientTLS(ca.node(b, "client"), roots)))

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(srvCreds))
	srv.RegisterService(&echoService, struct{}{})
	go srv.Serve(lis)
	b.Cleanup(srv.Stop)

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(cliCreds))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	in := wrapperspb.Bytes(payload)
	// One call outside the loop: the first call dials and handshakes.
	if err := conn.Invoke(b.Context(), "/celluster.bench.Echo/Echo", in, new(wrapperspb.BytesValue)); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(2 * len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		out := new(wrapperspb.BytesValue)
		if err := conn.Invoke(b.Context(), "/celluster.bench.Echo/Echo", in, out); err != nil {
			b.Fatal(err)
		}
		if len(out.Value) != len(payload) {
			b.Fatalf("echo of %d bytes, want %d", len(out.Value), len(payload))
		}
	}
}
