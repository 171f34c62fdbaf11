package prober_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestProbeEndpoint scrapes /probe as Prometheus' blackbox_exporter users
// do: a passing and a failing check of each kind answer 200 with
// probe_success 1 or 0, bad parameters are a 400 naming the parameter,
// and the allowlist applies as to every job.
func TestProbeEndpoint(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/broken" {
			w.WriteHeader(http.StatusInternalServerError)
		}
		io.WriteString(w, "hello")
	}))
	defer ok.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().(*net.TCPAddr).Port // nothing accepts there once closed
	ln.Close()
	mods := filepath.Join(t.TempDir(), "modules.yaml")
	if err := os.WriteFile(mods, []byte("modules:\n  http_hello:\n    kind: http\n    timeout: 2s\n    expect_body: hel+o\n  http_bye:\n    kind: http\n    expect_body: bye\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	inst, _ := start(t, "--probe-modules="+mods)
	addr := strings.TrimPrefix(ok.URL, "http://")
	scrape := func(q url.Values) (int, string) {
		t.Helper()
		c := http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get("http://" + inst.Addrs["admin"] + "/probe?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name, module, target string
		code                 int
		want                 []string
	}{
		{"http passes", "http_2xx", addr, 200, []string{"probe_success 1", "probe_http_status_code 200", "probe_duration_seconds "}},
		{"an http URL as target", "http_2xx", ok.URL + "/x", 200, []string{"probe_success 1"}},
		{"http 500 fails", "http_2xx", ok.URL + "/broken", 200, []string{"probe_success 0", "probe_http_status_code 500", `probe_failure_info{reason="unexpected status"} 1`}},
		{"module from the file", "http_hello", addr, 200, []string{"probe_success 1"}},
		{"body mismatch", "http_bye", addr, 200, []string{"probe_success 0", `reason="body does not match"`}},
		{"tcp connect", "tcp_connect", addr, 200, []string{"probe_success 1"}},
		{"tcp refused", "tcp_connect", fmt.Sprintf("127.0.0.1:%d", closed), 200, []string{"probe_success 0", `reason="connection refused"`}},
		{"the allowlist applies", "tcp_connect", "192.0.2.1:80", 400, []string{"target: 192.0.2.1: target not in the allowlist"}},
		{"unknown module", "nope", addr, 400, []string{`module: unknown module "nope"`, "http_2xx"}},
		{"no target", "tcp_connect", "", 400, []string{"target: required"}},
		{"a bad target", "tcp_connect", "no-port", 400, []string{"target", "host:port"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := scrape(url.Values{"module": {tc.module}, "target": {tc.target}})
			if code != tc.code {
				t.Fatalf("status %d, want %d: %s", code, tc.code, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("no %q in:\n%s", w, body)
				}
			}
		})
	}
}
