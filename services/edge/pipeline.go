package edge

import (
	"errors"
	"time"

	"github.com/switchboard-net/switchboard/pkg/balance"
)

// The request pipeline, one sequence for every HTTP protocol:
//
//	match the route          (matchRoute)
//	→ upstream headers       (headers.go: forwarding headers, hop-by-hop
//	                          removal, strip_prefix on the raw target)
//	→ pick, try, retry under the budget, report outcome and time to the
//	  first response byte    (startTries, then runTries in try.go)
//	→ relay the answer       (the transport)
//	→ metrics, access log, span (observe, writeAccess, trace.go)
//
// The transports only read and write bytes: the HTTP/1.1 fast path
// (http1.go, allocation-free), HTTP/2 over TLS and h2c through net/http's
// server, and gRPC over h2c to the backend (h2.go, one handler for both).
// The edge's own answers (no route, no backend, a failed try) come from
// edgeAnswer, so their status, text and X-Edge-Error are the same on
// every protocol; gRPC shows them as a status (grpcCodeOf).

// exchange is one request's state through the pipeline, whatever its
// protocol.
type exchange struct {
	start time.Time // the request's head arrived
	rt    *route    // nil: no route matched
	tries tries
	code  int   // HTTP status sent to the client (499: the client left first)
	n     int64 // response body bytes relayed from the backend
	// backend is the ID of the backend whose answer was relayed, or of
	// the last one tried; "" when none was chosen.
	backend    string
	grpcStatus string // "" unless a gRPC call
	edge       bool   // the edge answered, not a backend
	// standsFor is the HTTP status an edge's gRPC answer (HTTP 200 with
	// a grpc-status) stands for in the metrics; 0 otherwise.
	standsFor int
}

// matchRoute finds the route of a request. Before the balancer's first
// endpoint set (see awaitFirstSet) a request that matches nothing waits
// for that set and is matched again; done ends that wait early.
func (p *proxy) matchRoute(host, path []byte, get headerGetter, done <-chan struct{}) *route {
	rt := p.routes.Load().match(host, path, get)
	if rt == nil && p.awaitFirstSet(done) {
		rt = p.routes.Load().match(host, path, get)
	}
	return rt
}

// startTries prepares t for a request on rt under rules and picks its
// first backend: every request deposits into the retry budget here.
func (p *proxy) startTries(t *tries, rt *route, info balance.PickInfo, rules tryRules, start time.Time) (balance.Selection, *backend, error) {
	p.budget.deposit()
	t.init(p, rt.svc, rt.svc.set.Load(), info, rules, start)
	return t.pick()
}

// edgeAnswer is the edge's own answer when no backend's answer can be
// relayed: the HTTP status and a one-line text (without a newline), the
// same on every protocol. err is a pick's error (a 503) or the last try's.
func edgeAnswer(svc string, err error) (int, string) {
	switch {
	case errors.Is(err, balance.ErrNoEndpoint):
		return 503, "no backend available for service " + svc + " (none registered, or all disabled)"
	case errors.Is(err, errLeft), errors.Is(err, errNoBackend), errors.Is(err, balance.ErrNoHealthy):
		return 503, "no healthy backend for service " + svc
	case errors.Is(err, errTimeout), isTimeout(err):
		return 504, "gateway timeout: the backend did not answer in time"
	case isUnsent(err):
		return 502, "bad gateway: could not connect to a backend of service " + svc + ": " + err.Error()
	}
	return 502, "bad gateway: " + err.Error()
}

// pickFailure is the edge's answer when no backend could be picked.
func pickFailure(svc string, err error) (int, string) {
	if !errors.Is(err, balance.ErrNoEndpoint) {
		err = errNoBackend
	}
	return edgeAnswer(svc, err)
}

// grpcCodeOf is the gRPC status the edge answers a call with instead of
// an HTTP status of its own.
func grpcCodeOf(code int) int {
	switch code {
	case 404:
		return grpcUnimplemented
	case 429:
		return grpcResourceExhausted
	case 504:
		return grpcDeadlineExceeded
	}
	return grpcUnavailable
}

// observe counts a finished request in its route's metrics: the status
// class, the whole duration (head in to response end) and, when a
// backend answered, the time from sending the request to the first byte
// of the answer (every try together): switchboard_edge_http_upstream_latency_seconds.
func (p *proxy) observe(x *exchange) {
	rt := x.rt
	if rt == nil {
		return
	}
	code := x.code
	if x.standsFor != 0 {
		code = x.standsFor
	}
	rt.mCode[statusClass(code)].Inc()
	rt.mDur.Observe(time.Since(x.start).Seconds())
	if t := &x.tries; !t.firstByte.IsZero() {
		rt.mUp.Observe(t.firstByte.Sub(t.start).Seconds())
	}
}
