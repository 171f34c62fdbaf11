package edge

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/switchboard-net/switchboard/pkg/balance"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
)

// How a request is tried on a service's backends, written once for every
// HTTP path (the HTTP/1.1 fast path, HTTP/2 and gRPC); the transports only
// send the request and wait for the start of the answer.
//
//   - Each try (an attempt on one backend) after the first goes to a newly
//     picked backend, one this request has not tried when there is one, and
//     takes a token of the retry budget; --retries bounds how many there are.
//   - --try-timeout bounds how long one try waits for the start of its
//     answer. When it passes, the try counts at once as a timeout against its
//     backend (balance.Selection.Timeout for outlier detection, OUTCOME_TIMEOUT
//     to the balancer), whether or not the try goes on. A safe request (an
//     idempotent method, no body, no upgrade: RFC 9110 §9.2.2) then goes to
//     another backend: without hedging the late try is abandoned, with
//     hedging it goes on and the first answer wins. Other requests, and safe
//     ones that may not be retried (no token, no other backend, no retries
//     left), keep waiting.
//   - --response-timeout bounds all tries together (then 504).
//   - A try that never reached its backend (the connection failed, or the
//     backend left the endpoint set before the request was sent) may be
//     retried whatever the method. A safe try whose backend closed or reset
//     before answering, or left the endpoint set while it waited, is
//     retried too; an unsafe one that reached its backend never is.
//
// The fast path makes its first try on the connection's own goroutine,
// allocating nothing; only when that try does not simply get an answer
// does the request enter runTries, which runs each try on a goroutine of
// its own.

// maxTries bounds the tries of one request (--retries is capped below it).
const maxTries = 8

// Errors of tries. The transports wrap the network's errors in these.
var (
	// errTryTimeout: the try's own time (--try-timeout) ran out.
	errTryTimeout = errors.New("the try timed out")
	// errTimeout: the request's time (--response-timeout) ran out.
	errTimeout = errors.New("the backend did not answer in time")
	// errLeft: the backend left the service's endpoint set.
	errLeft = errors.New("the backend left the service's endpoint set")
	// errLostRace: another try answered first.
	errLostRace = errors.New("another try answered first")
	// errBackendClosed: the backend closed or reset without answering.
	errBackendClosed = errors.New("the backend closed the connection without a response")
	// errNoBackend: nothing could be picked.
	errNoBackend = errors.New("no backend available")
)

// unsentError marks a try that failed before its request reached the
// backend: another backend may be tried whatever the method.
type unsentError struct{ err error }

func (e *unsentError) Error() string { return e.err.Error() }
func (e *unsentError) Unwrap() error { return e.err }

// isUnsent reports whether err says the request never reached a backend.
func isUnsent(err error) bool {
	var u *unsentError
	return errors.As(err, &u)
}

// tryRules are one request's try rules, from the flags and its route.
type tryRules struct {
	tryTimeout time.Duration // one try, to the start of its answer; 0 = none
	overall    time.Duration // every try together, to the start of the answer; 0 = none
	retries    int           // tries after the first, at most
	safe       bool          // may be resent once it reached a backend
	hedge      bool          // on a per-try timeout, race a new try (safe requests only)
	conn       bool          // a connection's tries (TCP proxy), not an HTTP request's
}

// rules returns the try rules of an HTTP request on rt; safe says whether
// the request may be resent after it reached a backend.
func (p *proxy) rules(rt *route, safe bool) tryRules {
	r := tryRules{tryTimeout: p.opt.TryTimeout, overall: p.opt.ResponseHeaderTimeout,
		retries: min(max(p.opt.Retries, 0), maxTries-1), safe: safe, hedge: p.opt.Hedge}
	if rt.try.setTimeout {
		r.tryTimeout = rt.try.timeout
	}
	if rt.try.setHedge {
		r.hedge = rt.try.hedge
	}
	r.hedge = r.hedge && safe && r.tryTimeout > 0
	return r
}

// attempt is one try on one backend.
type attempt struct {
	sel      balance.Selection
	b        *backend
	start    time.Time
	answered time.Time // the first byte of its answer came; zero until then
	timedOut bool      // its per-try timeout was counted
	reported bool      // its outcome went to the balancer already (connect)
	fl       flight

	// Owned by runTries.
	cancel    context.CancelCauseFunc
	abandoned error // why runTries gave up on it, nil while it counts
}

// reset makes a reusable for another request (the fast path keeps one
// per connection).
func (a *attempt) reset() {
	a.sel, a.b, a.start, a.answered, a.timedOut, a.reported = balance.Selection{}, nil, time.Time{}, time.Time{}, false, false
	a.cancel, a.abandoned = nil, nil
	a.fl.reset()
}

// tries is the state of one request's tries.
type tries struct {
	p     *proxy
	svc   *upService
	set   *balance.Set
	info  balance.PickInfo
	rules tryRules
	start time.Time // the request's clock (--response-timeout)
	// firstByte is when the answer relayed to the client began (zero:
	// none did); firstByte - start is the upstream latency.
	firstByte time.Time
	n         int // tries begun
	tried     [maxTries]*backend
}

func (t *tries) init(p *proxy, svc *upService, set *balance.Set, info balance.PickInfo, rules tryRules, start time.Time) {
	*t = tries{p: p, svc: svc, set: set, info: info, rules: rules, start: start}
}

// deadline is when the whole request runs out of time; zero for never.
func (t *tries) deadline() time.Time {
	if t.rules.overall <= 0 {
		return time.Time{}
	}
	return t.start.Add(t.rules.overall)
}

// waitUntil is when a must have the start of its answer: its own time or
// the request's, whichever ends first (zero: neither). isTry says the
// try's own time ends first.
func (t *tries) waitUntil(a *attempt) (dl time.Time, isTry bool) {
	dl = t.deadline()
	if t.rules.tryTimeout > 0 {
		if td := a.start.Add(t.rules.tryTimeout); dl.IsZero() || td.Before(dl) {
			return td, true
		}
	}
	return dl, false
}

// pick picks the first try's backend.
func (t *tries) pick() (balance.Selection, *backend, error) {
	for range 3 {
		sel, err := t.set.Pick(t.info)
		if err != nil {
			return balance.Selection{}, nil, err
		}
		if b := t.svc.backendFor(sel.Endpoint); b != nil {
			return sel, b, nil
		}
		// The set is updated before the backend map: pick again.
		sel.Done(balance.Ignore, 0)
	}
	return balance.Selection{}, nil, errNoBackend
}

// pickOther picks the backend of a retry: one not tried yet when a few
// picks find one, else (with allowSame) a tried one. Retries pick without
// the hash key, which would choose the same backend again.
func (t *tries) pickOther(allowSame bool) (balance.Selection, *backend, bool) {
	var keep balance.Selection
	var keepB *backend
	for range 4 {
		sel, err := t.set.Pick(balance.PickInfo{})
		if err != nil {
			break
		}
		b := t.svc.backendFor(sel.Endpoint)
		if b != nil && !t.triedBackend(b) {
			keep.Done(balance.Ignore, 0)
			return sel, b, true
		}
		if b != nil && allowSame && keepB == nil {
			keep, keepB = sel, b
			continue
		}
		sel.Done(balance.Ignore, 0)
	}
	// Every endpoint the policy offers was tried (the others ejected):
	// an ejected endpoint whose health checks pass is better than trying
	// one that just failed or timed out again — outlier ejection guesses
	// from failures that may have passed (a burst of timeouts under load),
	// while the endpoint tried has just failed.
	for _, es := range t.set.Endpoints() {
		if !es.Ejected() || es.Endpoint().Health == balance.HealthUnhealthy {
			continue
		}
		if b := t.svc.backendFor(es); b != nil && !t.triedBackend(b) {
			keep.Done(balance.Ignore, 0)
			return t.set.Take(es), b, true
		}
	}
	if keepB != nil {
		return keep, keepB, true
	}
	return balance.Selection{}, nil, false
}

func (t *tries) triedBackend(b *backend) bool {
	for _, x := range t.tried[:min(t.n, maxTries)] {
		if x == b {
			return true
		}
	}
	return false
}

// mayRetry reports whether one more try may begin, taking a token of the
// retry budget when it may (give it back with refund if no backend is
// found).
func (t *tries) mayRetry() bool {
	return t.n <= t.rules.retries && t.p.budget.withdraw()
}

// begin starts try a on b.
func (t *tries) begin(a *attempt, sel balance.Selection, b *backend) {
	a.sel, a.b, a.start = sel, b, time.Now()
	if t.n < maxTries {
		t.tried[t.n] = b
	}
	t.n++
	if t.n > 1 && !t.rules.conn {
		t.p.met.retries.Inc()
	}
	b.active.Add(1)
	b.total.Add(1)
	b.mReq.Inc()
}

// answer records that a's answer began now: its latency, reported to the
// balancer and fed to the local picker (p2c, outlier detection), is the
// time to this first byte, whatever the body's streaming takes later.
func (t *tries) answer(a *attempt) {
	now := time.Now()
	a.answered, t.firstByte = now, now
	if a.b != nil {
		a.b.mLat.Observe(now.Sub(a.start).Seconds())
	}
}

// tryEnd is how a try ended, for its backend's record.
type tryEnd uint8

const (
	endAnswered tryEnd = iota // the backend answered, and not with a failure
	endFailed                 // its fault: refused, reset, 5xx, a broken answer
	endTimedOut               // no answer within --response-timeout
	endIgnored                // no test of the backend: the client left, the backend left the set, another try won
)

// end records how a ended: the local balance state (outlier detection,
// breaker, latency), the backend's counters and the balancer's report. A
// try whose per-try timeout was counted already counts nothing more.
func (t *tries) end(a *attempt, e tryEnd) {
	b := a.b
	if b == nil {
		return
	}
	b.land(&a.fl)
	a.b = nil
	b.active.Add(-1)
	if a.timedOut || e == endIgnored {
		a.sel.Done(balance.Ignore, 0)
		return
	}
	lat := time.Since(a.start)
	if !a.answered.IsZero() {
		lat = a.answered.Sub(a.start)
	}
	o, po := balance.Success, balancerv1.Outcome_OUTCOME_SUCCESS
	switch e {
	case endFailed:
		o, po = balance.Failure, balancerv1.Outcome_OUTCOME_FAILURE
	case endTimedOut:
		o, po = balance.Failure, balancerv1.Outcome_OUTCOME_TIMEOUT
	}
	if o == balance.Failure {
		b.failures.Add(1)
		b.mFail.Inc()
	}
	a.sel.Done(o, lat)
	if !a.reported {
		t.report(b, po, lat)
	}
}

// timeout counts a's per-try timeout now, while a may go on waiting.
func (t *tries) timeout(a *attempt) {
	if a.timedOut || a.b == nil {
		return
	}
	a.timedOut = true
	lat := time.Since(a.start)
	a.sel.Timeout(lat)
	a.b.failures.Add(1)
	a.b.mFail.Inc()
	t.p.met.tryTimeouts.Inc()
	t.report(a.b, balancerv1.Outcome_OUTCOME_TIMEOUT, lat)
}

func (t *tries) report(b *backend, o balancerv1.Outcome, lat time.Duration) {
	if !t.svc.static {
		t.p.rep.add(report{svc: t.svc.name, id: b.id, outcome: o, latency: lat})
	}
}

// connect makes the tries of a connection (the TCP proxy): pick a
// backend, connect, and on a connect failure (counted and reported
// against that backend) connect to another one not tried yet, under
// --retries and the retry budget, as for an HTTP request that never
// reached its backend. The connected try is reported to the balancer at
// once, its latency the connect time; the caller ends it (t.end) when
// the connection is over, which holds its place in the picker's count of
// active requests (least_conn, p2c) until then.
func (t *tries) connect(ctx context.Context, d contextDialer, a *attempt) (net.Conn, error) {
	sel, b, err := t.pick()
	if err != nil {
		return nil, err
	}
	for {
		t.begin(a, sel, b)
		c, err := d.DialContext(ctx, "tcp", b.addr)
		if err == nil {
			t.answer(a)
			t.report(b, balancerv1.Outcome_OUTCOME_SUCCESS, a.answered.Sub(a.start))
			a.reported = true
			return c, nil
		}
		if ctx.Err() != nil {
			t.end(a, endIgnored)
			return nil, err
		}
		t.end(a, endFailed)
		if !t.mayRetry() {
			return nil, err
		}
		var ok bool
		if sel, b, ok = t.pickOther(false); !ok {
			t.p.budget.refund()
			return nil, err
		}
	}
}

// endOf maps a failed try's error to how it ends for its backend.
func endOf(err error) tryEnd {
	var ae *answeredError
	switch {
	case errors.Is(err, errLeft), errors.Is(err, errLostRace), errors.Is(err, context.Canceled), errors.As(err, &ae):
		return endIgnored
	case errors.Is(err, errTimeout), isTimeout(err) && !isUnsent(err):
		return endTimedOut
	}
	return endFailed
}

// retryable reports whether a try that failed with err may be followed by
// another, and whether that one may go to a backend tried already (a
// backend that closed a kept-alive connection may well answer on a new
// one; one that left the set or timed out will not).
func (t *tries) retryable(err error) (ok, allowSame bool) {
	switch {
	case errors.Is(err, errTimeout), errors.Is(err, context.Canceled):
		return false, false
	case isUnsent(err):
		return true, !errors.Is(err, errLeft)
	}
	return t.rules.safe, !errors.Is(err, errLeft)
}

// tryOps is what a transport gives runTries.
type tryOps[T any] struct {
	// do makes try a: it sends the request to a.b and waits for the start
	// of the answer, until ctx ends (context.Cause says why). Errors
	// before the request reached the backend are *unsentError.
	do func(ctx context.Context, a *attempt) (T, error)
	// resume goes on waiting for the answer of a try begun outside
	// runTries (the fast path's first); nil when there is none.
	resume func(ctx context.Context, a *attempt) (T, error)
	// discard drops an answer nobody will read (a try that lost a race or
	// was abandoned but answered anyway).
	discard func(T)
}

// How runTries starts.
type tryStart uint8

const (
	startFirst  tryStart = iota // first is begun but not sent: do it
	adoptFirst                  // first is in flight: resume it
	afterFailed                 // first failed with firstErr and was ended
)

type tryResult[T any] struct {
	a   *attempt
	v   T
	err error
}

// runTries runs a request's tries from first (see tryStart) under t's
// rules until one gets the start of an answer, which it returns with its
// try, still to be ended (t.end) once the answer is relayed. Otherwise
// every try has been ended and the error says why the last failed:
// errTimeout when the request's time ran out, the cause of ctx when it
// ended. Every try's goroutine has returned when runTries does.
func runTries[T any](ctx context.Context, t *tries, ops *tryOps[T], first *attempt, how tryStart, firstErr error) (T, *attempt, error) {
	var zero T
	if how == afterFailed {
		// Decided before anything is allocated: most failures of an
		// unsafe request end here.
		if ok, _ := t.retryable(firstErr); !ok || t.n > t.rules.retries {
			return zero, nil, firstErr
		}
	}
	results := make(chan tryResult[T], maxTries)
	evicted := make(chan *attempt, maxTries)
	live := make([]*attempt, 0, maxTries)
	lastErr := firstErr
	var stopped error // errTimeout or the client's cause: no more tries

	launch := func(a *attempt, f func(context.Context, *attempt) (T, error)) {
		actx, cancel := context.WithCancelCause(ctx)
		a.cancel = cancel
		a.b.board(&a.fl, a, evicted, t.set)
		live = append(live, a)
		go func() {
			v, err := f(actx, a)
			results <- tryResult[T]{a, v, err}
		}()
	}
	// another begins one more try if the rules, the budget and the
	// backends allow, and reports whether it did.
	another := func(allowSame bool) bool {
		if stopped != nil || !t.mayRetry() {
			return false
		}
		sel, b, ok := t.pickOther(allowSame)
		if !ok {
			t.p.budget.refund()
			return false
		}
		a := &attempt{}
		t.begin(a, sel, b)
		launch(a, ops.do)
		return true
	}
	abandon := func(a *attempt, cause error) {
		if a.abandoned == nil {
			a.abandoned = cause
			a.cancel(cause)
		}
	}
	// onTryTimeout acts on a try whose own time ran out.
	onTryTimeout := func(a *attempt) {
		t.timeout(a)
		switch {
		case !t.rules.safe:
		case t.rules.hedge:
			if another(false) {
				t.p.met.hedges.Inc()
			}
		case another(false):
			abandon(a, errTryTimeout)
		}
	}

	switch how {
	case startFirst:
		launch(first, ops.do)
	case adoptFirst:
		launch(first, ops.resume)
	default:
		if ok, same := t.retryable(firstErr); !ok || !another(same) {
			return zero, nil, firstErr
		}
	}

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for len(live) > 0 {
		var wake <-chan time.Time
		if stopped == nil {
			if w := nextWake(t, live); !w.IsZero() {
				timer.Reset(time.Until(w))
				wake = timer.C
			}
		}
		select {
		case r := <-results:
			live = remove(live, r.a)
			r.a.b.land(&r.a.fl)
			if r.a.abandoned != nil {
				if r.err == nil && ops.discard != nil {
					ops.discard(r.v)
				}
				t.end(r.a, endOf(r.a.abandoned))
				r.a.cancel(nil)
				continue
			}
			if r.err == nil {
				t.answer(r.a)
				for _, o := range live {
					abandon(o, errLostRace)
				}
				for len(live) > 0 {
					o := <-results
					live = remove(live, o.a)
					o.a.b.land(&o.a.fl)
					if o.err == nil && ops.discard != nil {
						ops.discard(o.v)
					}
					t.end(o.a, endOf(o.a.abandoned))
					o.a.cancel(nil)
				}
				return r.v, r.a, nil
			}
			t.end(r.a, endOf(r.err))
			r.a.cancel(nil)
			lastErr = r.err
			if ok, same := t.retryable(r.err); ok {
				another(same)
			}
		case a := <-evicted:
			// Only safe tries move once sent; the others check before
			// they send (see flight).
			if t.rules.safe && a.abandoned == nil && contains(live, a) && another(false) {
				abandon(a, errLeft)
			}
		case <-wake:
			now := time.Now()
			if dl := t.deadline(); !dl.IsZero() && !now.Before(dl) {
				stopped = errTimeout
				for _, a := range live {
					abandon(a, errTimeout)
				}
				continue
			}
			for _, a := range live[:len(live):len(live)] {
				if !a.timedOut && a.abandoned == nil && t.rules.tryTimeout > 0 && !now.Before(a.start.Add(t.rules.tryTimeout)) {
					onTryTimeout(a)
				}
			}
		case <-ctx.Done():
			stopped = context.Cause(ctx)
			for _, a := range live {
				abandon(a, stopped)
			}
			ctx = context.Background() // seen once
		}
	}
	if stopped != nil {
		return zero, nil, stopped
	}
	return zero, nil, lastErr
}

// nextWake is when runTries must next look at its tries: the earliest
// per-try deadline not yet reached, or the request's deadline.
func nextWake(t *tries, live []*attempt) time.Time {
	w := t.deadline()
	if t.rules.tryTimeout <= 0 {
		return w
	}
	for _, a := range live {
		if a.timedOut || a.abandoned != nil {
			continue
		}
		if d := a.start.Add(t.rules.tryTimeout); w.IsZero() || d.Before(w) {
			w = d
		}
	}
	return w
}

func remove(live []*attempt, a *attempt) []*attempt {
	for i, x := range live {
		if x == a {
			return append(live[:i], live[i+1:]...)
		}
	}
	return live
}

func contains(live []*attempt, a *attempt) bool {
	for _, x := range live {
		if x == a {
			return true
		}
	}
	return false
}

// flight registers a try with its backend while the try may still move
// elsewhere, so that the backend leaving the endpoint set (unhealthy,
// ejected by the balancer, deregistered, disabled) reaches it: a safe try
// is registered until the start of its answer, an unsafe one until its
// request is sent (a try is "queued" until then). Leaving marks the
// flight evicted and wakes the try: on the fast path's first try by a
// past read deadline on its connection, inside runTries by a message to
// the loop, which moves the request when it may.
type flight struct {
	prev, next *flight // the backend's list, guarded by backend.fmu
	linked     bool    // guarded by backend.fmu
	evicted    atomic.Bool
	a          *attempt
	conn       net.Conn        // guarded by backend.fmu
	notify     chan<- *attempt // guarded by backend.fmu
}

func (f *flight) reset() {
	f.prev, f.next, f.linked, f.a, f.conn, f.notify = nil, nil, false, nil, nil, nil
	f.evicted.Store(false)
}

// aLongTimeAgo is a deadline in the past: setting it wakes a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// evictLocked marks f evicted and wakes its try. The caller holds the
// backend's fmu.
func (f *flight) evictLocked() {
	if f.evicted.Swap(true) {
		return
	}
	switch {
	case f.notify != nil:
		select {
		case f.notify <- f.a:
		default: // cannot happen: the channel holds every try
		}
	case f.conn != nil:
		f.conn.SetReadDeadline(aLongTimeAgo)
	}
}

// board registers f for a's try on b: woken through conn, or told on
// notify (then conn is ignored). Boarding a backend that has left, unless
// the set is in panic mode and routes to such backends on purpose, evicts
// f at once. Boarding again moves f to the new way of waking.
func (b *backend) board(f *flight, a *attempt, notify chan<- *attempt, set *balance.Set) {
	b.boardConn(f, a, nil, notify, set)
}

func (b *backend) boardConn(f *flight, a *attempt, conn net.Conn, notify chan<- *attempt, set *balance.Set) {
	b.fmu.Lock()
	defer b.fmu.Unlock()
	f.a, f.conn, f.notify = a, conn, notify
	if !f.linked {
		f.linked = true
		f.prev, f.next = nil, b.flights
		if b.flights != nil {
			b.flights.prev = f
		}
		b.flights = f
	}
	if f.evicted.Load() {
		f.evicted.Store(false)
		f.evictLocked() // evicted before: tell the new waker
		return
	}
	if b.left.Load() && !set.Panicking() {
		f.evictLocked()
	}
}

// land unregisters f; a flight not registered is left alone. Only the
// try's owner boards and lands its flight, so it may read linked unlocked.
func (b *backend) land(f *flight) {
	if b == nil || !f.linked {
		return
	}
	b.fmu.Lock()
	defer b.fmu.Unlock()
	if !f.linked {
		return
	}
	if f.prev != nil {
		f.prev.next = f.next
	} else {
		b.flights = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	}
	f.prev, f.next, f.linked = nil, nil, false
}

// leave marks b as out of the endpoint set and evicts its flights.
func (b *backend) leave() {
	b.fmu.Lock()
	defer b.fmu.Unlock()
	if b.left.Swap(true) {
		return
	}
	for f := b.flights; f != nil; f = f.next {
		f.evictLocked()
	}
}

// rejoin marks b as back in the endpoint set.
func (b *backend) rejoin() {
	b.fmu.Lock()
	b.left.Store(false)
	b.fmu.Unlock()
}
