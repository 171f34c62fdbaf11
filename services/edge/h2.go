package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-net/switchboard/pkg/balance"
)

// fallbackServer serves what the fast path does not: HTTP/2 over TLS and
// h2c. Connections are handed to it through an in-memory listener;
// net/http's server reads and writes the frames and h2handler runs each
// request through the pipeline (pipeline.go). Requests go to the backend
// over HTTP/1.1 (tr), gRPC calls over h2c (grpcTr, grpcproxy.go).
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
		DisableCompression:     true,
		WriteBufferSize:        8 << 10,
		ReadBufferSize:         8 << 10,
	}
	f := &fallbackServer{ln: newChanListener(), tr: tr, grpcTr: newGRPCTransport(p)}
	f.srv = &http.Server{
		Handler:           &h2handler{p: p, tr: tr, grpcTr: f.grpcTr},
		Protocols:         &protos,
		ReadHeaderTimeout: p.opt.ReadHeaderTimeout,
		IdleTimeout:       p.opt.IdleTimeout,
		MaxHeaderBytes:    p.opt.MaxHeaderBytes,
		ErrorLog:          nil,
	}
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

// h2handler is the pipeline for requests net/http's server reads: HTTP/2
// over TLS and h2c, and gRPC calls among them. A gRPC call differs from
// other requests only in its try rules (conservative: see grpcRules), its
// transport to the backend (h2c), how the edge's own answers look (a
// grpc-status) and in flushing every message as it comes.
type h2handler struct {
	p      *proxy
	tr     *http.Transport // requests that are not gRPC: HTTP/1.1 to the backend
	grpcTr *http.Transport // gRPC calls: h2c to the backend
}

// h2exchange is one request's pipeline state on this path.
type h2exchange struct {
	exchange
	grpc    bool
	host    []byte
	aborted bool // the backend's body broke off after the head went out
}

// logAccess logs a request served over HTTP/2 (or handed to net/http),
// in the same format as the fast path's lines.
func (h *h2handler) logAccess(r *http.Request, x *h2exchange) {
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
	n := x.n
	if x.edge {
		n = 0 // the edge's own answer, as on the fast path
	}
	writeAccess(h.p.access, &accessEntry[string]{start: x.start, client: client, method: r.Method,
		host: string(x.host), target: target, proto: r.Proto,
		code: x.code, n: n, route: routeName(x.rt), backend: x.backend, grpcStatus: x.grpcStatus})
}

// answer sends the edge's own answer: code and msg as plain text with
// X-Edge-Error, or for a gRPC call the grpc-status code stands for.
func (h *h2handler) answer(w http.ResponseWriter, x *h2exchange, code int, msg string) {
	x.edge = true
	if x.grpc {
		g := grpcCodeOf(code)
		x.code, x.standsFor, x.grpcStatus = http.StatusOK, code, strconv.Itoa(g)
		grpcError(w, g, "edge: "+msg)
		return
	}
	x.code = code
	hd := w.Header()
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("X-Edge-Error", "1")
	hd.Set("Content-Length", strconv.Itoa(len(msg)+1))
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}

func (h *h2handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := h.p
	x := &h2exchange{exchange: exchange{start: time.Now()}, grpc: isGRPC(r)}
	if p.limiter != nil {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil && !p.limiter.allow(ap.Addr().Unmap(), x.start) {
			p.met.limited.Inc()
			h.answer(w, x, http.StatusTooManyRequests, "rate limit exceeded")
			return // not logged, as on the fast path
		}
	}
	x.host = normHost([]byte(r.Host))
	target := r.RequestURI // the raw :path
	if target == "" || target[0] != '/' {
		target = r.URL.RequestURI()
	}
	get := func(name string) ([]byte, bool) {
		v := r.Header.Values(name)
		if len(v) == 0 {
			return nil, false
		}
		return []byte(v[0]), true
	}
	x.rt = p.matchRoute(x.host, []byte(target), get, r.Context().Done())
	if x.rt == nil {
		h.answer(w, x, http.StatusNotFound, "no route for "+string(x.host)+target)
	} else {
		h.forward(w, r, x, target)
		p.observe(&x.exchange)
	}
	h.logAccess(r, x)
}

// grpcRules are the try rules of a gRPC call: moved to another backend
// only when it never reached one (the edge neither buffers a call's
// messages nor knows whether its method is idempotent), no per-try
// timeout or hedging (an answer may legitimately take long). Its
// deadline is the caller's grpc-timeout, which the client and the backend
// enforce, else --response-timeout for the response headers.
func (p *proxy) grpcRules(r *http.Request) tryRules {
	rules := tryRules{overall: p.opt.ResponseHeaderTimeout, retries: min(max(p.opt.Retries, 0), maxTries-1)}
	if r.Header.Get("Grpc-Timeout") != "" {
		rules.overall = 0
	}
	return rules
}

// forward runs the request's tries on rt's backends and relays the
// answer (or the edge's own).
func (h *h2handler) forward(w http.ResponseWriter, r *http.Request, x *h2exchange, target string) {
	p := h.p
	rt := x.rt
	var info balance.PickInfo
	if rt.svc.set.Load().Config().Policy == balance.ConsistentHashName {
		if k, ok := rt.svc.hashOn.Load().Hash(r); ok {
			info.Hash, info.HasHash = k, true
		}
	}
	// An HTTP/2 request always has a Body; ContentLength is 0 when the
	// headers ended the stream (and -1 when a body of unknown length comes).
	hasBody := r.ContentLength != 0
	var rules tryRules
	if x.grpc {
		rules = p.grpcRules(r)
	} else {
		rules = p.rules(rt, isIdempotentMethod(r.Method) && !hasBody)
		if hasBody {
			// The body streams while the backend may answer already: the
			// transport's --response-timeout counts from its end, and no
			// try of such a request is resent once it read the body.
			rules.tryTimeout, rules.overall = 0, 0
		}
	}
	t := &x.tries
	sel, b, err := p.startTries(t, rt, info, rules, x.start)
	if err != nil {
		code, msg := pickFailure(rt.svc.name, err)
		h.answer(w, x, code, msg)
		return
	}
	first := &attempt{}
	t.begin(first, sel, b)

	ctx := r.Context()
	var span trace.Span
	if p.tracer != nil {
		ctx = propagator.Extract(ctx, propagation.HeaderCarrier(r.Header))
		ctx, span = p.startSpan(ctx, r.Method, rt, r.URL.Path, string(x.host), r.RemoteAddr, r.Proto, x.grpc)
	}
	o := originOf(r)
	hdr := upstreamHeader(r.Header, &o)
	if span != nil {
		delete(hdr, "Traceparent")
		delete(hdr, "Tracestate")
		propagator.Inject(ctx, propagation.HeaderCarrier(hdr))
	}
	var body *trackedBody
	if hasBody && r.Body != nil && r.Body != http.NoBody {
		body = &trackedBody{rc: r.Body, rc2: http.NewResponseController(w), timeout: p.opt.ClientTimeout}
	}
	tr := h.tr
	if x.grpc {
		tr = h.grpcTr
	}
	ops := &tryOps[*http.Response]{
		do: func(ctx context.Context, a *attempt) (*http.Response, error) {
			if a.fl.evicted.Load() {
				return nil, &unsentError{errLeft}
			}
			out := (&http.Request{Method: r.Method, URL: upstreamURL(rt, target, a.b.addr),
				Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
				Header: hdr, Host: r.Host, Trailer: r.Trailer}).WithContext(ctx)
			if body != nil {
				out.Body, out.ContentLength = body, r.ContentLength
				if out.ContentLength == 0 {
					out.ContentLength = -1
				}
			}
			resp, err := tr.RoundTrip(out)
			if err != nil {
				return nil, tryErr(ctx, a, err, body)
			}
			return resp, nil
		},
		discard: func(resp *http.Response) { resp.Body.Close() },
	}
	resp, a, err := runTries(ctx, t, ops, first, startFirst, nil)
	if err != nil {
		x.backend = t.tried[min(t.n, maxTries)-1].id
		if r.Context().Err() != nil {
			x.code = 499 // the client left first
		} else {
			code, msg := edgeAnswer(rt.svc.name, err)
			h.answer(w, x, code, msg)
		}
		p.endSpan(span, x.code, x.backend, x.grpcStatus)
		return
	}
	x.backend = a.b.id
	failed := h.relay(w, r, x, resp, a)
	if body != nil { // the body went to the backend that answered
		a.b.mSent.Add(float64(body.n.Load()))
	}
	e := endAnswered
	switch {
	case failed:
		e = endFailed
	case r.Context().Err() != nil:
		e = endIgnored // the client left: no test of the backend
	}
	t.end(a, e)
	a.cancel(nil)
	p.endSpan(span, x.code, x.backend, x.grpcStatus)
	if x.aborted {
		// The body broke off after the head went out: reset the stream so
		// the client does not take a cut body for a whole one.
		panic(http.ErrAbortHandler)
	}
}

// tryErr maps a failed RoundTrip to the try rules' errors.
func tryErr(ctx context.Context, a *attempt, err error, body *trackedBody) error {
	var de *dialError
	switch {
	case errors.As(err, &de) && (body == nil || !body.read.Load()):
		return &unsentError{err}
	case strings.Contains(err.Error(), "client conn could not be established"):
		// The backend closed the connection during the HTTP/2 handshake
		// (net/http's error has no exported value): nothing was sent.
		return &unsentError{errBackendClosed}
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case isTimeout(err):
		return errTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return errBackendClosed
	}
	return fmt.Errorf("backend %s: %w", a.b.id, err)
}

var h2BufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// errBackendIdle: the backend was silent within a response body for
// longer than --backend-idle-timeout.
var errBackendIdle = errors.New("the backend went silent within its response body")

// relay sends the backend's answer resp to the client: head, body
// (flushed as it comes when streamed, every message for gRPC), trailers.
// It reports whether the answer counts as the backend's failure.
func (h *h2handler) relay(w http.ResponseWriter, r *http.Request, x *h2exchange, resp *http.Response, a *attempt) (failed bool) {
	p := h.p
	defer resp.Body.Close()
	x.code = resp.StatusCode
	failed = resp.StatusCode >= 500
	hdr := w.Header()
	for k, v := range resp.Header {
		hdr[k] = v
	}
	removeHopHeaders(hdr)
	delete(hdr, "Trailer")
	status := ""
	if x.grpc {
		status = resp.Header.Get("Grpc-Status") // trailers-only
	}
	stream := x.grpc || resp.ContentLength < 0
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	var wdl time.Time
	write := func(b []byte) error {
		// --client-timeout bounds each write, the deadline moved lazily.
		if ct := p.opt.ClientTimeout; ct > 0 {
			if now := time.Now(); wdl.Sub(now) < ct/2 {
				wdl = now.Add(ct)
				rc.SetWriteDeadline(wdl)
			}
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		if stream {
			return rc.Flush()
		}
		return nil
	}
	if stream && status == "" {
		rc.Flush() // metadata and streamed heads reach the client now
	}
	// --backend-idle-timeout bounds silence within the body (gRPC
	// streams may be quiet as long as they like: pings watch them).
	var idle *time.Timer
	if !x.grpc && p.opt.BackendIdleTimeout > 0 {
		idle = time.AfterFunc(p.opt.BackendIdleTimeout, func() { a.cancel(errBackendIdle) })
		defer idle.Stop()
	}
	bp := h2BufPool.Get().(*[]byte)
	buf := *bp
	var rerr, werr error
	for {
		n, err := resp.Body.Read(buf)
		if idle != nil {
			idle.Reset(p.opt.BackendIdleTimeout)
		}
		if n > 0 {
			if werr = write(buf[:n]); werr != nil {
				break
			}
			x.n += int64(n)
			a.b.mRecv.Add(float64(n))
		}
		if err != nil {
			if err != io.EOF {
				rerr = err
			}
			break
		}
	}
	h2BufPool.Put(bp)
	clientGone := werr != nil || r.Context().Err() != nil
	switch {
	case rerr == nil && werr == nil:
		for k, v := range resp.Trailer {
			hdr[http.TrailerPrefix+k] = v
		}
		if s := resp.Trailer.Get("Grpc-Status"); s != "" {
			status = s
		}
	case clientGone:
		x.code = 499
	case x.grpc:
		// The backend's stream broke after the response began.
		failed = true
		status = strconv.Itoa(grpcUnavailable)
		hdr[http.TrailerPrefix+"Grpc-Status"] = []string{status}
		hdr[http.TrailerPrefix+"Grpc-Message"] = []string{grpcEncodeMessage("edge: backend stream broke: " + rerr.Error())}
	default:
		failed = true // the backend broke off its body
		x.aborted = true
	}
	if x.grpc {
		x.grpcStatus = status
		if status == strconv.Itoa(grpcUnavailable) {
			failed = true
		}
	}
	return failed
}
