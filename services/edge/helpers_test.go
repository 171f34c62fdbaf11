package edge_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/switchboard-net/switchboard/pkg/config"
	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	"github.com/switchboard-net/switchboard/services/edge"
)

// fakeBalancer streams endpoint sets and records load reports.
type fakeBalancer struct {
	balancerv1.UnimplementedBalancerServer
	addr string
	srv  *grpc.Server

	mu      sync.Mutex
	sets    map[string]*balancerv1.WatchEndpointsResponse
	subs    map[chan *balancerv1.WatchEndpointsResponse]struct{}
	reports []*balancerv1.LoadReport
	batches int
	// hold, when set before the edge connects, keeps every endpoint set
	// back until it is closed (a balancer slow to answer).
	hold chan struct{}
	// gap spaces the sets a new stream starts with (sent in service
	// order): a burst that takes a while to arrive.
	gap time.Duration
}

func startBalancer(t *testing.T) *fakeBalancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeBalancer{addr: ln.Addr().String(), srv: grpc.NewServer(),
		sets: map[string]*balancerv1.WatchEndpointsResponse{}, subs: map[chan *balancerv1.WatchEndpointsResponse]struct{}{}}
	balancerv1.RegisterBalancerServer(f.srv, f)
	go f.srv.Serve(ln)
	t.Cleanup(f.srv.Stop)
	return f
}

func (f *fakeBalancer) WatchEndpoints(req *balancerv1.WatchEndpointsRequest, st grpc.ServerStreamingServer[balancerv1.WatchEndpointsResponse]) error {
	ch := make(chan *balancerv1.WatchEndpointsResponse, 64)
	f.mu.Lock()
	initial := make([]*balancerv1.WatchEndpointsResponse, 0, len(f.sets))
	for _, s := range f.sets {
		initial = append(initial, s)
	}
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs, ch)
		f.mu.Unlock()
	}()
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-st.Context().Done():
			return nil
		}
	}
	slices.SortFunc(initial, func(a, b *balancerv1.WatchEndpointsResponse) int {
		return strings.Compare(a.GetService(), b.GetService())
	})
	for i, s := range initial {
		if i > 0 && f.gap > 0 {
			time.Sleep(f.gap)
		}
		if err := st.Send(s); err != nil {
			return err
		}
	}
	for {
		select {
		case <-st.Context().Done():
			return nil
		case s := <-ch:
			if err := st.Send(s); err != nil {
				return err
			}
		}
	}
}

func (f *fakeBalancer) Report(_ context.Context, req *balancerv1.ReportRequest) (*balancerv1.ReportResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, req.GetReports()...)
	f.batches++
	return &balancerv1.ReportResponse{Accepted: uint32(len(req.GetReports()))}, nil
}

func (f *fakeBalancer) push(s *balancerv1.WatchEndpointsResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sets[s.GetService()] = s
	for ch := range f.subs {
		ch <- s
	}
}

func (f *fakeBalancer) reportCount() (n, batches int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reports), f.batches
}

// endpoint builds an Endpoint for a loopback backend URL or address.
func endpoint(id, addr string, tags ...string) *balancerv1.Endpoint {
	addr = strings.TrimPrefix(addr, "http://")
	h, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	return &balancerv1.Endpoint{Id: id, Address: h, Port: uint32(port), Weight: 1, EffectiveWeight: 1, Healthy: true, Tags: tags}
}

// backend is a loopback HTTP backend that names itself in X-Backend and
// echoes what it received as headers prefixed X-Got-.
func backend(t *testing.T, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		for k, v := range r.Header {
			w.Header()["X-Got-"+k] = v
		}
		w.Header().Set("X-Got-Path", r.URL.RequestURI())
		w.Header().Set("X-Got-Host", r.Host)
		if r.Method == http.MethodPost {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s:%d:%s", name, len(b), r.Trailer.Get("X-Sum"))
			return
		}
		io.WriteString(w, name)
	}))
	t.Cleanup(s.Close)
	return s
}

// startEdge runs the edge with a config file (may be "") and extra flags.
func startEdge(t testing.TB, conf string, args ...string) (*servicetest.Instance, string) {
	t.Helper()
	return startEdgeEnv(t, config.NoEnv, conf, args...)
}

// startEdgeEnv is startEdge with an environment (for OTEL_* variables).
func startEdgeEnv(t testing.TB, env config.LookupFunc, conf string, args ...string) (*servicetest.Instance, string) {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "rt.sock")
	all := []string{"--http-addr=127.0.0.1:0", "--wire-addr=127.0.0.1:0", "--runtime-socket=" + sock,
		"--report-interval=100ms"}
	if conf != "" {
		p := filepath.Join(dir, "edge.yaml")
		if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		all = append(all, "--config="+p)
	}
	has := func(prefix string) bool {
		for _, a := range args {
			if strings.HasPrefix(a, prefix) {
				return true
			}
		}
		return false
	}
	for _, f := range []string{"--balancer-addr", "--registry-addr", "--prober-addr"} {
		if !has(f) {
			all = append(all, f+"=")
		}
	}
	// Test backends listen on loopback: let the balancer's endpoints there
	// get traffic, unless the test says otherwise.
	if has("--balancer-addr") && !has("--allow-loopback") {
		all = append(all, "--allow-loopback")
	}
	inst := servicetest.StartEnv(t, edge.Spec(), env, append(all, args...)...)
	return inst, sock
}

// runtimeCmd sends one command to the runtime socket and returns the answer.
func runtimeCmd(t *testing.T, sock, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "%s\n", cmd)
	c.(*net.UnixConn).CloseWrite()
	b, _ := io.ReadAll(c)
	return string(b)
}

// rawRequest writes raw bytes to addr and returns the response status
// line and the whole answer.
func rawRequest(t *testing.T, addr, req string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading response to %q: %v", req[:min(len(req), 60)], err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func get(t *testing.T, c *http.Client, url, host string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", url, host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// metricsText returns the edge's Prometheus metrics from its admin port.
func metricsText(t *testing.T, inst *servicetest.Instance) string {
	t.Helper()
	resp, body := get(t, http.DefaultClient, "http://"+inst.Addrs["admin"]+"/metrics", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	return body
}
