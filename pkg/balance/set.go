package balance

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Set owns the endpoints of one service and answers picks. Update replaces
// the endpoint list and rebuilds an immutable picker snapshot; Pick loads
// that snapshot with one atomic load and never blocks. Ejection, breaker
// transitions and slow-start steps also rebuild the snapshot: on the Done
// that caused them, or once a deadline (ejection end, breaker open time,
// next ramp step) has passed, on the next Pick or Refresh.
//
// The set reads its clock only in Update, Done and Refresh; picks use the
// time of the last of those. Under traffic that is at most one request
// old. An owner that wants time-based transitions on time while idle calls
// Refresh from a ticker (once a second is plenty).
type Set struct {
	cfg        atomic.Pointer[Config] // with defaults filled in; replaced by SetConfig
	build      Builder                // guarded by mu
	clock      Clock
	rand       *Rand
	initialSet bool // Update has been called at least once; guarded by mu

	snap atomic.Pointer[snapshot]
	// now is the clock's reading at the last Update, Done or Refresh, in
	// unix nanoseconds. Picks use it instead of reading the clock, which
	// costs 20–400 ns depending on the machine.
	now atomic.Int64

	mu     sync.Mutex // serialises Update, rebuild, ejection
	byID   map[string]*EndpointState
	order  []*EndpointState // in Update order
	gen    uint64           // counts Updates, to mark endpoints still listed
	newIDs map[string]struct{}

	// Rebuild scratch, reused so that a rebuild allocates no more for
	// 50 000 endpoints than for 5.
	eligible []bool
	found    []*EndpointState // Update: each listed endpoint's state, nil if new
}

type snapshot struct {
	picker   Picker
	halfOpen int32            // Breaker.HalfOpenRequests
	eps      []*EndpointState // what picker chooses from
	err      error            // ErrNoEndpoint / ErrNoHealthy when eps is empty
	panic    bool
	deadline int64 // unix nanos at which the snapshot goes stale; 0 = never
}

// Option configures a Set.
type Option func(*Set)

// WithClock sets the clock (default SystemClock).
func WithClock(c Clock) Option { return func(s *Set) { s.clock = c } }

// WithSeed makes the set's randomness a deterministic sequence from seed
// (for tests and simulations). Without it, picks use math/rand/v2's
// runtime source.
func WithSeed(seed uint64) Option { return func(s *Set) { s.rand = newRand(seed, true) } }

// New returns an empty Set. The configuration is validated first; errors
// are *ConfigError values naming the field.
func New(cfg Config, opts ...Option) (*Set, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	b, _ := Lookup(cfg.Policy) // checked by Validate
	s := &Set{
		build: b,
		clock: SystemClock,
		rand:  newRand(0, false),
		byID:  make(map[string]*EndpointState),
	}
	s.cfg.Store(&cfg)
	for _, o := range opts {
		o(s)
	}
	s.now.Store(s.clock.Now().UnixNano())
	s.snap.Store(&snapshot{err: ErrNoEndpoint})
	return s, nil
}

// Config returns the set's configuration with defaults filled in.
func (s *Set) Config() Config { return *s.cfg.Load() }

// SetConfig replaces the configuration (policy included) and rebuilds the
// snapshot. Live endpoint state is kept: outstanding counts, latency,
// ejections and breakers carry over. Errors are *ConfigError values, and
// leave the set unchanged.
func (s *Set) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	b, _ := Lookup(cfg.Policy)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg.Store(&cfg)
	s.build = b
	s.rebuildLocked(s.tick())
	return nil
}

// Update replaces the endpoint list. Endpoints are matched to existing
// state by ID. IDs must be unique and non-empty.
//
// An ejected endpoint whose Health turns to HealthHealthy from anything
// else (its active health checks pass again after failing or before
// their first result) is let back at once, with slow start, instead of
// waiting out its ejection; see EndpointState.liftEjection. An endpoint
// that stays HealthHealthy stays ejected: checks that passed all along
// do not contradict the failures that ejected it.
func (s *Set) Update(eps []Endpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Validate before changing anything. Existing endpoints are marked
	// with this update's generation (a second mark is a duplicate); only
	// new IDs need a scratch map, so an update costs map lookups for what
	// stayed and allocations only for what changed.
	s.gen++
	gen := s.gen
	defer func() {
		// Keep the scratch map only while it stays small: clearing costs
		// its capacity, and the first update fills it with every ID.
		if len(s.newIDs) > 64 {
			s.newIDs = nil
		} else {
			clear(s.newIDs)
		}
	}()
	if cap(s.found) < len(eps) {
		s.found = make([]*EndpointState, len(eps))
	}
	found := s.found[:len(eps)]
	defer clear(found)
	for i := range eps {
		id := eps[i].ID
		if id == "" {
			return fmt.Errorf("balance: endpoints[%d].ID: empty", i)
		}
		dup := false
		es := s.byID[id]
		found[i] = es
		if es != nil {
			dup = es.gen == gen
			es.gen = gen
		} else {
			if s.newIDs == nil {
				s.newIDs = make(map[string]struct{})
			}
			_, dup = s.newIDs[id]
			s.newIDs[id] = struct{}{}
		}
		if dup {
			return fmt.Errorf("balance: endpoints[%d].ID: duplicate %q", i, id)
		}
	}
	now := s.tick()
	for _, es := range s.order {
		if es.gen != gen {
			delete(s.byID, es.id)
			es.removed.Store(true)
			es.effWeight.Store(0)
		}
	}
	order := s.order[:0]
	if cap(order) < len(eps) {
		order = make([]*EndpointState, 0, len(eps))
	}
	for i := range eps {
		ep := &eps[i]
		es := found[i]
		old := (*Endpoint)(nil)
		if es == nil {
			es = &EndpointState{}
			es.set, es.id, es.gen = s, ep.ID, gen
			switch {
			case !ep.AddedAt.IsZero():
				es.rampStart = ep.AddedAt
			case s.initialSet:
				es.rampStart = now
			}
			// Not ramped again for becoming eligible the first time.
			es.wasEligible = true
			s.byID[ep.ID] = es
		} else {
			old = es.ep.Load()
			if ep.Health == HealthHealthy && old.Health != HealthHealthy {
				// Its active health checks pass again: an ejection (which
				// came before this transition) need not run its course.
				es.liftEjection(now)
			}
		}
		if old == nil || *old != *ep {
			cp := *ep
			es.ep.Store(&cp)
		}
		order = append(order, es)
	}
	clear(order[len(order):cap(order)]) // let removed endpoints go
	s.order, s.initialSet = order, true
	s.rebuildLocked(now)
	return nil
}

// Endpoints returns the current endpoints' states in Update order.
func (s *Set) Endpoints() []*EndpointState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*EndpointState(nil), s.order...)
}

// Panicking reports whether the current snapshot is in panic mode.
func (s *Set) Panicking() bool { return s.snap.Load().panic }

// Refresh rebuilds the snapshot now if a deadline (ejection end, breaker
// open time, slow-start step) has passed. Pick does this lazily; an owner
// with a ticker may call it to keep that work off the request path.
func (s *Set) Refresh() {
	s.tick()
	if sn := s.snap.Load(); sn.deadline != 0 && s.now.Load() >= sn.deadline {
		s.refresh()
	}
}

// tick reads the clock into s.now (never backwards).
func (s *Set) tick() time.Time {
	t := s.clock.Now()
	ns := t.UnixNano()
	for {
		old := s.now.Load()
		if ns <= old || s.now.CompareAndSwap(old, ns) {
			return t
		}
	}
}

// refresh rebuilds if nobody else is doing it; it never blocks.
func (s *Set) refresh() *snapshot {
	if s.mu.TryLock() {
		sn := s.snap.Load()
		if now := s.now.Load(); sn.deadline != 0 && now >= sn.deadline {
			s.rebuildLocked(time.Unix(0, now))
		}
		s.mu.Unlock()
	}
	return s.snap.Load()
}

// Selection is the result of a pick. Call Done exactly once when the
// request ends.
type Selection struct {
	// Endpoint is the chosen endpoint.
	Endpoint *EndpointState
	probe    bool
}

// Pick chooses an endpoint. It is lock-free and allocation-free for the
// built-in policies. When nothing can be picked it returns ErrNoEndpoint
// (the set is empty) or ErrNoHealthy (nothing can take traffic and panic
// mode is off); both are returned as is, so == and errors.Is both work.
func (s *Set) Pick(info PickInfo) (Selection, error) {
	sn := s.snap.Load()
	if sn.deadline != 0 {
		if sn.err != nil {
			// Nothing is picked, so no Done will move the time on.
			s.tick()
		}
		if s.now.Load() >= sn.deadline {
			sn = s.refresh()
		}
	}
	if sn.err != nil {
		return Selection{}, sn.err
	}
	const maxAttempts = 3
	for attempt := 0; attempt < maxAttempts; attempt++ {
		info.Attempt = attempt
		es, err := pickFrom(sn.picker, info)
		if err != nil {
			return Selection{}, err
		}
		if sel, ok := take(es, sn); ok {
			return sel, nil
		}
	}
	// The policy kept choosing endpoints that cannot admit (for example the
	// one half-open endpoint under least_conn): take the first that can.
	n := len(sn.eps)
	start := s.rand.IntN(n)
	for i := 0; i < n; i++ {
		j := start + i
		if j >= n {
			j -= n
		}
		if sel, ok := take(sn.eps[j], sn); ok {
			return sel, nil
		}
	}
	return Selection{}, ErrNoHealthy
}

// Take selects es outside the policy: a data plane's last resort for a
// retry, such as an ejected endpoint whose checks pass when every endpoint
// the policy offers was tried already. Done must follow, as after Pick.
func (s *Set) Take(es *EndpointState) Selection {
	es.outstanding.Add(1)
	return Selection{Endpoint: es}
}

// pickFrom calls the built-in policies directly, without an interface
// call, so that their picks inline into Set.Pick.
func pickFrom(p Picker, info PickInfo) (*EndpointState, error) {
	switch p := p.(type) {
	case *p2c:
		return p.pick(), nil
	case *leastConn:
		return p.pick(), nil
	case *roundRobin:
		return p.pick(), nil
	case *wrr:
		return p.pick(), nil
	case *random:
		return p.pick(), nil
	case *maglev:
		return p.pick(info), nil
	}
	return p.Pick(info)
}

func take(es *EndpointState, sn *snapshot) (Selection, bool) {
	if sn.panic {
		es.outstanding.Add(1)
		return Selection{Endpoint: es}, true
	}
	ok, probe := es.admit(sn.halfOpen)
	if !ok {
		return Selection{}, false
	}
	es.outstanding.Add(1)
	return Selection{Endpoint: es, probe: probe}, true
}

// Done reports how the request ended and how long it took. It releases the
// outstanding count and feeds the latency estimate, outlier detection and
// the breaker. Done on a zero Selection does nothing.
func (sel Selection) Done(o Outcome, latency time.Duration) {
	es := sel.Endpoint
	if es == nil {
		return
	}
	es.outstanding.Add(-1)
	if sel.probe {
		es.probes.Add(-1)
	}
	if o == Ignore {
		return
	}
	es.set.report(es, o, latency, sel.probe)
}

// report runs on the Done path: per-endpoint lock, the set's lock only
// when an ejection or breaker transition needs a rebuild.
func (s *Set) report(es *EndpointState, o Outcome, latency time.Duration, probe bool) {
	failed := o == Failure
	es.requests.Add(1)
	if failed {
		es.failures.Add(1)
	}
	now := s.tick()
	cfg := s.cfg.Load()
	var eject, rebuild bool
	es.mu.Lock()
	es.observe(now.UnixNano(), latency, failed, float64(cfg.LatencyDecay))
	if failed {
		es.consecFail++
	} else {
		es.consecFail = 0
	}
	st := es.status.Load()
	if b := &cfg.Breaker; b.FailureThreshold > 0 {
		switch {
		case st&stHalfOpen != 0 && probe:
			if failed {
				es.openUntil = now.Add(b.OpenTime)
				es.halfOpenPassed = 0
				es.status.Store(st&^stHalfOpen | stOpen)
				rebuild = true
			} else if es.halfOpenPassed++; es.halfOpenPassed >= b.HalfOpenRequests {
				es.halfOpenPassed = 0
				es.status.Store(st &^ stHalfOpen)
			}
		case st&(stOpen|stHalfOpen) == 0 && failed && es.consecFail >= b.FailureThreshold:
			es.openUntil = now.Add(b.OpenTime)
			es.status.Store(st | stOpen)
			rebuild = true
		}
	}
	if n := cfg.Outlier.ConsecutiveFailures; n > 0 && failed && es.consecFail >= n && es.status.Load()&stEjected == 0 {
		eject = true
	}
	es.mu.Unlock()
	if !eject && !rebuild {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if es.removed.Load() {
		return
	}
	if eject && s.ejectLocked(es, now) {
		rebuild = true
	}
	if rebuild {
		// Not when the ejection was refused by the cap: failures beyond
		// it would otherwise rebuild on every Done.
		s.rebuildLocked(now)
	}
}

// ejectLocked ejects es unless that would exceed the ejected share (and
// no ejected endpoint can make room: swapEjectionLocked), and reports
// whether the snapshot must be rebuilt. Caller holds s.mu.
func (s *Set) ejectLocked(es *EndpointState, now time.Time) bool {
	o := &s.cfg.Load().Outlier
	if o.ConsecutiveFailures == 0 {
		return false // turned off since the failures were counted
	}
	ejected := 0
	for _, e := range s.order {
		if e.status.Load()&stEjected != 0 {
			ejected++
		}
	}
	limit := len(s.order) * o.MaxEjectedPercent / 100
	if limit < 1 {
		limit = 1
	}
	swapped := false
	if ejected >= limit {
		if swapped = s.swapEjectionLocked(es, now); !swapped {
			return false
		}
	}
	es.mu.Lock()
	defer es.mu.Unlock()
	if es.status.Load()&stEjected != 0 || es.consecFail < o.ConsecutiveFailures {
		return swapped // a success got in first, or someone else ejected it
	}
	if !es.returnedAt.IsZero() && now.Sub(es.returnedAt) > o.MaxEjection {
		es.ejections = 0 // behaved for long enough: back-off starts over
	}
	es.ejections++
	d := o.BaseEjection
	for i := 1; i < es.ejections && d < o.MaxEjection; i++ {
		d *= 2
	}
	d = min(d, o.MaxEjection)
	es.ejectedUntil = now.Add(d)
	es.consecFail = 0
	es.status.Or(stEjected)
	return true
}

// swapEjectionLocked makes room under the ejected share for es, which is
// failing now, by letting back an ejected endpoint whose health checks do
// not fail: its ejection rests on failures in the past, es's on failures
// just seen (a backend ejected by a burst of timeouts, then another one
// hanging: without the swap every request would go to the hung one). It
// reports whether it let one back. Caller holds s.mu.
func (s *Set) swapEjectionLocked(es *EndpointState, now time.Time) bool {
	for _, e := range s.order {
		if e == es || e.status.Load()&stEjected == 0 || e.ep.Load().Health == HealthUnhealthy {
			continue
		}
		if e.liftEjection(now) {
			return true
		}
	}
	return false
}

// liftEjection ends e's ejection at now because its active health checks
// pass again, as Envoy does by default (successful_active_health_check_
// uneject_host). As in Envoy the back-off multiplier is kept: an endpoint
// that is ejected again soon is ejected for twice as long, and the back-off
// starts over only once it has behaved for MaxEjection since now. The
// consecutive-failure count starts from zero, so failures of requests
// that were in flight during the ejection do not eject it again at once.
// The caller holds e.set.mu and rebuilds the snapshot afterwards, which
// starts slow start for it. It reports whether e was ejected.
func (e *EndpointState) liftEjection(now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.status.Load()&stEjected == 0 {
		return false
	}
	e.status.And(^stEjected)
	e.ejectedUntil = now
	e.returnedAt = now
	e.consecFail = 0
	return true
}

// rampSteps is how many steps slow start takes from the minimum to full
// weight; the snapshot is rebuilt at each step.
const rampSteps = 16

// rebuildLocked expires ejections and open breakers whose time has come,
// computes effective weights and panic mode, and publishes a new snapshot.
// Caller holds s.mu.
func (s *Set) rebuildLocked(now time.Time) {
	cfg := s.cfg.Load()
	var deadline time.Time
	soonest := func(t time.Time) {
		if deadline.IsZero() || t.Before(deadline) {
			deadline = t
		}
	}
	n := len(s.order)
	if cap(s.eligible) < n {
		s.eligible = make([]bool, n)
	}
	eligible := s.eligible[:n]
	weights := make([]float64, n)
	nElig := 0
	for i, es := range s.order {
		es.mu.Lock()
		st := es.status.Load()
		if st&stEjected != 0 {
			if !now.Before(es.ejectedUntil) {
				st &^= stEjected
				es.returnedAt = now
			} else {
				soonest(es.ejectedUntil)
			}
		}
		if st&stOpen != 0 {
			if !now.Before(es.openUntil) {
				st = st&^stOpen | stHalfOpen
				es.probes.Store(0)
				es.halfOpenPassed = 0
			} else {
				soonest(es.openUntil)
			}
		}
		es.status.Store(st)
		es.mu.Unlock()

		el := es.ep.Load().Health != HealthUnhealthy && st&(stEjected|stOpen) == 0
		if el && !es.wasEligible {
			es.rampStart = now // back from unhealthy or ejected: ramp again
		}
		es.wasEligible = el
		eligible[i] = el
		w := es.ep.Load().weight()
		if ss := cfg.SlowStart; ss > 0 && !es.rampStart.IsZero() {
			if el := now.Sub(es.rampStart); el < ss {
				k := int(int64(el)*rampSteps/int64(ss)) + 1
				kmin := (cfg.SlowStartMinPercent*rampSteps + 99) / 100
				k = max(k, kmin, 1)
				if k < rampSteps {
					w = w * float64(k) / rampSteps
					soonest(es.rampStart.Add(time.Duration(int64(ss) * int64(k) / rampSteps)))
				}
			}
		}
		weights[i] = w
		if el {
			nElig++
			es.effWeight.Store(math.Float64bits(w))
		} else {
			es.effWeight.Store(0)
		}
	}
	sn := &snapshot{halfOpen: int32(cfg.Breaker.HalfOpenRequests)}
	if !deadline.IsZero() {
		sn.deadline = deadline.UnixNano()
	}
	p := cfg.PanicThresholdPercent
	switch {
	case n == 0:
		sn.err = ErrNoEndpoint
	case p > 0 && nElig*100 < p*n:
		sn.panic = true
		sn.eps = append([]*EndpointState(nil), s.order...)
	case nElig == 0:
		sn.err = ErrNoHealthy
	default:
		sn.eps = make([]*EndpointState, 0, nElig)
		w := weights[:0]
		for i, es := range s.order {
			if eligible[i] {
				sn.eps = append(sn.eps, es)
				w = append(w, weights[i])
			}
		}
		weights = w
	}
	if sn.err == nil {
		sn.picker = s.build(BuildInfo{
			Endpoints: sn.eps,
			Weights:   weights,
			Panic:     sn.panic,
			Config:    cfg,
			Rand:      s.rand,
			Clock:     coarseClock{&s.now},
			now:       &s.now,
		})
	}
	s.snap.Store(sn)
}

// coarseClock is the clock pickers see: the set's last clock reading, for
// one atomic load.
type coarseClock struct{ ns *atomic.Int64 }

func (c coarseClock) Now() time.Time { return time.Unix(0, c.ns.Load()) }
