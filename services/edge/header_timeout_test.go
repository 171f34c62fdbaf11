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

// TestHeaderTimeout: a connection that never sends a byte is closed at
// the header timeout, silently, not held for the idle timeout; between
// requests the idle timeout applies.
func TestHeaderTimeout(t *testing.T) {
	a := backend(t, "a")
	const headerTimeout = 300 * time.Millisecond
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - addresses: [%q]\n", strings.TrimPrefix(a.URL, "http://")),
		"--read-header-timeout="+headerTimeout.String(), "--idle-timeout=1m")
	addr := inst.Addrs["http"]

	t.Run("silent connection", func(t *testing.T) {
		start := time.Now() // before the edge can have accepted
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(start.Add(20 * time.Second))
		b, err := io.ReadAll(c)
		took := time.Since(start)
		if err != nil || len(b) != 0 {
			t.Fatalf("read %q, %v; want a silent close", b, err)
		}
		if took < headerTimeout || took > 10*time.Second {
			t.Fatalf("closed after %v; want the header timeout (%v), well before the idle timeout", took, headerTimeout)
		}
		t.Logf("closed after %v", took)
	})

	t.Run("part of a head", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.SetDeadline(start.Add(20 * time.Second))
		// Nothing more is sent (more bytes arriving after the edge gave
		// up would turn its close into a reset that can eat the 408).
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if took := time.Since(start); resp.StatusCode != 408 || took > 10*time.Second {
			t.Fatalf("status %d after %v, want 408 at the header timeout", resp.StatusCode, took)
		}
	})

	t.Run("idle between requests", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(c)
		for i := range 2 {
			if i == 1 {
				// Three header timeouts idle: the idle timeout (1m) holds.
				time.Sleep(3 * headerTimeout)
			}
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "a" {
				t.Fatalf("request %d: %d %q", i+1, resp.StatusCode, b)
			}
		}
	})
}
