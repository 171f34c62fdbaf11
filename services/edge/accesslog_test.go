package edge

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestAccessLogFastPathAllocatesNothing checks that logging a fast-path
// request stays allocation-free, and that its line has the documented
// fields.
func TestAccessLogFastPathAllocatesNothing(t *testing.T) {
	var out bytes.Buffer
	p := &proxy{access: newAccessLog(&out)}
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
		t.Errorf("logAccess allocates %v times per request, want 0", n)
	}
	p.access.flush()
	line, _, _ := strings.Cut(out.String(), "\n")
	f := strings.Fields(line)
	want := "192.0.2.1 GET example.com /a?b=1 200 13 app 10.0.0.1:80 HTTP/1.1 -"
	if len(f) != 12 || strings.Join(append(f[1:7:7], f[8:]...), " ") != want {
		t.Fatalf("line %q, want time %s ms ...", line, want)
	}
}
