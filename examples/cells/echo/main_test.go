package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// response is a CGI response as a client of the program sees it.
type response struct {
	Status int
	Header textproto.MIMEHeader
	Body   []byte
}

// parseResponse reads a CGI response (RFC 3875 §6): header lines, a blank
// line, the body; the status from the Status header, 200 without one.
// Examples use only the SDK and the plugin API, so the test reads the
// output itself rather than through the node's CGI package.
func parseResponse(b []byte) (response, error) {
	r := bufio.NewReader(bytes.NewReader(b))
	h, err := textproto.NewReader(r).ReadMIMEHeader()
	if err != nil {
		return response{}, fmt.Errorf("CGI header: %w", err)
	}
	status := 200
	if s := h.Get("Status"); s != "" {
		code, _, _ := strings.Cut(s, " ")
		if status, err = strconv.Atoi(code); err != nil {
			return response{}, fmt.Errorf("CGI status %q: %w", s, err)
		}
	}
	body, err := io.ReadAll(r)
	return response{Status: status, Header: h, Body: body}, err
}

func TestEcho(t *testing.T) {
	environ := []string{
		"GATEWAY_INTERFACE=CGI/1.1",
		"REQUEST_METHOD=POST",
		"SCRIPT_NAME=/echo",
		"PATH_INFO=/a/b",
		"QUERY_STRING=x=1&y=a%3Db",
		"CONTENT_TYPE=text/plain",
		"CONTENT_LENGTH=11",
		"HTTP_ACCEPT=*/*",
		"HTTP_X_FORWARDED_FOR=10.0.0.1",
		"HTTP_COOKIE=a=1; b=2",
		"REMOTE_ADDR=127.0.0.1",
	}
	var out bytes.Buffer
	if err := run(environ, strings.NewReader("hello world"), &out); err != nil {
		t.Fatal(err)
	}
	resp, err := parseResponse(out.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, out.Bytes())
	}
	if resp.Status != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d header %v", resp.Status, resp.Header)
	}
	var got reply
	if err := json.Unmarshal(resp.Body, &got); err != nil {
		t.Fatal(err)
	}
	want := reply{
		Method: "POST",
		Path:   "/echo/a/b",
		Query:  "x=1&y=a%3Db",
		Body:   "hello world",
		Headers: map[string]string{
			"accept":          "*/*",
			"x-forwarded-for": "10.0.0.1",
			"cookie":          "a=1; b=2",
			"content-type":    "text/plain",
			"content-length":  "11",
		},
		Meta: map[string]string{"remote_addr": "127.0.0.1"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if !strings.HasPrefix(string(resp.Body), `{"method":"POST","path":"/echo/a/b","query":`) {
		t.Errorf("field order: %s", resp.Body)
	}
}

func TestEchoStatus(t *testing.T) {
	for query, want := range map[string]int{
		"status=404":     404,
		"a=1&status=201": 201,
		"status=999":     999,
		"status=200":     200,
		"status=42":      200,
		"status=1000":    200,
		"status=abc":     200,
		"status=+20":     200,
		"status=099":     200,
		"":               200,
	} {
		var out bytes.Buffer
		env := []string{"REQUEST_METHOD=GET", "SCRIPT_NAME=/echo", "QUERY_STRING=" + query}
		if err := run(env, strings.NewReader(""), &out); err != nil {
			t.Fatal(err)
		}
		resp, err := parseResponse(out.Bytes())
		if err != nil {
			t.Fatalf("%q: %v\n%s", query, err, out.Bytes())
		}
		if resp.Status != want {
			t.Errorf("%q: status %d, want %d", query, resp.Status, want)
		}
	}
	var out bytes.Buffer
	run([]string{"QUERY_STRING=status=404"}, strings.NewReader(""), &out)
	if !strings.Contains(out.String(), "Status: 404 Not Found\n") {
		t.Errorf("output %q", out.String())
	}
}

func TestEchoEmpty(t *testing.T) {
	var out bytes.Buffer
	if err := run(nil, strings.NewReader(""), &out); err != nil {
		t.Fatal(err)
	}
	want := "Content-Type: application/json\n\n" +
		`{"method":"","path":"","query":"","body":"","headers":{},"meta":{}}` + "\n"
	if out.String() != want {
		t.Errorf("got %q\nwant %q", out.String(), want)
	}
}

func TestEchoReadError(t *testing.T) {
	boom := errors.New("boom")
	err := run(nil, iotest.ErrReader(boom), new(bytes.Buffer))
	if !errors.Is(err, boom) {
		t.Errorf("err = %v", err)
	}
}
