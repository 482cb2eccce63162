package main

import (
	"testing"

	"github.com/celluster/celluster/sdk/cell/celltest"
)

func TestHello(t *testing.T) {
	for target, want := range map[string]string{
		"/hello":                     "Hello, world!\n",
		"/hello/":                    "Hello, world!\n",
		"/hello/a/b":                 "Hello, world!\n",
		"/hello?name=cell":           "Hello, cell!\n",
		"/hello/x?name=a%20b&name=c": "Hello, a b!\n",
		"/hello?name=":               "Hello, world!\n",
	} {
		resp := celltest.Do(nil, "GET", target, nil)
		if resp.Status != 200 || string(resp.Body) != want {
			t.Errorf("%s: %d %q, want 200 %q", target, resp.Status, resp.Body, want)
		}
		if got := resp.Header.Get("Content-Type"); got != "text/plain; charset=utf-8" {
			t.Errorf("%s: Content-Type %q", target, got)
		}
		if got := resp.Header.Get("X-Cell-Version"); got != version {
			t.Errorf("%s: X-Cell-Version %q, want %q", target, got, version)
		}
	}
}

func TestVersionOverride(t *testing.T) {
	old := version
	defer func() { version = old }()
	version = "v2"
	if got := celltest.Do(nil, "GET", "/hello", nil).Header.Get("X-Cell-Version"); got != "v2" {
		t.Errorf("X-Cell-Version %q", got)
	}
}
