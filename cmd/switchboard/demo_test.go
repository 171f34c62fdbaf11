package main

import (
	"net/http/httptest"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestDemoContinuesCallersTrace: a request carrying a traceparent (as the
// edge forwards it) becomes a child span in the same trace.
func TestDemoContinuesCallersTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	h := traced(tp.Tracer("test"), demoHandler("demo-1"))
	req := httptest.NewRequest("GET", "/x", nil)
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	spans := rec.Ended()
	if w.Code != 200 || len(spans) != 1 {
		t.Fatalf("status %d, %d spans", w.Code, len(spans))
	}
	sp := spans[0]
	if got := sp.SpanContext().TraceID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("trace id %s, want the caller's", got)
	}
	if got := sp.Parent().SpanID().String(); got != "00f067aa0ba902b7" {
		t.Errorf("parent span %s, want the caller's", got)
	}
	if sp.Name() != "GET /x" {
		t.Errorf("span name %q", sp.Name())
	}
}
