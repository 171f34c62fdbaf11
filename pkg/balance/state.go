package balance

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// status bits, read lock-free on the pick path.
const (
	stEjected  uint32 = 1 << iota // outlier detection ejected it
	stOpen                        // breaker open
	stHalfOpen                    // breaker half-open: probes only
)

// BreakerState is a circuit breaker's state.
type BreakerState uint8

// Breaker states.
const (
	BreakerClosed   BreakerState = iota // normal traffic
	BreakerOpen                         // no traffic until OpenTime passes
	BreakerHalfOpen                     // a few trial requests decide
)

// String returns the lower-case name of s.
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return "invalid"
}

// EndpointState is one endpoint's live state inside a Set. The Set keeps
// one per endpoint ID for as long as that ID is present, across updates,
// so counters, latency, ejection and breaker state survive rebuilds. State
// is per Set: two services (or routes) that share an address do not share
// state. All methods are safe for concurrent use.
type EndpointState struct {
	// The pick line comes first and fills one cache line: every field a
	// policy reads to choose, and the outstanding count every pick and
	// Done write. EndpointState's size is a multiple of 64, so the
	// allocator's size classes give each one its own lines and parallel
	// pickers writing one endpoint's count never invalidate another's.
	pickLine
	// Fields the pickers never read (report path, rebuild, accessors), on
	// lines of their own.
	coldState
	_ [(cacheLine - unsafe.Sizeof(coldState{})%cacheLine) % cacheLine]byte
}

// cacheLine is the cache line size of the machines we run on (amd64,
// arm64 servers).
const cacheLine = 64

// pickLine holds what the pick path reads and writes.
type pickLine struct {
	outstanding atomic.Int64
	ewma        atomic.Uint64 // float64 bits, nanoseconds; 0 = no sample
	ewmaAt      atomic.Int64  // unix nanos of the last ewma update
	status      atomic.Uint32
	probes      atomic.Int32 // half-open trial requests in flight
	_           [cacheLine - 32]byte
}

// coldState is the rest of an EndpointState.
type coldState struct {
	set *Set
	id  string

	effWeight atomic.Uint64 // float64 bits, from the last rebuild
	ep        atomic.Pointer[Endpoint]
	removed   atomic.Bool

	requests atomic.Uint64
	failures atomic.Uint64

	// Guarded by mu (report path and rebuild).
	mu             sync.Mutex
	consecFail     int
	ejections      int // consecutive ejections, for the back-off
	ejectedUntil   time.Time
	returnedAt     time.Time // when the last ejection ended
	openUntil      time.Time
	halfOpenPassed int

	// Guarded by set.mu.
	rampStart   time.Time
	wasEligible bool
	gen         uint64 // the last Update that listed it
}

// ID returns the endpoint's ID.
func (e *EndpointState) ID() string { return e.id }

// Endpoint returns the endpoint as last given to Set.Update. Do not modify it.
func (e *EndpointState) Endpoint() *Endpoint { return e.ep.Load() }

// Addr returns the endpoint's address.
func (e *EndpointState) Addr() string { return e.ep.Load().Addr }

// Outstanding returns the number of picked requests not yet Done.
func (e *EndpointState) Outstanding() int64 { return e.outstanding.Load() }

// Latency returns the latency estimate (peak EWMA), 0 before any sample.
func (e *EndpointState) Latency() time.Duration {
	return time.Duration(math.Float64frombits(e.ewma.Load()))
}

// Requests and Failures return how many outcomes were reported.
func (e *EndpointState) Requests() uint64 { return e.requests.Load() }

// Failures returns how many Failure outcomes were reported.
func (e *EndpointState) Failures() uint64 { return e.failures.Load() }

// Ejected reports whether outlier detection has ejected the endpoint.
func (e *EndpointState) Ejected() bool { return e.status.Load()&stEjected != 0 }

// Breaker returns the breaker's state.
func (e *EndpointState) Breaker() BreakerState {
	s := e.status.Load()
	switch {
	case s&stOpen != 0:
		return BreakerOpen
	case s&stHalfOpen != 0:
		return BreakerHalfOpen
	}
	return BreakerClosed
}

// EffectiveWeight is the weight the endpoint had at the last rebuild:
// configured weight × slow-start ramp, or 0 when it takes no traffic
// (unhealthy, ejected, breaker open). This is what a control plane streams
// to data planes; map 0 to "unhealthy" there so their panic mode still
// works, and turn slow start off in data planes fed ramped weights.
func (e *EndpointState) EffectiveWeight() float64 {
	return math.Float64frombits(e.effWeight.Load())
}

// admit reports whether a new request may go to e and whether it takes a
// half-open probe slot. Lock-free: one atomic load when closed.
func (e *EndpointState) admit(halfOpenMax int32) (ok, probe bool) {
	s := e.status.Load()
	if s == 0 {
		return true, false
	}
	if s&(stEjected|stOpen) != 0 {
		return false, false
	}
	// Half-open: take a probe slot if one is free.
	for {
		n := e.probes.Load()
		if n >= halfOpenMax {
			return false, false
		}
		if e.probes.CompareAndSwap(n, n+1) {
			return true, true
		}
	}
}

// pickable is admit without side effects, for policies that compare
// candidates before choosing.
func (e *EndpointState) pickable(halfOpenMax int32) bool {
	s := e.status.Load()
	if s == 0 {
		return true
	}
	return s&(stEjected|stOpen) == 0 && e.probes.Load() < halfOpenMax
}

// cost is p2c's load estimate: latency (decayed toward zero while idle)
// times (outstanding + 1). An endpoint with no latency sample yet costs
// nothing while idle, so it is tried at once, and a great deal while its
// first requests are in flight, so it is not flooded before it answers.
func (e *EndpointState) cost(now int64, decay float64) float64 {
	return costOf(e.ewma.Load(), e.outstanding.Load(), e.ewmaAt.Load(), now, decay)
}

// costOf is cost from the three fields' values, so that a picker can load
// both candidates' fields first and have their cache misses overlap.
func costOf(ewma uint64, outstanding, ewmaAt, now int64, decay float64) float64 {
	l := math.Float64frombits(ewma)
	out := float64(outstanding)
	if l == 0 {
		if out <= 0 {
			return 0
		}
		return unsampledPenalty + out
	}
	if dt := now - ewmaAt; dt > 0 {
		l *= decayFactor(float64(dt) / decay)
	}
	return l * (out + 1)
}

// decayFactor returns exp(-x) for x >= 0, with a cheap form for the small
// x of busy endpoints (error below 5e-7 for x < 0.01).
func decayFactor(x float64) float64 {
	if x < 0.01 {
		return 1 - x + x*x/2
	}
	return math.Exp(-x)
}

// unsampledPenalty is the cost of an endpoint with requests in flight and
// no latency sample yet: above any real latency × load.
const unsampledPenalty = 1e18

// observe folds one latency sample into the peak EWMA: a sample above the
// estimate replaces it (react to slowness at once), a lower one is blended
// in with weight 1-exp(-dt/decay) (forget it slowly). Failures never lower
// the estimate: fast refusals must not make a broken endpoint look good.
// Caller holds e.mu.
func (e *EndpointState) observe(now int64, lat time.Duration, failed bool, decay float64) {
	x := float64(lat)
	if x <= 0 {
		x = 1
	}
	old := math.Float64frombits(e.ewma.Load())
	if failed && old == 0 {
		return // a fast failure is no latency sample
	}
	var v float64
	switch {
	case old == 0 || x > old:
		v = x
	case failed:
		v = old
	default:
		dt := float64(now - e.ewmaAt.Load())
		if dt < 0 {
			dt = 0
		}
		w := math.Exp(-dt / decay)
		v = old*w + x*(1-w)
	}
	e.ewma.Store(math.Float64bits(v))
	e.ewmaAt.Store(now)
}
