package celltest_test

import (
	"testing"

	"github.com/celluster/celluster/sdk/cell"
	"github.com/celluster/celluster/sdk/cell/celltest"
)

func TestDo(t *testing.T) {
	h := cell.HandlerFunc(func(w cell.ResponseWriter, r *cell.Request) {
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Path", r.Path)
		w.Header().Set("X-Query", r.RawQuery)
		w.Header().Set("X-Auth", r.Header.Get("Authorization"))
		w.WriteHeader(202)
		w.Write(r.Body)
	})
	resp := celltest.Do(h, "POST", "/c/x?a=1?b", []byte("data"))
	if resp.Status != 202 || string(resp.Body) != "data" {
		t.Fatalf("got %d %q", resp.Status, resp.Body)
	}
	for k, want := range map[string]string{"X-Method": "POST", "X-Path": "/c/x", "X-Query": "a=1?b", "X-Auth": ""} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	resp = celltest.DoRequest(h, &cell.Request{Method: "GET", Path: "/", Header: cell.Header{"Authorization": {"Bearer t"}}})
	if got := resp.Header.Get("X-Auth"); got != "Bearer t" {
		t.Errorf("header not sent: %q", got)
	}
	if resp.Body != nil {
		t.Errorf("empty body is %#v", resp.Body)
	}
}
