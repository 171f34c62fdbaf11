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
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
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
			return p.ups.dialer.DialContext(ctx, "tcp", addr)
		},
		MaxIdleConnsPerHost:    64,
		IdleConnTimeout:        90 * time.Second,
		ResponseHeaderTimeout:  p.opt.ResponseHeaderTimeout,
		MaxResponseHeaderBytes: 64 << 10,
	}
	f := &fallbackServer{ln: newChanListener(), tr: tr, grpcTr: newGRPCTransport(p)}
	f.srv = &http.Server{
		Handler:           &h2handler{p: p, rp: &httputil.ReverseProxy{Transport: tr}, grpcTr: f.grpcTr},
		Protocols:         &protos,
		ReadHeaderTimeout: p.opt.ReadHeaderTimeout,
		IdleTimeout:       p.opt.IdleTimeout,
		MaxHeaderBytes:    p.opt.MaxHeaderBytes,
		ErrorLog:          nil,
	}
	h := f.srv.Handler.(*h2handler)
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
	grpcTr *http.Transport
}

type h2ctxKey struct{}

type h2state struct {
	rt     *route
	b      *backend
	failed bool
	code   int
	edge   bool // the edge answered (errorHandler), not the backend
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
	rt := p.routes.Load().match(host, path, func(name string) ([]byte, bool) {
		v := r.Header.Values(name)
		if len(v) == 0 {
			return nil, false
		}
		return []byte(v[0]), true
	})
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
	sel, err := set.Pick(info)
	var b *backend
	if err == nil {
		if b = rt.svc.backendFor(sel.Endpoint); b == nil {
			sel.Done(balance.Ignore, 0)
		}
	}
	if b == nil {
		rt.mCode[5].Inc()
		http.Error(w, "no healthy backend for service "+rt.svc.name, http.StatusServiceUnavailable)
		h.logAccess(r, start, host, rt, h2result{code: http.StatusServiceUnavailable})
		return
	}
	st := &h2state{rt: rt, b: b}
	t0 := time.Now()
	b.active.Add(1)
	ctx := context.WithValue(r.Context(), h2ctxKey{}, st)
	var span trace.Span
	if p.tracer != nil {
		ctx = propagator.Extract(ctx, propagation.HeaderCarrier(r.Header))
		ctx, span = p.tracer.Start(ctx, r.Method+" "+rt.name, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path),
				attribute.String("network.protocol.version", r.Proto), attribute.String("edge.route", rt.name),
				attribute.String("edge.backend", b.id)))
	}
	cw := &countWriter{ResponseWriter: w}
	h.rp.ServeHTTP(cw, r.WithContext(ctx))
	if span != nil {
		span.SetAttributes(attribute.Int("http.response.status_code", st.code))
		if st.code >= 500 {
			span.SetStatus(codes.Error, http.StatusText(st.code))
		}
		span.End()
	}
	b.active.Add(-1)
	lat := time.Since(t0)
	b.total.Add(1)
	b.mReq.Inc()
	o, po := balance.Success, balancerv1.Outcome_OUTCOME_SUCCESS
	if st.failed {
		o, po = balance.Failure, balancerv1.Outcome_OUTCOME_FAILURE
		b.failures.Add(1)
		b.mFail.Inc()
	}
	sel.Done(o, lat)
	if !rt.svc.static {
		p.rep.add(report{svc: rt.svc.name, id: b.id, outcome: po, latency: lat})
	}
	rt.mCode[statusClass(st.code)].Inc()
	rt.mDur.Observe(lat.Seconds())
	res := h2result{code: st.code, n: cw.n, backend: b.id}
	if st.edge {
		res.n = 0 // the edge's own error page, as on the fast path
	}
	h.logAccess(r, start, host, rt, res)
}

func (h *h2handler) rewrite(pr *httputil.ProxyRequest) {
	st := pr.In.Context().Value(h2ctxKey{}).(*h2state)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = st.b.addr
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
	st.failed = resp.StatusCode >= 500
	return nil
}

func (h *h2handler) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	st := r.Context().Value(h2ctxKey{}).(*h2state)
	st.failed, st.edge = true, true
	if isTimeout(err) || errors.Is(err, context.DeadlineExceeded) {
		st.code = http.StatusGatewayTimeout
		http.Error(w, "gateway timeout: the backend did not answer in time", st.code)
		return
	}
	st.code = http.StatusBadGateway
	http.Error(w, "bad gateway: "+err.Error(), st.code)
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
