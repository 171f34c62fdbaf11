package edge

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestAccessLogFastPathAllocatesNothing checks that logging a fast-path
// request stays allocation-free, with and without the query string, and
// that its line has the documented fields.
func TestAccessLogFastPathAllocatesNothing(t *testing.T) {
	for _, tt := range []struct {
		query  bool
		target string
	}{
		{true, "/a?b=1"},
		{false, "/a"},
	} {
		var out bytes.Buffer
		p := &proxy{access: newAccessLog(&out, tt.query)}
		h := &h1conn{ip: []byte("192.0.2.1"), host: []byte("example.com")}
		if err := h.req.readHead(bufio.NewReader(strings.NewReader("GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")), 4096); err != nil {
			t.Fatal(err)
		}
		if err := h.req.parse(true); err != nil {
			t.Fatal(err)
		}
		rt := &route{name: "app"}
		start := time.Now()
		p.logAccess(h, start, 200, 13, rt, "10.0.0.1:80") // grows the line buffer
		if n := testing.AllocsPerRun(100, func() { p.logAccess(h, start, 200, 13, rt, "10.0.0.1:80") }); n != 0 {
			t.Errorf("query=%v: logAccess allocates %v times per request, want 0", tt.query, n)
		}
		p.access.flush()
		line, _, _ := strings.Cut(out.String(), "\n")
		f := strings.Fields(line)
		want := "192.0.2.1 GET example.com " + tt.target + " 200 13 app 10.0.0.1:80 HTTP/1.1 -"
		if len(f) != 12 || strings.Join(append(f[1:7:7], f[8:]...), " ") != want {
			t.Fatalf("query=%v: line %q, want time %s ms ...", tt.query, line, want)
		}
	}
}

// TestWithoutQuery cuts targets at the query string, for the HTTP/1.1
// path's bytes and the HTTP/2 path's strings alike.
func TestWithoutQuery(t *testing.T) {
	for in, want := range map[string]string{
		"/a?b=1":              "/a",
		"/a":                  "/a",
		"/?":                  "/",
		"http://h/p?x#y":      "http://h/p",
		"/svc.Svc/Method":     "/svc.Svc/Method",
		"/a?b=1?c=2":          "/a",
		"*":                   "*",
		"example.com:443":     "example.com:443",
		"/p;params?token=abc": "/p;params",
	} {
		if got := withoutQuery(in); got != want {
			t.Errorf("withoutQuery(%q) = %q, want %q", in, got, want)
		}
		if got := string(withoutQuery([]byte(in))); got != want {
			t.Errorf("withoutQuery([]byte(%q)) = %q, want %q", in, got, want)
		}
	}
}
