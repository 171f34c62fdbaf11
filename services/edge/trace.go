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
	method := string(req.l1.of(req.buf))
	_, span := h.p.tracer.Start(ctx, method+" "+rt.name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("http.request.method", method),
			attribute.String("url.path", string(req.l2.of(req.buf))),
			attribute.String("server.address", string(h.host)),
			attribute.String("client.address", string(h.ip)),
			attribute.String("edge.route", rt.name),
			attribute.String("edge.service", rt.service),
		))
	t := &traceState{span: span}
	propagation.TraceContext{}.Inject(trace.ContextWithSpan(context.Background(), span), injectCarrier{t})
	h.trace = t
	return t
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
	t.span.SetAttributes(attribute.Int("http.response.status_code", code), attribute.String("edge.backend", backendID))
	if code >= 500 {
		t.span.SetStatus(codes.Error, statusText(code))
	}
	t.span.End()
}
