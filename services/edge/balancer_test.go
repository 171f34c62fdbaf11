package edge_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	edgev1 "github.com/switchboard-net/switchboard/proto/switchboard/edge/v1"
)

func TestRoutesAndEndpointsFromBalancer(t *testing.T) {
	bal := startBalancer(t)
	a, b := backend(t, "a"), backend(t, "b")
	bal.push(&balancerv1.WatchEndpointsResponse{Service: "web", Endpoints: []*balancerv1.Endpoint{
		endpoint("web-a", a.URL, "edge.route=example.com/web"),
	}})
	inst, sock := startEdge(t, "", "--balancer-addr="+bal.addr)
	base := "http://" + inst.Addrs["http"]
	c := &http.Client{Timeout: 5 * time.Second}

	// The route comes from the registry tag, live, with no restart.
	eventually(t, 5*time.Second, "the tagged route", func() bool {
		resp, _ := get(t, c, base+"/web/x", "example.com")
		return resp.StatusCode == 200 && resp.Header.Get("X-Backend") == "a"
	})
	// A new endpoint set moves traffic.
	bal.push(&balancerv1.WatchEndpointsResponse{Service: "web", Endpoints: []*balancerv1.Endpoint{
		endpoint("web-b", b.URL, "edge.route=example.com/web"),
	}})
	eventually(t, 5*time.Second, "traffic on the new endpoint", func() bool {
		resp, _ := get(t, c, base+"/web/x", "example.com")
		return resp.Header.Get("X-Backend") == "b"
	})
	// A second service with its own tag appears in the routes.
	bal.push(&balancerv1.WatchEndpointsResponse{Service: "api", Endpoints: []*balancerv1.Endpoint{
		endpoint("api-a", a.URL, "edge.route=/api"),
	}})
	eventually(t, 5*time.Second, "the api route", func() bool {
		return strings.Contains(runtimeCmd(t, sock, "show routes"), "api")
	})
	// Outcomes flow back to the balancer in batches.
	eventually(t, 5*time.Second, "load reports", func() bool {
		n, _ := bal.reportCount()
		return n >= 2
	})
	// With the balancer gone the last sets stay in use.
	bal.srv.Stop()
	for i := 0; i < 5; i++ {
		resp, _ := get(t, c, base+"/web/x", "example.com")
		if resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "b" {
			t.Fatalf("after the balancer stopped: %d from %q", resp.StatusCode, resp.Header.Get("X-Backend"))
		}
	}
}

func TestNoHealthyBackendIs503(t *testing.T) {
	bal := startBalancer(t)
	a := backend(t, "a")
	bal.push(&balancerv1.WatchEndpointsResponse{Service: "web", Endpoints: []*balancerv1.Endpoint{endpoint("web-a", a.URL, "edge.route=/")}})
	inst, sock := startEdge(t, "", "--balancer-addr="+bal.addr)
	eventually(t, 5*time.Second, "the route", func() bool {
		return strings.Contains(runtimeCmd(t, sock, "show routes"), "web")
	})
	if got := runtimeCmd(t, sock, "disable backend web web-a"); !strings.HasPrefix(got, "ok") {
		t.Fatal(got)
	}
	code, body := rawRequest(t, inst.Addrs["http"], "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if code != 503 || !strings.Contains(body, "no backend available for service web") {
		t.Fatalf("%d %q", code, body)
	}
}

// TestBackendKilledUnderLoad kills one of three backends while clients
// send idempotent requests: with retries on, none fails, and the dead
// backend is ejected within one check period.
func TestBackendKilledUnderLoad(t *testing.T) {
	bal := startBalancer(t)
	a, b, victim := backend(t, "a"), backend(t, "b"), backend(t, "victim")
	const checkPeriod = time.Second
	bal.push(&balancerv1.WatchEndpointsResponse{Service: "web",
		Policy: &balancerv1.Policy{Name: "round_robin", Outlier: &balancerv1.OutlierDetection{
			ConsecutiveFailures: 3, BaseEjectionTime: durationpb.New(30 * time.Second)}},
		Endpoints: []*balancerv1.Endpoint{
			endpoint("a", a.URL, "edge.route=/"), endpoint("b", b.URL, "edge.route=/"), endpoint("victim", victim.URL, "edge.route=/"),
		}})
	inst, sock := startEdge(t, "", "--balancer-addr="+bal.addr, "--retries=2")
	base := "http://" + inst.Addrs["http"]
	eventually(t, 5*time.Second, "the route", func() bool {
		return strings.Contains(runtimeCmd(t, sock, "show backends web"), "victim")
	})

	var total, failed atomic.Int64
	var firstErr atomic.Value
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			for ctx.Err() == nil {
				resp, err := c.Get(base + "/load")
				total.Add(1)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, resp.Status)
				}
			}
		}()
	}
	eventually(t, 10*time.Second, "load on the victim", func() bool {
		return total.Load() > 1000
	})
	victim.CloseClientConnections()
	victim.Close()
	killed := time.Now()
	eventually(t, 5*time.Second, "the victim's ejection", func() bool {
		for _, line := range strings.Split(runtimeCmd(t, sock, "show backends web"), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && f[1] == "victim" {
				return f[4] == "false"
			}
		}
		return false
	})
	ejectedAfter := time.Since(killed)
	// Keep the load on for a while after the ejection.
	before := total.Load()
	eventually(t, 10*time.Second, "more load", func() bool { return total.Load() > before+1500 })
	cancel()
	wg.Wait()
	t.Logf("requests %d, failed %d, victim ejected %v after the kill", total.Load(), failed.Load(), ejectedAfter)
	if failed.Load() != 0 {
		t.Errorf("%d of %d idempotent requests failed (first: %v)", failed.Load(), total.Load(), firstErr.Load())
	}
	if ejectedAfter > checkPeriod {
		t.Errorf("ejected after %v, want within one check period (%v)", ejectedAfter, checkPeriod)
	}
}

func TestRuntimeAPI(t *testing.T) {
	bal := startBalancer(t)
	a, b := backend(t, "a"), backend(t, "b")
	bal.push(&balancerv1.WatchEndpointsResponse{Service: "web", Endpoints: []*balancerv1.Endpoint{
		endpoint("web-a", a.URL, "edge.route=example.com/"), endpoint("web-b", b.URL, "edge.route=example.com/"),
	}})
	inst, sock := startEdge(t, "routes:\n  - {name: static, path_prefix: /static, addresses: [\"127.0.0.1:1\"]}\n",
		"--balancer-addr="+bal.addr, "--runtime-addr=127.0.0.1:0")
	eventually(t, 5*time.Second, "the backends", func() bool {
		return strings.Contains(runtimeCmd(t, sock, "show backends"), "web-b")
	})
	tests := []struct{ cmd, want string }{
		{"help", "show routes"},
		{"show routes", "example.com"},
		{"show routes", "static"},
		{"show backends web", "web-a"},
		{"show backends nope", `error: unknown service "nope"`},
		{"disable backend web web-a", "ok: backend web/web-a disabled"},
		{"disable backend web", "error: usage: disable backend <service> <id>"},
		{"disable backend web zzz", "error: not found: backend \"zzz\""},
		{"set weight web web-b 5", "ok: backend web/web-b weight 5"},
		{"set weight web web-b lots", "error: weight \"lots\""},
		{"show frobs", "error: unknown show command"},
		{"frobnicate", `error: unknown command "frobnicate"`},
	}
	for _, tc := range tests {
		if got := runtimeCmd(t, sock, tc.cmd); !strings.Contains(got, tc.want) {
			t.Errorf("%q answered %q, want it to contain %q", tc.cmd, got, tc.want)
		}
	}
	// With web-a disabled every request goes to web-b.
	c := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < 6; i++ {
		resp, _ := get(t, c, "http://"+inst.Addrs["http"]+"/", "example.com")
		if got := resp.Header.Get("X-Backend"); got != "b" {
			t.Fatalf("request %d went to %q with web-a disabled", i, got)
		}
	}
	if got := runtimeCmd(t, sock, "enable backend web web-a"); !strings.Contains(got, "enabled") {
		t.Fatal(got)
	}
	seen := map[string]bool{}
	for i := 0; i < 12; i++ {
		resp, _ := get(t, c, "http://"+inst.Addrs["http"]+"/", "example.com")
		seen[resp.Header.Get("X-Backend")] = true
	}
	if !seen["a"] {
		t.Fatal("web-a got nothing after enable")
	}

	// The same over the opt-in loopback TCP port.
	// And over gRPC.
	cc, err := grpc.NewClient(inst.Addrs["grpc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := edgev1.NewEdgeClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rs, err := api.ListRoutes(ctx, &edgev1.ListRoutesRequest{})
	if err != nil || len(rs.GetRoutes()) < 2 {
		t.Fatalf("ListRoutes: %v %v", rs, err)
	}
	dis := true
	sb, err := api.SetBackend(ctx, &edgev1.SetBackendRequest{Service: "web", Id: "web-b", Disabled: &dis})
	if err != nil || !sb.GetBackend().GetDisabled() {
		t.Fatalf("SetBackend: %v %v", sb, err)
	}
	_, err = api.SetBackend(ctx, &edgev1.SetBackendRequest{Service: "web"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "id") {
		t.Fatalf("SetBackend without id: %v", err)
	}
	_, err = api.SetBackend(ctx, &edgev1.SetBackendRequest{Service: "web", Id: "nope", Disabled: &dis})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("SetBackend unknown id: %v", err)
	}
	_, err = api.ListBackends(ctx, &edgev1.ListBackendsRequest{Service: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("ListBackends unknown service: %v", err)
	}
}

// TestColdStartWaitsForFirstEndpointSet: a freshly started edge (a
// restarted container) holds a request that matches no route until the
// balancer's first endpoint set arrives, instead of answering 404, and
// says it is not ready meanwhile.
func TestColdStartWaitsForFirstEndpointSet(t *testing.T) {
	bal := startBalancer(t)
	bal.hold = make(chan struct{})
	bal.gap = 20 * time.Millisecond
	a := backend(t, "a")
	bal.push(&balancerv1.WatchEndpointsResponse{Service: "web", Endpoints: []*balancerv1.Endpoint{
		endpoint("web-a", a.URL, "edge.route=/"),
	}})
	// Other services' sets come first in the same burst, one message
	// each: the wait must cover the burst, not end at its first message.
	for i := range 5 {
		svc := fmt.Sprintf("app-%d", i)
		bal.push(&balancerv1.WatchEndpointsResponse{Service: svc, Endpoints: []*balancerv1.Endpoint{endpoint(svc+"-a", a.URL)}})
	}
	inst, _ := startEdge(t, "", "--balancer-addr="+bal.addr)

	resp, _ := get(t, http.DefaultClient, "http://"+inst.Addrs["admin"]+"/readyz", "")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before the first endpoint set: %s, want 503", resp.Status)
	}
	// The request is written before the set is released: it must wait for
	// the set, not be answered 404.
	written := make(chan struct{})
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { close(written) }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "http://"+inst.Addrs["http"]+"/x", nil)
	type result struct {
		code    int
		backend string
		err     error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		resp.Body.Close()
		done <- result{code: resp.StatusCode, backend: resp.Header.Get("X-Backend")}
	}()
	select {
	case <-written:
	case r := <-done:
		t.Fatalf("answered before the first endpoint set: %d %v", r.code, r.err)
	}
	close(bal.hold)
	r := <-done
	if r.err != nil || r.code != 200 || r.backend != "a" {
		t.Fatalf("request sent before the first endpoint set: %d from %q (%v), want 200 from a", r.code, r.backend, r.err)
	}
	eventually(t, 5*time.Second, "/readyz 200 after the first endpoint set", func() bool {
		resp, _ := get(t, http.DefaultClient, "http://"+inst.Addrs["admin"]+"/readyz", "")
		return resp.StatusCode == http.StatusOK
	})
}
