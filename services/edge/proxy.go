package edge

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// HTTPOptions are the HTTP proxy's limits and timeouts.
type HTTPOptions struct {
	IdleTimeout           time.Duration // client keep-alive idle
	ReadHeaderTimeout     time.Duration // a request head must arrive within this
	ClientTimeout         time.Duration // each client body read / response write
	ConnectTimeout        time.Duration // dialing a backend
	ResponseHeaderTimeout time.Duration // backend's response head, every try together
	TryTimeout            time.Duration // one try's response head; 0 = none
	Hedge                 bool          // on a try timeout, race another try (safe requests)
	BackendIdleTimeout    time.Duration // silence within a response body
	TunnelIdleTimeout     time.Duration // upgraded connections
	MaxHeaderBytes        int
	Retries               int
	RetryBudgetPercent    int
	MaxConns              int
}

// proxy is the HTTP proxy shared by every HTTP listener.
type proxy struct {
	opt      HTTPOptions
	log      *slog.Logger
	routes   atomic.Pointer[routeTable]
	ups      *upstreams
	rep      *reporter
	met      *metrics
	budget   *retryBudget
	limiter  *rateLimiter
	access   *accessLog
	tracer   trace.Tracer // nil when spans are not exported
	fallback *fallbackServer
	// firstSet is closed at the balancer's first endpoint set (nil without
	// a balancer); until then, or until warmUntil, a request that matches
	// no route waits for it instead of getting 404 (awaitFirstSet).
	firstSet  <-chan struct{}
	warmUntil time.Time
	wireWS    *wireWS // the wire protocol's WebSocket entrance, or nil (wire.go)

	draining atomic.Bool     // responses close their connections (accept.go)
	acc      acceptState     // accept loops and draining (accept.go)
	hardStop context.Context // cancelled when the grace period ends
	cancel   context.CancelFunc
	streams  sync.WaitGroup // upgraded tunnels and handed-off conns
	mu       sync.Mutex
	conns    map[*h1conn]struct{}
	sem      chan struct{}
}

func newProxy(opt HTTPOptions, log *slog.Logger, ups *upstreams, rep *reporter, met *metrics) *proxy {
	p := &proxy{opt: opt, log: log, ups: ups, rep: rep, met: met,
		budget: newRetryBudget(opt.RetryBudgetPercent), conns: map[*h1conn]struct{}{}}
	p.hardStop, p.cancel = context.WithCancel(context.Background())
	if opt.MaxConns > 0 {
		p.sem = make(chan struct{}, opt.MaxConns)
	}
	p.routes.Store(newRouteTable(nil))
	return p
}

// awaitFirstSet is called when a request matches no route. Before the
// balancer's first endpoint set (and at most until warmUntil) it waits for
// that set, since routes learnt from the balancer are not there yet, and
// reports whether the request should be matched again. done ends the wait
// early (the request's context; nil: none).
func (p *proxy) awaitFirstSet(done <-chan struct{}) bool {
	if p.firstSet == nil {
		return false
	}
	select {
	case <-p.firstSet:
		return false
	default:
	}
	wait := time.Until(p.warmUntil)
	if wait <= 0 {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-p.firstSet:
		return true
	case <-t.C:
	case <-done:
	case <-p.hardStop.Done():
	}
	return false
}

// retryBudget bounds retries to a share of requests: every request
// deposits percent/100 of a token, every retry withdraws one; the balance
// is capped so a quiet period does not bank a retry storm.
type retryBudget struct {
	milli    atomic.Int64
	deposit_ int64
	cap      int64
}

func newRetryBudget(percent int) *retryBudget {
	b := &retryBudget{deposit_: int64(percent) * 10, cap: 100_000}
	b.milli.Store(10_000) // ten retries to start with
	return b
}

func (b *retryBudget) deposit() {
	if b.deposit_ == 0 {
		return
	}
	if b.milli.Add(b.deposit_) > b.cap {
		b.milli.Store(b.cap)
	}
}

// refund gives back a token withdrawn for a retry that did not happen.
func (b *retryBudget) refund() {
	if b.milli.Add(1000) > b.cap {
		b.milli.Store(b.cap)
	}
}

func (b *retryBudget) withdraw() bool {
	for {
		v := b.milli.Load()
		if v < 1000 {
			return false
		}
		if b.milli.CompareAndSwap(v, v-1000) {
			return true
		}
	}
}

// rateLimiter is a per-client-IP token bucket over a bounded table.
type rateLimiter struct {
	rate  float64 // tokens per second
	burst float64
	max   int
	mu    sync.Mutex
	m     map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst, max int) *rateLimiter {
	if burst < 1 {
		burst = int(rate)
		if burst < 1 {
			burst = 1
		}
	}
	return &rateLimiter{rate: rate, burst: float64(burst), max: max, m: map[netip.Addr]*bucket{}}
}

func (l *rateLimiter) allow(ip netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m[ip]
	if b == nil {
		if len(l.m) >= l.max {
			// Drop buckets that have refilled: they hold no information.
			for k, v := range l.m {
				if v.tokens+now.Sub(v.last).Seconds()*l.rate >= l.burst {
					delete(l.m, k)
				}
			}
			if len(l.m) >= l.max {
				return false
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.m[ip] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// accessLog writes one line per request to a buffered writer flushed
// every second.
type accessLog struct {
	mu    sync.Mutex
	w     *bufio.Writer
	out   io.Writer
	buf   []byte
	query bool // log the target's query string (--access-log-query)
}

// newAccessLog logs to out; without query, targets are logged without
// their query strings (which may carry secrets).
func newAccessLog(out io.Writer, query bool) *accessLog {
	return &accessLog{w: bufio.NewWriterSize(out, 64<<10), out: out, query: query}
}

func (a *accessLog) flush() {
	a.mu.Lock()
	a.w.Flush()
	a.mu.Unlock()
}

func (a *accessLog) run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.flush()
			return nil
		case <-t.C:
			a.flush()
		}
	}
}

// accessEntry is one access-log line. S is []byte on the HTTP/1.1 fast
// path, which logs straight from its parse buffers without allocating,
// and string on the HTTP/2 path, which logs from net/http's request.
type accessEntry[S string | []byte] struct {
	start                        time.Time
	client, method, host, target S
	proto                        S      // HTTP/1.1, HTTP/2.0, ...
	code                         int    // HTTP status sent to the client
	n                            int64  // response body bytes relayed from the backend
	route, backend               string // "" when none was chosen
	grpcStatus                   string // "" unless a gRPC call
}

// writeAccess writes e as one line, every protocol in the same format:
//
//	time client method host target status bytes ms route backend proto grpc-status
//
// with "-" for an empty route, backend or grpc-status.
func writeAccess[S string | []byte](a *accessLog, e *accessEntry[S]) {
	a.mu.Lock()
	b := a.buf[:0]
	b = e.start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, ' ')
	b = append(b, e.client...)
	b = append(b, ' ')
	b = append(b, e.method...)
	b = append(b, ' ')
	b = append(b, e.host...)
	b = append(b, ' ')
	target := e.target
	if !a.query {
		target = withoutQuery(target)
	}
	b = append(b, target...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(e.code), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.n, 10)
	b = append(b, ' ')
	b = strconv.AppendFloat(b, float64(time.Since(e.start).Microseconds())/1000, 'f', 3, 64)
	b = appendField(b, e.route)
	b = appendField(b, e.backend)
	b = append(b, ' ')
	b = append(b, e.proto...)
	b = appendField(b, e.grpcStatus)
	b = append(b, '\n')
	a.w.Write(b)
	a.buf = b
	a.mu.Unlock()
}

// withoutQuery cuts a request target at its query string.
func withoutQuery[S string | []byte](target S) S {
	for i := 0; i < len(target); i++ {
		if target[i] == '?' {
			return target[:i]
		}
	}
	return target
}

// appendField appends a space and f, or "-" when f is empty.
func appendField(b []byte, f string) []byte {
	b = append(b, ' ')
	if f == "" {
		return append(b, '-')
	}
	return append(b, f...)
}

func routeName(rt *route) string {
	if rt == nil {
		return ""
	}
	return rt.name
}

// logAccess logs a request served by the HTTP/1.1 fast path.
func (p *proxy) logAccess(h *h1conn, start time.Time, code int, n int64, rt *route, backendID string) {
	if p.access == nil {
		return
	}
	req := &h.req
	writeAccess(p.access, &accessEntry[[]byte]{start: start, client: h.ip, method: req.l1.of(req.buf),
		host: h.host, target: req.l2.of(req.buf), proto: req.l3.of(req.buf),
		code: code, n: n, route: routeName(rt), backend: backendID})
}
