package main

import (
	"strconv"
	"testing"

	"github.com/celluster/celluster/sdk/cell/celltest"
)

func TestCounter(t *testing.T) {
	count = 0
	for i := 1; i <= 5; i++ {
		method := "GET"
		if i%2 == 0 {
			method = "POST"
		}
		resp := celltest.Do(nil, method, "/counter/any?x="+strconv.Itoa(i), nil)
		if want := strconv.Itoa(i) + "\n"; resp.Status != 200 || string(resp.Body) != want {
			t.Fatalf("request %d: %d %q, want %q", i, resp.Status, resp.Body, want)
		}
		if resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || resp.Header.Get("X-Cell-Version") != version {
			t.Fatalf("request %d: header %v", i, resp.Header)
		}
	}
}
