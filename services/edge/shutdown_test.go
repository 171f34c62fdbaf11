package edge_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestShutdownDrainsInFlightRequests(t *testing.T) {
	started := make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "finished")
	}))
	t.Cleanup(slow.Close)
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - addresses: [%q]\n", strings.TrimPrefix(slow.URL, "http://")))
	addr := inst.Addrs["http"]
	// An idle keep-alive connection must not hold the shutdown.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	type result struct {
		code  int
		body  string
		close bool
		err   error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{code: resp.StatusCode, body: string(b), close: resp.Close}
	}()
	<-started
	t0 := time.Now()
	if err := inst.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	r := <-done
	if r.err != nil || r.code != 200 || r.body != "finished" || !r.close {
		t.Fatalf("in-flight request: %+v", r)
	}
	if d := time.Since(t0); d > 4*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("still accepting after shutdown")
	}
}

func TestH2CPriorKnowledge(t *testing.T) {
	a := backend(t, "a")
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - addresses: [%q]\n", strings.TrimPrefix(a.URL, "http://")))
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos}
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + inst.Addrs["http"] + "/h2c")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(b) != "a" {
		t.Fatalf("%s %d %q", resp.Proto, resp.StatusCode, b)
	}
}
