package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-net/switchboard/pkg/balance"
)

// gRPC status codes the edge produces or looks at.
const (
	grpcDeadlineExceeded  = 4
	grpcResourceExhausted = 8
	grpcUnimplemented     = 12
	grpcUnavailable       = 14
)

// isGRPC reports whether r is a gRPC call that must go to the backend over
// HTTP/2: an HTTP/2 request whose Content-Type is application/grpc or
// application/grpc+<codec>. gRPC-Web (application/grpc-web…) works over
// HTTP/1.1 and stays on the ordinary proxy.
func isGRPC(r *http.Request) bool {
	if r.ProtoMajor != 2 {
		return false
	}
	ct := r.Header.Get("Content-Type")
	if !strings.HasPrefix(ct, "application/grpc") {
		return false
	}
	rest := ct[len("application/grpc"):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// dialError marks a failure to connect to a backend: the call never
// reached it, so another backend may be tried.
type dialError struct{ err error }

func (e *dialError) Error() string { return "connecting to the backend: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// newGRPCTransport returns the transport shared by every gRPC call: HTTP/2
// cleartext with prior knowledge (no HTTP/1.1, no upgrade). HTTP/2
// multiplexes calls, so it keeps about one connection per backend; idle
// ones close after 90s and pings find dead ones.
func newGRPCTransport(p *proxy) *http.Transport {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	return &http.Transport{
		Protocols: &protos,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := p.ups.dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &dialError{err: err}
			}
			return c, nil
		},
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		DisableCompression:     true,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout:  30 * time.Second,
			PingTimeout:      15 * time.Second,
			WriteByteTimeout: p.opt.ClientTimeout,
		},
	}
}

// grpcError answers a gRPC call from the edge itself: HTTP 200 with the
// status in a trailers-only response, as gRPC clients expect.
func grpcError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(code))
	h.Set("Grpc-Message", grpcEncodeMessage(msg))
	h.Set("X-Edge-Error", "1")
	w.WriteHeader(http.StatusOK)
}

// grpcEncodeMessage percent-encodes a grpc-message value.
func grpcEncodeMessage(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= ' ' && c <= '~' && c != '%' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// grpcHopHeaders are removed from requests and responses; TE is handled
// on its own (only "trailers" goes on).
var grpcHopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding",
	"Upgrade", "Proxy-Authorization", "Proxy-Authenticate"}

func removeHopHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range grpcHopHeaders {
		h.Del(k)
	}
	te := h.Values("Te")
	h.Del("Te")
	for _, v := range te {
		for _, x := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(x), "trailers") {
				h.Set("Te", "trailers")
			}
		}
	}
}

// trackedBody is the client's request body as the transport reads it; it
// records whether any of it was consumed, which forbids a retry. The
// transport closes the body of a request that failed before sending it;
// that close is ignored, so another backend can still be tried (net/http
// closes the body when the handler returns).
type trackedBody struct {
	rc   io.ReadCloser
	read atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.rc.Read(p)
}

func (b *trackedBody) Close() error {
	if !b.read.Load() {
		return nil
	}
	return b.rc.Close()
}

var grpcBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// serveGRPC forwards a gRPC call on route rt to a picked backend over
// HTTP/2, streaming both ways and passing trailers on. Its tries follow
// runTries with the conservative rules of gRPC: a call is moved to another
// backend only when it never reached one (the connection failed, or the
// backend left the set before the call was sent), since the edge neither
// buffers a call's messages nor knows whether its method is idempotent;
// there is no per-try timeout (a call's answer may legitimately take
// long; its deadline is the caller's grpc-timeout, else
// --response-timeout for the response headers). It reports what the
// access log records of the call.
func (h *h2handler) serveGRPC(w http.ResponseWriter, r *http.Request, rt *route) h2result {
	p := h.p
	svc := rt.svc
	set := svc.set.Load()
	var info balance.PickInfo
	if set.Config().Policy == balance.ConsistentHashName {
		if k, ok := svc.hashOn.Load().Hash(r); ok {
			info.Hash, info.HasHash = k, true
		}
	}
	p.budget.deposit()
	var body *trackedBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &trackedBody{rc: r.Body}
	}
	start := time.Now()
	rules := tryRules{overall: p.opt.ResponseHeaderTimeout, retries: min(max(p.opt.Retries, 0), maxTries-1)}
	if r.Header.Get("Grpc-Timeout") != "" {
		// The caller's deadline, which the client and the backend enforce.
		rules.overall = 0
	}
	t := &tries{}
	t.init(p, svc, set, info, rules, start)
	sel, b, err := t.pick()
	if err != nil {
		rt.mCode[5].Inc()
		msg := "edge: no healthy backend for service " + svc.name
		if errors.Is(err, balance.ErrNoEndpoint) {
			msg = "edge: no backend available for service " + svc.name + " (none registered, or all disabled)"
		}
		grpcError(w, grpcUnavailable, msg)
		return edgeGRPCResult(grpcUnavailable)
	}
	ctx := r.Context()
	var span trace.Span
	if p.tracer != nil {
		ctx = propagator.Extract(ctx, propagation.HeaderCarrier(r.Header))
		ctx, span = p.tracer.Start(ctx, r.Method+" "+rt.name, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path),
				attribute.String("network.protocol.version", r.Proto), attribute.String("edge.route", rt.name),
				attribute.String("rpc.system", "grpc")))
	}
	var (
		failed   bool
		status   = "" // grpc-status seen
		httpCode = http.StatusOK
		backend  string
	)
	endSpan := func() {
		if span == nil {
			return
		}
		span.SetAttributes(attribute.Int("http.response.status_code", httpCode))
		if backend != "" {
			span.SetAttributes(attribute.String("edge.backend", backend))
		}
		if status != "" {
			span.SetAttributes(attribute.String("rpc.grpc.status_code", status))
		}
		if failed {
			span.SetStatus(codes.Error, "grpc-status "+status)
		}
		span.End()
	}

	first := &attempt{}
	t.begin(first, sel, b)
	ops := &tryOps[*http.Response]{
		do: func(actx context.Context, a *attempt) (*http.Response, error) {
			if a.fl.evicted.Load() {
				return nil, &unsentError{errLeft}
			}
			resp, err := h.grpcTr.RoundTrip(h.grpcRequest(actx, r, rt, a.b, body))
			if err != nil {
				var de *dialError
				switch {
				case errors.As(err, &de) && (body == nil || !body.read.Load()):
					return nil, &unsentError{err}
				case actx.Err() != nil:
					return nil, context.Cause(actx)
				}
				return nil, fmt.Errorf("backend %s: %w", a.b.id, err)
			}
			return resp, nil
		},
		discard: func(resp *http.Response) { resp.Body.Close() },
	}
	resp, a, err := runTries(ctx, t, ops, first, startFirst, nil)
	if err != nil {
		backend = t.tried[min(t.n, maxTries)-1].id
		switch {
		case r.Context().Err() != nil:
			// The client went away (or its deadline passed) first;
			// counted and logged as the fast path does (499).
			rt.mCode[4].Inc()
			endSpan()
			return h2result{code: 499, backend: backend}
		case errors.Is(err, errTimeout):
			status = strconv.Itoa(grpcDeadlineExceeded)
			grpcError(w, grpcDeadlineExceeded, "edge: the backend did not answer in time")
		case isUnsent(err):
			status = strconv.Itoa(grpcUnavailable)
			grpcError(w, grpcUnavailable, "edge: could not connect to a backend of service "+svc.name)
		default:
			status = strconv.Itoa(grpcUnavailable)
			grpcError(w, grpcUnavailable, "edge: "+err.Error())
		}
		failed = true
		rt.mCode[5].Inc() // counted as the HTTP 503/504 it stands for
		rt.mDur.Observe(time.Since(start).Seconds())
		endSpan()
		return h2result{code: httpCode, backend: backend, grpcStatus: status}
	}
	backend = a.b.id
	defer a.cancel(nil)
	defer resp.Body.Close()
	httpCode = resp.StatusCode
	rt.mCode[statusClass(httpCode)].Inc()
	rt.mDur.Observe(time.Since(start).Seconds())

	hdr := w.Header()
	for k, v := range resp.Header {
		hdr[k] = v
	}
	removeHopHeaders(hdr)
	status = resp.Header.Get("Grpc-Status")
	trailersOnly := status != ""
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	if !trailersOnly {
		// Metadata reaches the client now, before the first message.
		rc.Flush()
	}

	bp := grpcBufPool.Get().(*[]byte)
	buf := *bp
	var rerr error
	var written int64
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			written += int64(m)
			if werr != nil {
				rerr = werr
				break
			}
			rc.Flush()
		}
		if err != nil {
			if err != io.EOF {
				rerr = err
			}
			break
		}
	}
	grpcBufPool.Put(bp)

	clientGone := r.Context().Err() != nil
	switch {
	case rerr == nil:
		for k, v := range resp.Trailer {
			hdr[http.TrailerPrefix+k] = v
		}
		if s := resp.Trailer.Get("Grpc-Status"); s != "" {
			status = s
		}
	case clientGone:
	default:
		// The backend's stream broke after the response began.
		failed = true
		status = strconv.Itoa(grpcUnavailable)
		hdr[http.TrailerPrefix+"Grpc-Status"] = []string{status}
		hdr[http.TrailerPrefix+"Grpc-Message"] = []string{grpcEncodeMessage("edge: backend stream broke: " + rerr.Error())}
	}
	if status == strconv.Itoa(grpcUnavailable) || httpCode >= 500 {
		failed = true
	}
	switch {
	case failed:
		t.end(a, endFailed)
	case clientGone && rerr != nil:
		t.end(a, endIgnored)
	default:
		t.end(a, endAnswered)
	}
	endSpan()
	return h2result{code: httpCode, n: written, backend: backend, grpcStatus: status}
}

// edgeGRPCResult is the access-log record of a call the edge answered
// itself (HTTP 200 with a grpc-status) without reaching a backend.
func edgeGRPCResult(code int) h2result {
	return h2result{code: http.StatusOK, grpcStatus: strconv.Itoa(code)}
}

// grpcRequest builds the request sent to backend b.
func (h *h2handler) grpcRequest(ctx context.Context, r *http.Request, rt *route, b *backend, body *trackedBody) *http.Request {
	path := r.URL.Path
	if rt.strip {
		path = path[min(len(rt.prefix), len(path)):]
		if path == "" || path[0] != '/' {
			path = "/" + path
		}
	}
	hdr := r.Header.Clone()
	removeHopHeaders(hdr)
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	if prior := hdr.Values("X-Forwarded-For"); len(prior) > 0 {
		hdr.Set("X-Forwarded-For", joinComma(prior)+", "+ip)
	} else {
		hdr.Set("X-Forwarded-For", ip)
	}
	hdr.Set("X-Forwarded-Host", r.Host)
	hdr.Set("X-Forwarded-Proto", proto)
	fwd := fmt.Sprintf("for=%s;host=%q;proto=%s", forwardedFor(ip), r.Host, proto)
	if prior := hdr.Values("Forwarded"); len(prior) > 0 {
		fwd = joinComma(prior) + ", " + fwd
	}
	hdr.Set("Forwarded", fwd)
	if h.p.tracer != nil {
		hdr.Del("Traceparent")
		hdr.Del("Tracestate")
		propagator.Inject(ctx, propagation.HeaderCarrier(hdr))
	}
	out := &http.Request{
		Method:     r.Method,
		URL:        &url.URL{Scheme: "http", Host: b.addr, Path: path, RawQuery: r.URL.RawQuery},
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     hdr,
		Host:       r.Host,
	}
	if body != nil {
		out.Body = body
		out.ContentLength = r.ContentLength
		if out.ContentLength == 0 {
			out.ContentLength = -1
		}
	}
	return out.WithContext(ctx)
}
