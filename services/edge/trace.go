package edge

import (
	"bufio"
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-net/switchboard/pkg/telemetry"
)

// traceState is the span of one proxied request on the fast path. Spans
// are made only when the service exports them; otherwise an incoming
// traceparent passes through untouched like any end-to-end header.
type traceState struct {
	span        trace.Span
	traceparent string
	tracestate  string
}

var propagator = telemetry.Propagator()

// headCarrier reads a request head's headers for extraction.
type headCarrier struct{ h *head }

func (c headCarrier) Get(key string) string {
	v, _ := c.h.get(key)
	return string(v)
}
func (c headCarrier) Set(string, string) {}
func (c headCarrier) Keys() []string     { return nil }

// injectCarrier captures the headers to send upstream.
type injectCarrier struct{ t *traceState }

func (c injectCarrier) Get(string) string { return "" }
func (c injectCarrier) Set(k, v string) {
	switch k {
	case "traceparent":
		c.t.traceparent = v
	case "tracestate":
		c.t.tracestate = v
	}
}
func (c injectCarrier) Keys() []string { return nil }

func (h *h1conn) startSpan(rt *route) *traceState {
	req := &h.req
	ctx := propagator.Extract(context.Background(), headCarrier{req})
	_, span := h.p.startSpan(ctx, string(req.l1.of(req.buf)), rt, string(req.l2.of(req.buf)),
		string(h.host), string(h.ip), string(req.l3.of(req.buf)), false)
	t := &traceState{span: span}
	propagation.TraceContext{}.Inject(trace.ContextWithSpan(context.Background(), span), injectCarrier{t})
	h.trace = t
	return t
}

// startSpan starts the server span of a proxied request, the same on
// every protocol: "<METHOD> <route>" in the caller's trace (ctx holds
// what was extracted from the request).
func (p *proxy) startSpan(ctx context.Context, method string, rt *route, path, host, client, proto string, grpc bool) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", method),
		attribute.String("url.path", path),
		attribute.String("server.address", host),
		attribute.String("client.address", client),
		attribute.String("network.protocol.version", proto),
		attribute.String("edge.route", rt.name),
		attribute.String("edge.service", rt.service),
	}
	if grpc {
		attrs = append(attrs, attribute.String("rpc.system", "grpc"))
	}
	return p.tracer.Start(ctx, method+" "+rt.name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
}

// endSpan finishes a request's span (nil: none) with its outcome: an
// error when the client got a 5xx, or a gRPC call failed as unavailable
// or timed out.
func (p *proxy) endSpan(span trace.Span, code int, backendID, grpcStatus string) {
	if span == nil {
		return
	}
	span.SetAttributes(attribute.Int("http.response.status_code", code))
	if backendID != "" {
		span.SetAttributes(attribute.String("edge.backend", backendID))
	}
	switch {
	case grpcStatus != "":
		span.SetAttributes(attribute.String("rpc.grpc.status_code", grpcStatus))
		if grpcStatus == "14" || grpcStatus == "4" {
			span.SetStatus(codes.Error, "grpc-status "+grpcStatus)
		}
	case code >= 500:
		span.SetStatus(codes.Error, statusText(code))
	}
	span.End()
}

func (t *traceState) writeHeaders(w *bufio.Writer) {
	if t.traceparent != "" {
		w.WriteString("traceparent: " + t.traceparent + "\r\n")
	}
	if t.tracestate != "" {
		w.WriteString("tracestate: " + t.tracestate + "\r\n")
	}
}

// endSpan finishes the request's span, if any.
func (h *h1conn) endSpan(code int, backendID string) {
	t := h.trace
	if t == nil {
		return
	}
	h.trace = nil
	h.p.endSpan(t.span, code, backendID, "")
}
