package edge_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
)

// TestSpansMetricsAndAccessLog checks that a proxied request is a span in
// the caller's trace (with traceparent forwarded to the app), is counted
// per route and backend, and is written to the access log.
func TestSpansMetricsAndAccessLog(t *testing.T) {
	col := servicetest.StartCollector(t)
	env := col.Env
	a := backend(t, "a")
	logPath := filepath.Join(t.TempDir(), "access.log")
	inst, _ := startEdgeEnv(t, env, fmt.Sprintf("routes:\n  - {name: app, addresses: [%q]}\n", strings.TrimPrefix(a.URL, "http://")),
		"--access-log="+logPath)

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest("GET", "http://"+inst.Addrs["http"]+"/traced", nil)
	req.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tp := resp.Header.Get("X-Got-Traceparent")
	if !strings.HasPrefix(tp, "00-"+traceID+"-") || strings.Contains(tp, "00f067aa0ba902b7") {
		t.Fatalf("the app saw traceparent %q, want the caller's trace with the edge's span as parent", tp)
	}

	// The HTTP/2 path (h2c here) makes spans too.
	const traceID2 = "5bf92f3577b34da6a3ce929d0e0e4737"
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &protos}, Timeout: 5 * time.Second}
	req2, _ := http.NewRequest("GET", "http://"+inst.Addrs["http"]+"/traced2", nil)
	req2.Header.Set("Traceparent", "00-"+traceID2+"-00f067aa0ba902b7-01")
	resp2, err := h2c.Do(req2)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if tp := resp2.Header.Get("X-Got-Traceparent"); resp2.ProtoMajor != 2 || !strings.HasPrefix(tp, "00-"+traceID2+"-") || strings.Contains(tp, "00f067aa0ba902b7") {
		t.Fatalf("h2c: %s, the app saw traceparent %q", resp2.Proto, tp)
	}

	m := metricsText(t, inst)
	for _, want := range []string{
		`switchboard_edge_http_requests_total{code="2xx",route="app"} 2`,
		`switchboard_edge_backend_requests_total{backend="` + strings.TrimPrefix(a.URL, "http://") + `",service="static:app"} 2`,
		`switchboard_edge_http_request_duration_seconds_count{route="app"} 2`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	if err := inst.Stop(); err != nil { // flushes spans and the access log
		t.Fatal(err)
	}
	names := col.Spans(traceID)
	names2 := col.Spans(traceID2)
	if len(names) == 0 || !strings.Contains(strings.Join(names, ","), "GET app") {
		t.Fatalf("spans in the trace: %v", names)
	}
	if !strings.Contains(strings.Join(names2, ","), "GET app") {
		t.Fatalf("spans in the h2c trace: %v", names2)
	}
	eventually(t, 5*time.Second, "the access log line", func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), " GET ") && strings.Contains(string(b), " /traced 200 ")
	})
}

// TestAccessLogHTTP2AndGRPC checks that requests served over HTTP/2 (h2c
// and TLS) and gRPC calls through the edge are written to the access log
// in the same format as HTTP/1.1 requests, with the protocol and, for
// gRPC, the grpc-status, and are counted per route and per backend.
func TestAccessLogHTTP2AndGRPC(t *testing.T) {
	web := backend(t, "web")
	webAddr := strings.TrimPrefix(web.URL, "http://")
	gb := startGRPCBackend(t, "g")
	dir := t.TempDir()
	cert, key := writeCert(t, dir, "a.example")
	logPath := filepath.Join(dir, "access.log")
	inst, _ := startEdge(t, fmt.Sprintf(`routes:
  - {name: web, path_prefix: /web, addresses: [%q]}
  - {name: grpc, path_prefix: /grpc.health.v1.Health, addresses: [%q]}
`, webAddr, gb.addr), "--access-log="+logPath, "--https-addr=127.0.0.1:0", "--https-cert="+cert, "--https-key="+key)

	// The same GET over HTTP/1.1, h2c (prior knowledge) and HTTP/2 over TLS.
	var h2cProtos http.Protocols
	h2cProtos.SetUnencryptedHTTP2(true)
	clients := []struct {
		url   string
		c     *http.Client
		proto string
	}{
		{"http://" + inst.Addrs["http"] + "/web/h1?q=1", &http.Client{Timeout: 5 * time.Second}, "HTTP/1.1"},
		{"http://" + inst.Addrs["http"] + "/web/h2c?q=1", &http.Client{Timeout: 5 * time.Second,
			Transport: &http.Transport{Protocols: &h2cProtos}}, "HTTP/2.0"},
		{"https://" + inst.Addrs["https"] + "/web/h2tls?q=1", &http.Client{Timeout: 5 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: "a.example", InsecureSkipVerify: true},
				ForceAttemptHTTP2: true}}, "HTTP/2.0"},
		{"http://" + inst.Addrs["http"] + "/nowhere", &http.Client{Timeout: 5 * time.Second,
			Transport: &http.Transport{Protocols: &h2cProtos}}, "HTTP/2.0"},
	}
	for _, c := range clients {
		resp, body := get(t, c.c, c.url, "")
		if resp.Proto != c.proto {
			t.Fatalf("GET %s spoke %s, want %s", c.url, resp.Proto, c.proto)
		}
		if strings.HasSuffix(c.url, "/nowhere") != (resp.StatusCode == 404) || (resp.StatusCode == 200 && body != "web") {
			t.Fatalf("GET %s: %d %q", c.url, resp.StatusCode, body)
		}
	}

	// gRPC: a call that succeeds, one the backend fails (NOT_FOUND) and
	// one the edge answers itself (no route: UNIMPLEMENTED).
	cc := grpcClient(t, inst.Addrs["http"])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(cc)
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Check of an unknown service: %v", err)
	}
	err := cc.Invoke(ctx, "/nowhere.Svc/Call", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("unrouted call: %v", err)
	}

	m := metricsText(t, inst)
	for _, want := range []string{
		`switchboard_edge_http_requests_total{code="2xx",route="web"} 3`,
		`switchboard_edge_backend_requests_total{backend="` + webAddr + `",service="static:web"} 3`,
		`switchboard_edge_http_requests_total{code="2xx",route="grpc"} 2`,
		`switchboard_edge_backend_requests_total{backend="` + gb.addr + `",service="static:grpc"} 2`,
		`switchboard_edge_http_request_duration_seconds_count{route="grpc"} 2`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// gRPC goes the HTTP/2 way: its bodies are counted both ways.
	for _, dir := range []string{"sent", "received"} {
		series := `switchboard_edge_backend_bytes_total{backend="` + gb.addr + `",direction="` + dir + `",service="static:grpc"}`
		if v, _ := sample(m, series); v <= 0 {
			t.Errorf("%s = %v, want the gRPC messages' bytes", series, v)
		}
	}

	if err := inst.Stop(); err != nil { // flushes the access log
		t.Fatal(err)
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// time client method host target status bytes ms route backend proto grpc-status
	lines := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) != 12 {
			t.Fatalf("access log line %q has %d fields, want 12", l, len(f))
		}
		if _, err := time.Parse(time.RFC3339Nano, f[0]); err != nil || f[1] != "127.0.0.1" || f[3] != "127.0.0.1" {
			t.Errorf("line %q: bad time, client or host", l)
		}
		lines[f[4]] = f
	}
	for _, want := range [][]string{
		// target, method, status, bytes, route, backend, proto, grpc-status
		{"/web/h1?q=1", "GET", "200", "3", "web", webAddr, "HTTP/1.1", "-"},
		{"/web/h2c?q=1", "GET", "200", "3", "web", webAddr, "HTTP/2.0", "-"},
		{"/web/h2tls?q=1", "GET", "200", "3", "web", webAddr, "HTTP/2.0", "-"},
		{"/nowhere", "GET", "404", "0", "-", "-", "HTTP/2.0", "-"},
		{"/grpc.health.v1.Health/Check", "POST", "200", "", "grpc", gb.addr, "HTTP/2.0", "5"},
		{"/nowhere.Svc/Call", "POST", "200", "0", "-", "-", "HTTP/2.0", "12"},
	} {
		f := lines[want[0]]
		if f == nil {
			t.Errorf("no access log line for %s in:\n%s", want[0], b)
			continue
		}
		got := []string{f[4], f[2], f[5], f[6], f[8], f[9], f[10], f[11]}
		if want[3] == "" { // gRPC message bytes: not checked
			got[3] = ""
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("access log fields %q, want %q", got, want)
		}
	}
	// The successful Check shares its target with the NOT_FOUND one: both
	// must be there.
	if n := strings.Count(string(b), " /grpc.health.v1.Health/Check 200 "); n != 2 {
		t.Errorf("%d access log lines for Check, want 2:\n%s", n, b)
	}
	if !strings.Contains(string(b), " grpc "+gb.addr+" HTTP/2.0 0\n") {
		t.Errorf("no access log line for the successful Check (grpc-status 0):\n%s", b)
	}
}
