package edge

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

// FuzzParseRequestHead feeds arbitrary bytes to the fast path's head
// reader and parser: no panics, bounded size, and spans inside the buffer.
func FuzzParseRequestHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /a?b HTTP/1.0\r\nContent-Length: 3\r\nConnection: keep-alive, X-Foo\r\n\r\nabc",
		"GET http://h/p HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
		"\r\n\r\nGET / HTTP/1.1\nHost: x\n\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET / HTTP/1.1\r\n folded\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var h head
		if err := h.readHead(bufio.NewReaderSize(bytes.NewReader(b), 16), 4096); err != nil {
			return
		}
		if len(h.buf) > 4096 {
			t.Fatalf("head of %d bytes over the bound", len(h.buf))
		}
		if err := h.parse(true); err != nil {
			return
		}
		for _, sp := range []span{h.l1, h.l2, h.l3} {
			_ = sp.of(h.buf)
		}
		for _, hd := range h.hdrs {
			_, _ = hd.name.of(h.buf), hd.val.of(h.buf)
		}
		_ = h.inConnTokens([]byte("x-foo"))
	})
}

// FuzzParseResponseHead does the same for backend responses.
func FuzzParseResponseHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 101\r\nUpgrade: websocket\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var h head
		if h.readHead(bufio.NewReaderSize(bytes.NewReader(b), 16), 4096) != nil {
			return
		}
		if h.parse(false) == nil {
			_ = atoi3(h.l2.of(h.buf))
		}
	})
}

// FuzzParseConfig checks the config parser never panics.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("routes:\n  - {host: a, path_prefix: /x, addresses: [\"127.0.0.1:1\"]}\n"))
	f.Add([]byte(`{"tcp": [{"listen": "127.0.0.1:0", "service": "db", "idle_timeout": "1s"}]}`))
	f.Add([]byte("routes:\n  - name: a\n    host: b\n   path_prefix: /x\n"))
	f.Add([]byte("routes:\n  - &b {name: a, service: web}\n  - <<: *b\n    name: c\n    policy: leastconn\n"))
	f.Add([]byte("services:\n  web: [\"1.2.3.4:5\", \"1.2.3.4:5\"]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// An error is one log line, whatever the file holds.
		if _, err := ParseConfig(b); err != nil && strings.ContainsAny(err.Error(), "\r\n") {
			t.Fatalf("error spans lines: %q", err)
		}
	})
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"routes:\n  - {path_prefix: x, service: a}\n", "routes[0].path_prefix: must start with /"},
		{"routes:\n  - {service: a, addresses: [\"1.2.3.4:5\"]}\n", "routes[0]: exactly one of service and addresses"},
		{"routes:\n  - {addresses: [\"nope\"]}\n", "routes[0].addresses[0]"},
		{"tcp:\n  - {listen: x, service: a}\n", "tcp[0].listen"},
		{"udp:\n  - {listen: \":1\", service: a, max_flows: -1}\n", "udp[0].max_flows"},
		{"tcp:\n  - {listen: \":1\", service: a, socket_buffer: -1}\n", "tcp[0].socket_buffer"},
		{"bogus: 1\n", "bogus: unknown field"},
		{"services:\n  a:b: [\"1.2.3.4:5\"]\n", "services.a:b"},
		{"tcp:\n  - {listen: \":1\", service: a, idle_timeout: soon}\n", "duration \"soon\""},
	}
	for _, tc := range tests {
		_, err := ParseConfig([]byte(tc.in))
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("%q: error %v, want it to mention %q", tc.in, err, tc.want)
		}
	}
	c, err := ParseConfig([]byte("routes:\n  - {host: Example.COM, addresses: [\"127.0.0.1:1\"]}\n"))
	if err != nil || c.Routes[0].Host != "example.com" || c.Routes[0].PathPrefix != "/" || c.Routes[0].Name != "example.com/" {
		t.Fatalf("defaults: %+v %v", c, err)
	}
}
