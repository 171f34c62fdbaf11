package edge_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAbsoluteFormReplacesHost: a request with an absolute-form target is
// routed and forwarded by the target's authority, whatever its Host
// header says (RFC 9112 §3.2.2).
func TestAbsoluteFormReplacesHost(t *testing.T) {
	internal := backend(t, "internal")
	public := backend(t, "public")
	inst, _ := startEdge(t, fmt.Sprintf(`
routes:
  - {host: internal.test, addresses: [%q]}
  - {host: public.test, addresses: [%q]}
`, strings.TrimPrefix(internal.URL, "http://"), strings.TrimPrefix(public.URL, "http://")))
	addr := inst.Addrs["http"]
	tests := []struct {
		name, req             string
		code                  int
		backend, host, xfHost string
	}{
		{"absolute form wins over Host", "GET http://internal.test/x?q=1 HTTP/1.1\r\nHost: public.test\r\n\r\n", 200, "internal", "internal.test", "internal.test"},
		{"authority with port", "GET http://Internal.test:8080/x HTTP/1.1\r\nHost: public.test\r\n\r\n", 200, "internal", "Internal.test:8080", "Internal.test:8080"},
		{"no path", "GET http://public.test HTTP/1.1\r\nHost: internal.test\r\n\r\n", 200, "public", "public.test", "public.test"},
		{"HTTP/1.0 without Host", "GET http://public.test/ HTTP/1.0\r\n\r\n", 200, "public", "public.test", "public.test"},
		{"origin form keeps Host", "GET /x HTTP/1.1\r\nHost: public.test\r\n\r\n", 200, "public", "public.test", "public.test"},
		{"userinfo refused", "GET http://user@internal.test/ HTTP/1.1\r\nHost: public.test\r\n\r\n", 400, "", "", ""},
		{"empty authority refused", "GET http:///x HTTP/1.1\r\nHost: public.test\r\n\r\n", 400, "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, tc.req)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.code)
			}
			if tc.code != 200 {
				return
			}
			h := resp.Header
			if h.Get("X-Backend") != tc.backend || h.Get("X-Got-Host") != tc.host || h.Get("X-Got-X-Forwarded-Host") != tc.xfHost {
				t.Fatalf("backend %q saw Host %q, X-Forwarded-Host %q; want %q, %q, %q",
					h.Get("X-Backend"), h.Get("X-Got-Host"), h.Get("X-Got-X-Forwarded-Host"), tc.backend, tc.host, tc.xfHost)
			}
		})
	}
}
