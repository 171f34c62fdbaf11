package edge_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHTTPProxyFromConfig(t *testing.T) {
	a := backend(t, "a")
	api := backend(t, "api")
	conf := fmt.Sprintf(`
routes:
  - name: api
    host: example.com
    path_prefix: /api
    strip_prefix: true
    addresses: [%q]
  - name: beta
    host: example.com
    path_prefix: /
    headers: {X-Beta: "1"}
    addresses: [%q]
  - name: site
    host: example.com
    addresses: [%q]
`, strings.TrimPrefix(api.URL, "http://"), strings.TrimPrefix(api.URL, "http://"), strings.TrimPrefix(a.URL, "http://"))
	inst, _ := startEdge(t, conf)
	base := "http://" + inst.Addrs["http"]
	c := &http.Client{Timeout: 5 * time.Second}

	tests := []struct {
		name, path, host string
		hdr              map[string]string
		wantCode         int
		wantBackend      string
		wantPath         string
	}{
		{"prefix stripped", "/api/users?id=1", "example.com", nil, 200, "api", "/users?id=1"},
		{"prefix alone", "/api", "example.com", nil, 200, "api", "/"},
		{"not a prefix match", "/apix", "example.com", nil, 200, "a", "/apix"},
		{"host with port and case", "/x", "Example.COM:8080", nil, 200, "a", "/x"},
		{"header match", "/x", "example.com", map[string]string{"X-Beta": "1"}, 200, "api", "/x"},
		{"header mismatch", "/x", "example.com", map[string]string{"X-Beta": "2"}, 200, "a", "/x"},
		{"no route", "/", "other.org", nil, 404, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", base+tc.path, nil)
			req.Host = tc.host
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tc.wantCode, body)
			}
			if tc.wantBackend != "" && resp.Header.Get("X-Backend") != tc.wantBackend {
				t.Errorf("backend %q, want %q", resp.Header.Get("X-Backend"), tc.wantBackend)
			}
			if tc.wantPath != "" && resp.Header.Get("X-Got-Path") != tc.wantPath {
				t.Errorf("backend saw path %q, want %q", resp.Header.Get("X-Got-Path"), tc.wantPath)
			}
		})
	}
}

func TestHTTPForwardingHeaders(t *testing.T) {
	a := backend(t, "a")
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - addresses: [%q]\n", strings.TrimPrefix(a.URL, "http://")))
	req, _ := http.NewRequest("GET", "http://"+inst.Addrs["http"]+"/h", nil)
	req.Host = "app.example"
	req.Header.Set("Connection", "keep-alive, X-Hop")
	req.Header.Set("X-Hop", "must go")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Proxy-Authorization", "Basic Zm9vOmJhcg==")
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("Forwarded", "for=203.0.113.7")
	req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	req.Header.Set("X-Keep", "yes")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h := resp.Header
	checks := map[string]string{
		"X-Got-X-Forwarded-For":   "203.0.113.7, 127.0.0.1",
		"X-Got-X-Forwarded-Proto": "http",
		"X-Got-X-Forwarded-Host":  "app.example",
		"X-Got-Forwarded":         `for=203.0.113.7, for=127.0.0.1;host="app.example";proto=http`,
		"X-Got-Traceparent":       "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"X-Got-X-Keep":            "yes",
		"X-Got-Host":              "app.example",
	}
	for k, want := range checks {
		if got := h.Get(k); got != want {
			t.Errorf("backend saw %s = %q, want %q", strings.TrimPrefix(k, "X-Got-"), got, want)
		}
	}
	for _, k := range []string{"X-Got-X-Hop", "X-Got-Keep-Alive", "X-Got-Proxy-Authorization"} {
		if v := h.Get(k); v != "" {
			t.Errorf("hop-by-hop header %s reached the backend: %q", strings.TrimPrefix(k, "X-Got-"), v)
		}
	}
}

func TestHTTPBodiesAndTrailers(t *testing.T) {
	// A backend that streams a chunked response with a trailer.
	streamer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/echo" {
			// Read the whole upload first (HTTP/1.1 proxies are not
			// full duplex), then stream it back.
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Trailer", "X-Count")
			w.Write(b)
			w.Header().Set("X-Count", fmt.Sprint(len(b)))
			return
		}
		w.Header().Set("Trailer", "X-Done")
		fl := w.(http.Flusher)
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "part%d\n", i)
			fl.Flush()
		}
		w.Header().Set("X-Done", "yes")
	}))
	t.Cleanup(streamer.Close)
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - addresses: [%q]\n", strings.TrimPrefix(streamer.URL, "http://")))
	base := "http://" + inst.Addrs["http"]

	resp, err := http.Get(base + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "part0\npart1\npart2\n" || resp.Trailer.Get("X-Done") != "yes" {
		t.Fatalf("streamed body %q trailer %q", b, resp.Trailer.Get("X-Done"))
	}

	// A chunked upload of 1 MiB streamed through, echoed back.
	pr, pw := io.Pipe()
	go func() {
		chunk := strings.Repeat("x", 64<<10)
		for i := 0; i < 16; i++ {
			io.WriteString(pw, chunk)
		}
		pw.Close()
	}()
	resp, err = http.Post(base+"/echo", "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n != 1<<20 || resp.Trailer.Get("X-Count") != fmt.Sprint(1<<20) {
		t.Fatalf("echo: %d bytes, trailer X-Count %q", n, resp.Trailer.Get("X-Count"))
	}

	// A fixed-length upload with Expect: 100-continue.
	req, _ := http.NewRequest("POST", base+"/echo", strings.NewReader("hello"))
	req.Header.Set("Expect", "100-continue")
	resp, err = (&http.Client{Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hello" {
		t.Fatalf("expect-continue echo %q", b)
	}
}

func TestHTTPStatusCodes(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	a := backend(t, "a")
	conf := fmt.Sprintf(`
routes:
  - {name: slow, path_prefix: /slow, addresses: [%q]}
  - {name: dead, path_prefix: /dead, addresses: [%q]}
  - {name: nobody, path_prefix: /nobody, service: unregistered}
  - {name: ok, path_prefix: /, addresses: [%q]}
`, strings.TrimPrefix(slow.URL, "http://"), deadAddr, strings.TrimPrefix(a.URL, "http://"))
	inst, _ := startEdge(t, conf, "--response-timeout=300ms", "--max-header-bytes=4096", "--retries=1")
	addr := inst.Addrs["http"]

	tests := []struct {
		name, req string
		want      int
		body      string
	}{
		{"ok", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200, "a"},
		{"malformed request line", "GET /\r\nHost: x\r\n\r\n", 400, "malformed"},
		{"bad header name", "GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400, "malformed"},
		{"missing host", "GET / HTTP/1.1\r\n\r\n", 400, "Host"},
		{"smuggling: both framings", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "framing"},
		{"oversized headers", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 8000) + "\r\n\r\n", 431, "too large"},
		{"no route", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200, ""},
		{"no backend registered", "GET /nobody HTTP/1.1\r\nHost: x\r\n\r\n", 503, "unregistered"},
		{"backend refuses", "GET /dead HTTP/1.1\r\nHost: x\r\n\r\n", 502, "bad gateway"},
		{"backend timeout", "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", 504, "timeout"},
		{"http/1.0 without host", "GET / HTTP/1.0\r\n\r\n", 200, "a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := rawRequest(t, addr, tc.req)
			if code != tc.want || !strings.Contains(body, tc.body) {
				t.Fatalf("got %d %q, want %d containing %q", code, body, tc.want, tc.body)
			}
		})
	}

	// A route-less host gets 404.
	inst2, _ := startEdge(t, fmt.Sprintf("routes:\n  - {host: only.example, addresses: [%q]}\n", strings.TrimPrefix(a.URL, "http://")))
	if code, body := rawRequest(t, inst2.Addrs["http"], "GET /x HTTP/1.1\r\nHost: other.example\r\n\r\n"); code != 404 || !strings.Contains(body, "no route") {
		t.Fatalf("no route: %d %q", code, body)
	}
}

func TestHTTPSlowClientGets408(t *testing.T) {
	a := backend(t, "a")
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - addresses: [%q]\n", strings.TrimPrefix(a.URL, "http://")), "--read-header-timeout=200ms")
	c, err := net.Dial("tcp", inst.Addrs["http"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n") // and never finish
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 408 {
		t.Fatalf("status %d, want 408", resp.StatusCode)
	}
}

func TestHTTPRateLimit(t *testing.T) {
	a := backend(t, "a")
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - addresses: [%q]\n", strings.TrimPrefix(a.URL, "http://")), "--rate-limit=1", "--rate-burst=3")
	codes := map[int]int{}
	for i := 0; i < 6; i++ {
		resp, _ := get(t, http.DefaultClient, "http://"+inst.Addrs["http"]+"/", "")
		codes[resp.StatusCode]++
	}
	if codes[200] != 3 || codes[429] != 3 {
		t.Fatalf("statuses %v, want 3 x 200 then 3 x 429", codes)
	}
}

func TestWebSocketUpgradePassesThrough(t *testing.T) {
	// A backend that switches protocols and then echoes bytes upper-cased.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
		brw.Flush()
		buf := make([]byte, 1024)
		for {
			n, err := brw.Read(buf)
			if err != nil {
				return
			}
			c.Write([]byte(strings.ToUpper(string(buf[:n]))))
		}
	}))
	t.Cleanup(up.Close)
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - addresses: [%q]\n", strings.TrimPrefix(up.URL, "http://")))
	c, err := net.Dial("tcp", inst.Addrs["http"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "websocket" {
		t.Fatalf("status %d upgrade %q", resp.StatusCode, resp.Header.Get("Upgrade"))
	}
	for _, msg := range []string{"hello", "again"} {
		io.WriteString(c, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil {
			t.Fatal(err)
		}
		if string(buf) != strings.ToUpper(msg) {
			t.Fatalf("echo %q", buf)
		}
	}
}
