package edge_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// collector is an in-process OTLP/gRPC trace receiver.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans map[string][]string // trace id (hex) -> span names
}

func (c *collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				id := hex.EncodeToString(sp.TraceId)
				c.spans[id] = append(c.spans[id], sp.Name)
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// TestSpansMetricsAndAccessLog checks that a proxied request is a span in
// the caller's trace (with traceparent forwarded to the app), is counted
// per route and backend, and is written to the access log.
func TestSpansMetricsAndAccessLog(t *testing.T) {
	col := &collector{spans: map[string][]string{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, col)
	go srv.Serve(ln)
	defer srv.Stop()
	env := func(k string) (string, bool) {
		if k == "OTEL_EXPORTER_OTLP_ENDPOINT" {
			return "http://" + ln.Addr().String(), true
		}
		return "", false
	}
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

	mresp, err := http.Get("http://" + inst.Addrs["admin"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{
		`edge_http_requests_total{code="2xx",route="app"} 2`,
		`edge_backend_requests_total{backend="` + strings.TrimPrefix(a.URL, "http://") + `",service="static:app"} 2`,
		`edge_http_request_duration_seconds_count{route="app"} 2`,
	} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	if err := inst.Stop(); err != nil { // flushes spans and the access log
		t.Fatal(err)
	}
	col.mu.Lock()
	names := col.spans[traceID]
	names2 := col.spans[traceID2]
	if len(names) == 0 || !strings.Contains(strings.Join(names, ","), "GET app") {
		t.Fatalf("spans in the trace: %v", names)
	}
	if !strings.Contains(strings.Join(names2, ","), "GET app") {
		t.Fatalf("spans in the h2c trace: %v", names2)
	}
	col.mu.Unlock()
	eventually(t, 5*time.Second, "the access log line", func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), " GET ") && strings.Contains(string(b), " /traced 200 ")
	})
}
