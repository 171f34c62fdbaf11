package servicetest

import (
	"context"
	"encoding/hex"
	"maps"
	"net"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// Collector is an in-process OTLP/gRPC trace receiver: point a service at
// it with Env and read what the service exported with Spans.
type Collector struct {
	collectortrace.UnimplementedTraceServiceServer
	addr  string
	mu    sync.Mutex
	spans map[string][]string // trace id (hex) -> "service/span name"
}

// StartCollector serves a Collector on 127.0.0.1:0 until the test ends.
func StartCollector(t testing.TB) *Collector {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &Collector{addr: ln.Addr().String(), spans: map[string][]string{}}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, c)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return c
}

// Env is a config.LookupFunc that sets OTEL_EXPORTER_OTLP_ENDPOINT to the
// collector and nothing else.
func (c *Collector) Env(key string) (string, bool) {
	if key == "OTEL_EXPORTER_OTLP_ENDPOINT" {
		return "http://" + c.addr, true
	}
	return "", false
}

// Spans returns the spans received so far of one trace (hex id), each as
// "service.name/span name".
func (c *Collector) Spans(traceID string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.spans[traceID]...)
}

// Traces returns every trace received so far, as Spans gives each.
func (c *Collector) Traces() map[string][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.spans)
}

// Export implements the OTLP trace service.
func (c *Collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		svc := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				svc = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				id := hex.EncodeToString(sp.TraceId)
				c.spans[id] = append(c.spans[id], svc+"/"+sp.Name)
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}
