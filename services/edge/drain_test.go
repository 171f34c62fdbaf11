package edge_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// rawGet sends one keep-alive GET on c and returns the response (body read).
func rawGet(t *testing.T, c net.Conn, br *bufio.Reader) *http.Response {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /k HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp
}

func readyzCode(t *testing.T, admin string) int {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + admin + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestDrainWindow: on SIGTERM with --drain-delay, the edge reports not
// ready (/readyz 503, grpc.health.v1 NOT_SERVING) but keeps accepting for
// the window; every HTTP/1.1 answer carries Connection: close and HTTP/2
// connections get GOAWAY, so clients move to new connections; after the
// window the listeners close.
func TestDrainWindow(t *testing.T) {
	const window = 5 * time.Second // the checks below take milliseconds
	a := backend(t, "a")
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - addresses: [%q]\n", strings.TrimPrefix(a.URL, "http://")),
		"--drain-delay="+window.String())
	addr := inst.Addrs["http"]

	// Clients connected before shutdown: a raw HTTP/1.1 keep-alive
	// connection, and an h2c one.
	kept, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	kbr := bufio.NewReader(kept)
	if resp := rawGet(t, kept, kbr); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("before shutdown: %s, close %v", resp.Status, resp.Close)
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Transport: &http.Transport{Protocols: &protos}, Timeout: 5 * time.Second}
	h2get := func() (reused bool) {
		t.Helper()
		tr := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), tr), http.MethodGet, "http://"+addr+"/h2", nil)
		resp, err := h2.Do(req)
		if err != nil {
			t.Fatalf("h2c: %v", err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
			t.Fatalf("h2c: %s %s", resp.Proto, resp.Status)
		}
		return reused
	}
	h2get()
	if !h2get() {
		t.Fatal("h2c connection not reused before shutdown")
	}

	t0 := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- inst.Stop() }()
	eventually(t, window/2, "/readyz to report 503", func() bool { return readyzCode(t, inst.Addrs["admin"]) == 503 })

	// Inside the window.
	hc := inst.Conn(t)
	if st, err := healthpb.NewHealthClient(hc).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil || st.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("grpc health in the window: %v, %v; want NOT_SERVING", st.GetStatus(), err)
	}
	if resp := rawGet(t, kept, kbr); resp.StatusCode != 200 || !resp.Close {
		t.Errorf("kept-alive connection in the window: %s, Connection: close %v; want 200 and close", resp.Status, resp.Close)
	}
	if n, err := kbr.ReadByte(); err != io.EOF {
		t.Errorf("kept-alive connection still open after Connection: close: %v, %v", n, err)
	}
	fresh, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("a new connection was refused in the window: %v", err)
	}
	defer fresh.Close()
	if resp := rawGet(t, fresh, bufio.NewReader(fresh)); resp.StatusCode != 200 || !resp.Close {
		t.Errorf("new connection in the window: %s, Connection: close %v; want 200 and close", resp.Status, resp.Close)
	}
	// HTTP/2: the connection in use gets GOAWAY after its stream; the
	// client's next request goes out on a new connection.
	h2get()
	moved := false
	for range 20 {
		if !h2get() {
			moved = true
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !moved {
		t.Error("h2c client kept its connection in the window (no GOAWAY)")
	}

	if err := <-stopped; err != nil {
		t.Fatalf("stop: %v", err)
	}
	if d := time.Since(t0); d < window {
		t.Errorf("shutdown took %v, less than the drain window", d)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("still accepting after shutdown")
	}
}

// TestDrainServesFreshConnection: a connection accepted before the
// listeners closed, whose request arrives once the drain has begun, is
// answered (with Connection: close), not closed unanswered: a client does
// not retry a request on a fresh connection.
func TestDrainServesFreshConnection(t *testing.T) {
	a := backend(t, "a")
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - addresses: [%q]\n", strings.TrimPrefix(a.URL, "http://")))
	addr := inst.Addrs["http"]
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The accept queue is first in, first out: once a connection dialled
	// after c is answered, c has been accepted too.
	if code, _ := rawRequest(t, addr, "GET /later HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); code != 200 {
		t.Fatalf("GET /later: %d", code)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- inst.Stop() }()
	var closedAt time.Time
	eventually(t, 5*time.Second, "the listener to close", func() bool {
		d, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			d.Close()
			return false
		}
		closedAt = time.Now()
		return true
	})
	c.SetDeadline(time.Now().Add(10 * time.Second))
	_, werr := io.WriteString(c, "GET /k HTTP/1.1\r\nHost: x\r\n\r\n")
	if since := time.Since(closedAt); since > 500*time.Millisecond {
		t.Skipf("the request went out %v after the listener closed, too late to check within the fresh-connection grace", since)
	}
	if werr != nil {
		t.Fatal(werr)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("fresh connection during the drain was closed unanswered: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("fresh connection during the drain: %s, Connection: close %v; want 200 and close", resp.Status, resp.Close)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("stop: %v", err)
	}
}
