package node

import (
	"reflect"
	"strings"
	"testing"

	"github.com/celluster/celluster/core/ingress"
	"github.com/celluster/celluster/core/intents"
	pb "github.com/celluster/celluster/pluginapi/v1"
)

// TestCellRoutes: an intent's hosts times its paths; any host without
// hosts, every path without paths, and no route (by name) without either.
func TestCellRoutes(t *testing.T) {
	ep := func(paths ...string) (out []*pb.Endpoint) {
		for _, p := range paths {
			out = append(out, &pb.Endpoint{Protocol: "http", Path: p})
		}
		return out
	}
	for _, tc := range []struct {
		spec *pb.IntentSpec
		want []ingress.Route
	}{
		{&pb.IntentSpec{}, nil},
		{&pb.IntentSpec{Endpoints: ep("/shop")}, []ingress.Route{{Prefix: "/shop", Cell: "shop"}}},
		{&pb.IntentSpec{Endpoints: ep("/")}, []ingress.Route{{Prefix: "/", Cell: "shop"}}},
		{&pb.IntentSpec{Hosts: []string{"Shop.example", "*.shop.example"}}, []ingress.Route{
			{Host: "shop.example", Prefix: "/", Cell: "shop"}, {Host: "*.shop.example", Prefix: "/", Cell: "shop"}}},
		{&pb.IntentSpec{Hosts: []string{"shop.example"}, Endpoints: ep("/api/", "/v2")}, []ingress.Route{
			{Host: "shop.example", Prefix: "/api", Cell: "shop"}, {Host: "shop.example", Prefix: "/v2", Cell: "shop"}}},
	} {
		if got := cellRoutes("shop", tc.spec); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v: %v, want %v", tc.spec, got, tc.want)
		}
	}
}

// TestCheckRoutes: what another parser might send that cannot route is
// rejected with the statement's file:line:col.
func TestCheckRoutes(t *testing.T) {
	src := func(text string) intents.Source {
		return intents.Source{Origin: intents.FromFile, Name: "/cells/shop.intent", Content: []byte(text)}
	}
	ok := &pb.IntentSpec{Endpoints: []*pb.Endpoint{{Protocol: "http", Path: "/api/v2"}}, Hosts: []string{"*.shop.example"},
		Limits: &pb.Limits{BodyBytes: 1 << 30}}
	if err := checkRoutes("shop", src(""), ok); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		text string
		spec *pb.IntentSpec
		want string
	}{
		{"cell shop\nserve http /a/../b\n", &pb.IntentSpec{Endpoints: []*pb.Endpoint{{Protocol: "http", Path: "/a/../b"}}},
			"/cells/shop.intent:2:12: serve http /a/../b: a path prefix starts with /"},
		{"cell shop\nserve http api\n", &pb.IntentSpec{Endpoints: []*pb.Endpoint{{Protocol: "http", Path: "api"}}},
			"/cells/shop.intent:2:12: serve http api: a path prefix starts with /"},
		{"cell shop\nserve host shop.example:80\n", &pb.IntentSpec{Hosts: []string{"shop.example:80"}},
			"/cells/shop.intent:2:12: serve host shop.example:80: a host name routes without a port"},
		{"cell shop\nserve host a.*.b\n", &pb.IntentSpec{Hosts: []string{"a.*.b"}},
			"/cells/shop.intent:2:12: serve host a.*.b:"},
		{"cell shop\nlimit body 2GiB\n", &pb.IntentSpec{Limits: &pb.Limits{BodyBytes: 2 << 30}},
			"/cells/shop.intent:2:7: limit body 2147483648 bytes: this node accepts request bodies of at most 1GiB"},
	} {
		err := checkRoutes("shop", src(tc.text), tc.spec)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.text, err, tc.want)
		}
	}
}
