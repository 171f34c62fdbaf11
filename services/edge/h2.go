package edge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-net/switchboard/pkg/balance"
)

// fallbackServer serves what the fast path does not: HTTP/2 over TLS and
// h2c. Connections are handed to it through an in-memory listener; it
// proxies with net/http's ReverseProxy and the same routes and pickers,
// except gRPC calls, which go to the backend over HTTP/2 (grpcproxy.go).
type fallbackServer struct {
	ln     *chanListener
	srv    *http.Server
	tr     *http.Transport
	grpcTr *http.Transport // gRPC calls: HTTP/2 cleartext to the backend
}

func newFallback(p *proxy) *fallbackServer {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			c, err := p.ups.dialer.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, &dialError{err: err}
			}
			return c, nil
		},
		MaxIdleConnsPerHost:    64,
		IdleConnTimeout:        90 * time.Second,
		ResponseHeaderTimeout:  p.opt.ResponseHeaderTimeout,
		MaxResponseHeaderBytes: 64 << 10,
	}
	f := &fallbackServer{ln: newChanListener(), tr: tr, grpcTr: newGRPCTransport(p)}
	f.srv = &http.Server{
		Handler:           &h2handler{p: p, rp: &httputil.ReverseProxy{}, tr: tr, grpcTr: f.grpcTr},
		Protocols:         &protos,
		ReadHeaderTimeout: p.opt.ReadHeaderTimeout,
		IdleTimeout:       p.opt.IdleTimeout,
		MaxHeaderBytes:    p.opt.MaxHeaderBytes,
		ErrorLog:          nil,
	}
	h := f.srv.Handler.(*h2handler)
	h.rp.Transport = h2transport{h}
	h.rp.Rewrite = h.rewrite
	h.rp.ErrorHandler = h.errorHandler
	h.rp.ModifyResponse = h.modifyResponse
	go f.srv.Serve(f.ln)
	return f
}

func (f *fallbackServer) serve(c net.Conn) {
	if !f.ln.push(c) {
		c.Close()
	}
}

func (f *fallbackServer) shutdown(ctx context.Context) error {
	err := f.srv.Shutdown(ctx)
	if err != nil {
		// The grace period ended with streams still open (long gRPC
		// streams, say): close them.
		f.srv.Close()
	}
	f.tr.CloseIdleConnections()
	f.grpcTr.CloseIdleConnections()
	return err
}

// chanListener is a net.Listener fed with connections accepted elsewhere.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

type h2handler struct {
	p      *proxy
	rp     *httputil.ReverseProxy
	tr     *http.Transport // each try of a request that is not gRPC
	grpcTr *http.Transport
}

type h2ctxKey struct{}

// h2state is one request's state between ServeHTTP and the ReverseProxy's
// hooks and transport.
type h2state struct {
	rt    *route
	tries tries
	first *attempt // begun by ServeHTTP, made by the transport
	ran   bool     // the transport ran the tries
	win   *attempt // the try whose answer went to the client
	code  int
	edge  bool // the edge answered (errorHandler), not the backend
}

// h2result is what the access log records of a request served here.
type h2result struct {
	code       int
	n          int64  // response body bytes relayed from the backend
	backend    string // "" when no backend was chosen
	grpcStatus string // "" unless a gRPC call
}

// countWriter counts the response body bytes written through it.
// ReverseProxy reaches Flush and the rest through Unwrap.
type countWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *countWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// logAccess logs a request served over HTTP/2 (or handed to net/http),
// in the same format as the fast path's lines.
func (h *h2handler) logAccess(r *http.Request, start time.Time, host []byte, rt *route, res h2result) {
	if h.p.access == nil {
		return
	}
	client := r.RemoteAddr
	if ap, err := netip.ParseAddrPort(client); err == nil {
		client = ap.Addr().Unmap().String()
	}
	target := r.RequestURI
	if target == "" {
		target = r.URL.RequestURI()
	}
	writeAccess(h.p.access, &accessEntry[string]{start: start, client: client, method: r.Method,
		host: string(host), target: target, proto: r.Proto,
		code: res.code, n: res.n, route: routeName(rt), backend: res.backend, grpcStatus: res.grpcStatus})
}

func (h *h2handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := h.p
	start := time.Now()
	grpc := isGRPC(r)
	if p.limiter != nil {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil && !p.limiter.allow(ap.Addr().Unmap(), time.Now()) {
			p.met.limited.Inc()
			if grpc {
				grpcError(w, grpcResourceExhausted, "edge: rate limit exceeded")
				return
			}
			http.Error(w, "rate limit exceeded", http.StatusTooManyRequests)
			return
		}
	}
	host := normHost([]byte(r.Host))
	path := []byte(r.RequestURI)
	if len(path) == 0 || path[0] != '/' {
		path = []byte(r.URL.RequestURI())
	}
	get := func(name string) ([]byte, bool) {
		v := r.Header.Values(name)
		if len(v) == 0 {
			return nil, false
		}
		return []byte(v[0]), true
	}
	rt := p.routes.Load().match(host, path, get)
	if rt == nil && p.awaitFirstSet(r.Context().Done()) {
		rt = p.routes.Load().match(host, path, get)
	}
	if rt == nil {
		if grpc {
			grpcError(w, grpcUnimplemented, "edge: no route for "+string(host)+string(path))
			h.logAccess(r, start, host, nil, h2result{code: http.StatusOK, grpcStatus: strconv.Itoa(grpcUnimplemented)})
			return
		}
		http.Error(w, "no route for "+string(host)+string(path), http.StatusNotFound)
		h.logAccess(r, start, host, nil, h2result{code: http.StatusNotFound})
		return
	}
	if grpc {
		h.logAccess(r, start, host, rt, h.serveGRPC(w, r, rt))
		return
	}
	set := rt.svc.set.Load()
	var info balance.PickInfo
	if set.Config().Policy == balance.ConsistentHashName {
		if k, ok := rt.svc.hashOn.Load().Hash(r); ok {
			info.Hash, info.HasHash = k, true
		}
	}
	p.budget.deposit()
	st := &h2state{rt: rt}
	t := &st.tries
	// An HTTP/2 request always has a Body; ContentLength is 0 when the
	// headers ended the stream (and -1 when a body of unknown length comes).
	hasBody := r.ContentLength != 0
	rules := p.rules(rt, isIdempotentMethod(r.Method) && !hasBody && r.Header.Get("Upgrade") == "")
	if hasBody {
		// The body streams while the backend may answer already: the
		// transport's --response-timeout counts from its end, and no
		// try of such a request is resent.
		rules.tryTimeout, rules.overall = 0, 0
	}
	t.init(p, rt.svc, set, info, rules, start)
	sel, b, err := t.pick()
	if err != nil {
		rt.mCode[5].Inc()
		http.Error(w, "no healthy backend for service "+rt.svc.name, http.StatusServiceUnavailable)
		h.logAccess(r, start, host, rt, h2result{code: http.StatusServiceUnavailable})
		return
	}
	st.first = &attempt{}
	t.begin(st.first, sel, b)
	ctx := context.WithValue(r.Context(), h2ctxKey{}, st)
	var span trace.Span
	if p.tracer != nil {
		ctx = propagator.Extract(ctx, propagation.HeaderCarrier(r.Header))
		ctx, span = p.tracer.Start(ctx, r.Method+" "+rt.name, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path),
				attribute.String("network.protocol.version", r.Proto), attribute.String("edge.route", rt.name)))
	}
	cw := &countWriter{ResponseWriter: w}
	h.rp.ServeHTTP(cw, r.WithContext(ctx))
	res := h2result{code: st.code, n: cw.n}
	if !st.ran {
		t.end(st.first, endIgnored) // ReverseProxy refused the request itself
	}
	if a := st.win; a != nil {
		res.backend = a.b.id
		e := endAnswered
		if st.code >= 500 {
			e = endFailed
		}
		t.end(a, e)
		a.cancel(nil)
	}
	if span != nil {
		span.SetAttributes(attribute.Int("http.response.status_code", st.code))
		if res.backend != "" {
			span.SetAttributes(attribute.String("edge.backend", res.backend))
		}
		if st.code >= 500 {
			span.SetStatus(codes.Error, http.StatusText(st.code))
		}
		span.End()
	}
	rt.mCode[statusClass(st.code)].Inc()
	rt.mDur.Observe(time.Since(start).Seconds())
	if st.edge {
		res.n = 0 // the edge's own error page, as on the fast path
	}
	h.logAccess(r, start, host, rt, res)
}

// h2transport is the ReverseProxy's transport: it runs the request's
// tries (runTries), each a RoundTrip to the try's backend.
type h2transport struct{ h *h2handler }

// RoundTrip runs the tries of out, whose h2state ServeHTTP prepared.
func (x h2transport) RoundTrip(out *http.Request) (*http.Response, error) {
	st := out.Context().Value(h2ctxKey{}).(*h2state)
	st.ran = true
	var body *trackedBody
	if out.Body != nil && out.Body != http.NoBody {
		body = &trackedBody{rc: out.Body}
	}
	ops := &tryOps[*http.Response]{
		do: func(ctx context.Context, a *attempt) (*http.Response, error) {
			if a.fl.evicted.Load() {
				return nil, &unsentError{errLeft}
			}
			r := out.Clone(ctx)
			r.URL.Host = a.b.addr
			if body != nil {
				r.Body = body
			}
			resp, err := x.h.tr.RoundTrip(r)
			if err != nil {
				var de *dialError
				switch {
				case errors.As(err, &de) && (body == nil || !body.read.Load()):
					return nil, &unsentError{err}
				case ctx.Err() != nil:
					return nil, context.Cause(ctx)
				case isTimeout(err):
					return nil, errTimeout
				}
				return nil, fmt.Errorf("backend %s: %w", a.b.id, err)
			}
			return resp, nil
		},
		discard: func(resp *http.Response) { resp.Body.Close() },
	}
	resp, a, err := runTries(out.Context(), &st.tries, ops, st.first, startFirst, nil)
	st.win = a
	return resp, err
}

func (h *h2handler) rewrite(pr *httputil.ProxyRequest) {
	st := pr.In.Context().Value(h2ctxKey{}).(*h2state)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = st.first.b.addr // each try sets its own
	pr.Out.Host = pr.In.Host
	if st.rt.strip {
		rest := pr.In.URL.Path[min(len(st.rt.prefix), len(pr.In.URL.Path)):]
		if rest == "" || rest[0] != '/' {
			rest = "/" + rest
		}
		pr.Out.URL.Path, pr.Out.URL.RawPath = rest, ""
	}
	pr.SetXForwarded()
	if h.p.tracer != nil {
		pr.Out.Header.Del("Traceparent")
		pr.Out.Header.Del("Tracestate")
		propagator.Inject(pr.In.Context(), propagation.HeaderCarrier(pr.Out.Header))
	}
	proto := "http"
	if pr.In.TLS != nil {
		proto = "https"
	}
	ip := pr.Out.Header.Get("X-Forwarded-For")
	if i := lastComma(ip); i >= 0 {
		ip = ip[i+1:]
	}
	fwd := fmt.Sprintf("for=%s;host=%q;proto=%s", forwardedFor(trimSpace(ip)), pr.In.Host, proto)
	if prior := pr.In.Header.Values("Forwarded"); len(prior) > 0 {
		fwd = joinComma(prior) + ", " + fwd
	}
	pr.Out.Header.Set("Forwarded", fwd)
}

func (h *h2handler) modifyResponse(resp *http.Response) error {
	st := resp.Request.Context().Value(h2ctxKey{}).(*h2state)
	st.code = resp.StatusCode
	return nil
}

// errorHandler answers when no try got an answer (every try has been
// ended and counted by then) or the answer could not be relayed.
func (h *h2handler) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	st := r.Context().Value(h2ctxKey{}).(*h2state)
	st.edge = true
	switch {
	case r.Context().Err() != nil:
		st.code = 499 // the client left first
	case errors.Is(err, errTimeout), isTimeout(err), errors.Is(err, context.DeadlineExceeded):
		st.code = http.StatusGatewayTimeout
		http.Error(w, "gateway timeout: the backend did not answer in time", st.code)
	case errors.Is(err, errLeft), errors.Is(err, errNoBackend):
		st.code = http.StatusServiceUnavailable
		http.Error(w, "no healthy backend for service "+st.rt.svc.name, st.code)
	default:
		st.code = http.StatusBadGateway
		http.Error(w, "bad gateway: "+err.Error(), st.code)
	}
}

func lastComma(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ',' {
			return i
		}
	}
	return -1
}

func trimSpace(s string) string {
	for len(s) > 0 && s[0] == ' ' {
		s = s[1:]
	}
	return s
}

func forwardedFor(ip string) string {
	for i := 0; i < len(ip); i++ {
		if ip[i] == ':' {
			return `"[` + ip + `]"`
		}
	}
	return ip
}

func joinComma(v []string) string {
	s := v[0]
	for _, x := range v[1:] {
		s += ", " + x
	}
	return s
}
