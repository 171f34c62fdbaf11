package edge

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-net/switchboard/pkg/balance"
	"github.com/switchboard-net/switchboard/pkg/netx"
)

// upstreams owns every service the edge sends traffic to: its balance.Set,
// the edge-side state of each backend (connection pool, counters) and the
// operator's overrides (disabled, weight), which survive endpoint updates.
type upstreams struct {
	dialer      *netx.Dialer
	maxIdle     int
	idleTimeout time.Duration
	met         *metrics

	mu        sync.Mutex
	fixed     map[string]bool // services defined by the config file
	svcs      map[string]*upService
	overrides map[backendKey]override
}

type backendKey struct{ svc, id string }

type override struct {
	disabled bool
	weight   uint32 // 0 = none
}

// upService is one service's endpoints.
type upService struct {
	name   string
	static bool
	set    atomic.Pointer[balance.Set]
	hashOn atomic.Pointer[balance.HashOn]
	// backends by endpoint ID, copy-on-write.
	backends atomic.Pointer[map[string]*backend]

	// guarded by upstreams.mu
	cfg  balance.Config
	raw  []balance.Endpoint
	tags map[string][]string // endpoint ID -> registry tags
}

// backend is one endpoint as the edge sees it: pooled connections and
// counters. Its balance state lives in the service's Set.
type backend struct {
	svc, id, addr string
	idle          chan *upConn
	active        atomic.Int64
	total         atomic.Uint64
	failures      atomic.Uint64
	closed        atomic.Bool
	// left: out of the endpoint set (gone, unhealthy, ejected by the
	// balancer, disabled); written under fmu.
	left atomic.Bool

	fmu     sync.Mutex
	flights *flight // tries that move elsewhere when the backend leaves (try.go)

	// Its series (metrics.go: backendSeries), resolved when it is made.
	mReq, mFail, mSent, mRecv prometheus.Counter
	mLat                      prometheus.Observer
}

// upConn is a pooled upstream HTTP/1.1 connection with its buffers.
type upConn struct {
	c      net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	b      *backend
	dl     deadlines
	idleAt time.Time
	probe  netx.IdleProbe // checked before each reuse (get)
}

func newUpstreams(d *netx.Dialer, maxIdle int, idle time.Duration, met *metrics) *upstreams {
	return &upstreams{dialer: d, maxIdle: maxIdle, idleTimeout: idle, met: met,
		fixed: map[string]bool{}, svcs: map[string]*upService{}, overrides: map[backendKey]override{}}
}

// service returns the named service, creating an empty one.
func (u *upstreams) service(name string) *upService {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.serviceLocked(name)
}

func (u *upstreams) serviceLocked(name string) *upService {
	s := u.svcs[name]
	if s == nil {
		s = &upService{name: name, static: strings.HasPrefix(name, "static:"), cfg: balance.DefaultConfig(), tags: map[string][]string{}}
		set, _ := balance.New(s.cfg)
		s.set.Store(set)
		h, _ := balance.ParseHashOn(s.cfg.HashOn)
		s.hashOn.Store(&h)
		m := map[string]*backend{}
		s.backends.Store(&m)
		u.svcs[name] = s
	}
	return s
}

// lookup returns the named service or nil.
func (u *upstreams) lookup(name string) *upService {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.svcs[name]
}

// setStatic gives a static service its plain addresses.
func (u *upstreams) setStatic(name, policy string, addrs []string) error {
	cfg := balance.DefaultConfig()
	if policy != "" {
		cfg.Policy = policy
	}
	eps := make([]balance.Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = balance.Endpoint{ID: a, Addr: a}
	}
	return u.update(name, cfg, eps, nil, true)
}

// update replaces a service's configuration and endpoints.
func (u *upstreams) update(name string, cfg balance.Config, eps []balance.Endpoint, tags map[string][]string, static bool) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !static && u.fixed[name] {
		return fmt.Errorf("service %s: defined in the config file; the balancer's set is ignored", name)
	}
	s := u.serviceLocked(name)
	if static {
		u.fixed[name] = true
		if !s.static { // read unlocked by requests: written only while unshared (reload.go)
			s.static = true
		}
	}
	set := s.set.Load()
	if cfg != s.cfg {
		var err error
		if set, err = balance.New(cfg); err != nil {
			return fmt.Errorf("service %s: %w", name, err)
		}
		h, err := balance.ParseHashOn(cfg.HashOn)
		if err != nil {
			return fmt.Errorf("service %s: %w", name, err)
		}
		s.hashOn.Store(&h)
	}
	s.raw = eps
	if tags == nil {
		tags = map[string][]string{}
	}
	s.tags = tags
	if err := u.applyToLocked(s, set); err != nil {
		return err
	}
	s.cfg = cfg
	return nil
}

// applyLocked feeds the set with the raw endpoints plus overrides and
// refreshes the backend map.
func (u *upstreams) applyLocked(s *upService) error { return u.applyToLocked(s, s.set.Load()) }

// applyToLocked is applyLocked with the set to feed: the service's, or a
// new one (a new policy), published only once it holds the endpoints, so
// requests never see an empty set in between. Every endpoint a set can
// hand out has its backend in the map: new backends go in before the set
// learns their endpoints, and old ones leave after it forgets theirs.
func (u *upstreams) applyToLocked(s *upService, set *balance.Set) error {
	eps := make([]balance.Endpoint, 0, len(s.raw))
	for _, ep := range s.raw {
		if o, ok := u.overrides[backendKey{s.name, ep.ID}]; ok {
			if o.disabled {
				// Disabled endpoints leave the set, so not even panic
				// mode routes to them.
				continue
			}
			if o.weight > 0 {
				ep.Weight = o.weight
			}
		}
		eps = append(eps, ep)
	}
	old := *s.backends.Load()
	next := make(map[string]*backend, len(s.raw))
	both := maps.Clone(old)
	for _, ep := range s.raw {
		if b := old[ep.ID]; b != nil && b.addr == ep.Addr {
			next[ep.ID] = b
			continue
		}
		next[ep.ID] = u.newBackend(s.name, ep.ID, ep.Addr)
		both[ep.ID] = next[ep.ID]
	}
	s.backends.Store(&both)
	if err := set.Update(eps); err != nil {
		s.backends.Store(&old)
		for id, b := range next {
			if old[id] != b {
				b.close()
				if old[id] == nil { // else the old backend still counts in these series
					u.met.forgetBackend(b)
				}
			}
		}
		return fmt.Errorf("service %s: %w", s.name, err)
	}
	if prev := s.set.Load(); set != prev {
		s.set.Store(set)
		// Requests that loaded the old set just before still pick from
		// it: give it the same endpoints, whose backends are in the map.
		prev.Update(eps)
	}
	s.backends.Store(&next)
	for id, b := range old {
		if next[id] != b {
			b.close()
			if !s.static {
				// Gone from the balancer's set (deregistered, perhaps
				// dying): its tries move elsewhere. One the config file
				// dropped finishes what it has (a reload, reload.go).
				b.leave()
			}
			if next[id] == nil { // else its successor (a new address) keeps the series
				u.met.forgetBackend(b)
			}
		}
	}
	// A backend that leaves the set (disabled, unhealthy or ejected by
	// the balancer) has its tries moved elsewhere (try.go).
	in := make(map[string]bool, len(eps))
	for _, ep := range eps {
		in[ep.ID] = ep.Health != balance.HealthUnhealthy
	}
	for id, b := range next {
		if in[id] {
			b.rejoin()
		} else {
			b.leave()
		}
	}
	return nil
}

func (u *upstreams) newBackend(svc, id, addr string) *backend {
	b := &backend{svc: svc, id: id, addr: addr, idle: make(chan *upConn, u.maxIdle)}
	u.met.backendSeries(b)
	return b
}

// setOverride changes an operator override and reapplies it.
func (u *upstreams) setOverride(svc, id string, disabled *bool, weight *uint32) (BackendInfo, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.svcs[svc]
	if s == nil {
		return BackendInfo{}, fmt.Errorf("%w: service %q", errNotFound, svc)
	}
	found := false
	for _, ep := range s.raw {
		if ep.ID == id {
			found = true
		}
	}
	if !found {
		return BackendInfo{}, fmt.Errorf("%w: backend %q of service %q", errNotFound, id, svc)
	}
	k := backendKey{svc, id}
	o := u.overrides[k]
	if disabled != nil {
		o.disabled = *disabled
	}
	if weight != nil {
		o.weight = *weight
	}
	if o == (override{}) {
		delete(u.overrides, k)
	} else {
		u.overrides[k] = o
	}
	if err := u.applyLocked(s); err != nil {
		return BackendInfo{}, err
	}
	for _, bi := range u.backendsLocked(svc) {
		if bi.ID == id {
			return bi, nil
		}
	}
	return BackendInfo{}, fmt.Errorf("%w: backend %q", errNotFound, id)
}

// BackendInfo is one backend's state for the runtime API.
type BackendInfo struct {
	Service, ID, Addr string
	Weight            float64
	Disabled, Healthy bool
	Active            int64
	Total, Failures   uint64
	Ejected           bool
	Breaker           string
}

func (u *upstreams) backends(svc string) []BackendInfo {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.backendsLocked(svc)
}

func (u *upstreams) backendsLocked(svc string) []BackendInfo {
	var out []BackendInfo
	names := make([]string, 0, len(u.svcs))
	for n := range u.svcs {
		if svc == "" || n == svc {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		s := u.svcs[n]
		bs := *s.backends.Load()
		states := map[string]*balance.EndpointState{}
		for _, es := range s.set.Load().Endpoints() {
			states[es.ID()] = es
		}
		for _, ep := range s.raw {
			bi := BackendInfo{Service: n, ID: ep.ID, Addr: ep.Addr, Breaker: "closed",
				Disabled: u.overrides[backendKey{n, ep.ID}].disabled}
			if es := states[ep.ID]; es != nil {
				bi.Weight = es.EffectiveWeight()
				bi.Ejected = es.Ejected()
				bi.Breaker = es.Breaker().String()
				bi.Healthy = ep.Health != balance.HealthUnhealthy && !es.Ejected() && es.Breaker() != balance.BreakerOpen
			}
			if b := bs[ep.ID]; b != nil {
				bi.Active, bi.Total, bi.Failures = b.active.Load(), b.total.Load(), b.failures.Load()
			}
			out = append(out, bi)
		}
	}
	return out
}

// refreshAll rebuilds snapshots whose deadlines passed (ejections ending).
func (u *upstreams) refreshAll() {
	u.mu.Lock()
	sets := make([]*balance.Set, 0, len(u.svcs))
	for _, s := range u.svcs {
		sets = append(sets, s.set.Load())
	}
	u.mu.Unlock()
	for _, s := range sets {
		s.Refresh()
	}
}

func (u *upstreams) closeAll() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, s := range u.svcs {
		for _, b := range *s.backends.Load() {
			b.close()
		}
	}
}

// backendFor returns the edge-side backend of a picked endpoint.
func (s *upService) backendFor(es *balance.EndpointState) *backend {
	return (*s.backends.Load())[es.ID()]
}

// get returns a pooled connection or dials one. An idle connection is
// reused only if it is young enough and its socket shows neither the
// backend's close nor bytes nobody asked for (a late or unsolicited
// response, which would otherwise be read as the answer to the next
// request); others are closed.
func (b *backend) get(ctx context.Context, u *upstreams) (*upConn, error) {
	for {
		select {
		case uc := <-b.idle:
			if time.Since(uc.idleAt) > u.idleTimeout || !uc.probe.Reusable() {
				uc.c.Close()
				continue
			}
			return uc, nil
		default:
		}
		break
	}
	c, err := u.dialer.DialContext(ctx, "tcp", b.addr)
	if err != nil {
		return nil, err
	}
	uc := &upConn{c: c, br: bufio.NewReaderSize(&countReader{c, b.mRecv}, 16<<10), bw: bufio.NewWriterSize(&countWriter{c, b.mSent}, 8<<10), b: b}
	uc.dl.reset(c)
	uc.probe.Init(c)
	return uc, nil
}

// put returns a connection for reuse, or closes it when the pool is full.
func (b *backend) put(uc *upConn) {
	if b.closed.Load() {
		uc.c.Close()
		return
	}
	uc.idleAt = time.Now()
	select {
	case b.idle <- uc:
	default:
		uc.c.Close()
	}
}

func (b *backend) close() {
	b.closed.Store(true)
	for {
		select {
		case uc := <-b.idle:
			uc.c.Close()
		default:
			return
		}
	}
}
