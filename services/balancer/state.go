package balancer

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/switchboard-net/switchboard/pkg/balance"
	"github.com/switchboard-net/switchboard/pkg/servicename"
	"github.com/switchboard-net/switchboard/pkg/watch"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// validService applies the registry's service-name rule.
func validService(field, name string) error {
	if err := servicename.Validate(name); err != nil {
		return &fieldError{field, err}
	}
	return nil
}

// svc is one service's balancing state.
type svc struct {
	name string
	set  *balance.Set

	mu        sync.Mutex
	instances map[string]*registryv1.Instance // by id
	index     uint64
	healthy   int    // instances the registry says are not critical
	version   uint64 // bumped on every change watchers should see
	shape     []endpointShape
}

// endpointShape is what watchers see of an endpoint that changes over time.
type endpointShape struct {
	id      string
	weight  float64
	ejected bool
}

// Balancer is the control plane's state: one svc per service name.
type Balancer struct {
	log      *slog.Logger
	policies *policyStore
	met      *metrics

	mu       sync.RWMutex
	services map[string]*svc
	changed  chan struct{} // closed and replaced on any change
	stale    bool          // the registry is unreachable
	synced   bool          // a registry snapshot has arrived

	reg        policyRegistry                // where policies are stored (nil: no registry)
	polSynced  bool                          // the registry's policy set has arrived
	polStale   bool                          // the policy watch is lost
	polApplied map[string]*balancerv1.Policy // the set in force, by service
}

func newBalancer(log *slog.Logger, policies *policyStore, met *metrics) *Balancer {
	return &Balancer{
		log:      log,
		policies: policies,
		met:      met,
		services: map[string]*svc{},
		changed:  make(chan struct{}),
		stale:    true,
	}
}

// notifyLocked wakes every watcher; b.mu must be held for writing.
func (b *Balancer) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *Balancer) notify() {
	b.mu.Lock()
	b.notifyLocked()
	b.mu.Unlock()
}

// ready is the readiness check: a registry snapshot has arrived and the
// registry is reachable.
func (b *Balancer) ready(context.Context) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if !b.synced {
		return errors.New("no registry snapshot yet")
	}
	if b.stale {
		return errors.New("registry unreachable; serving the last snapshot")
	}
	return nil
}

// hasSnapshot reports whether a registry snapshot has arrived since start.
func (b *Balancer) hasSnapshot() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.synced
}

// lookup returns a service's state, or nil.
func (b *Balancer) lookup(name string) *svc {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.services[name]
}

// getOrCreateLocked returns a service's state, creating it with its stored
// policy; b.mu must be held for writing.
func (b *Balancer) getOrCreateLocked(name string) *svc {
	if s := b.services[name]; s != nil {
		return s
	}
	cfg, err := toConfig(b.storedPolicyLocked(name))
	if err != nil {
		b.log.Warn("stored policy is invalid; using the default", "service", name, "err", err)
		cfg = balance.DefaultConfig()
	}
	set, err := balance.New(cfg)
	if err != nil { // the default config is valid
		panic(err)
	}
	s := &svc{name: name, set: set, instances: map[string]*registryv1.Instance{}}
	b.services[name] = s
	return s
}

// followRegistry applies the registry's Watch snapshots until ctx ends,
// reconnecting with back-off. While the registry is unreachable the last
// endpoint sets stay in force and watchers are told they are stale.
// pkg/watch logs when the watch goes stale and when it resumes.
func (b *Balancer) followRegistry(ctx context.Context, reg registryv1.RegistryClient) error {
	watch.Follow(ctx, watch.Instances(reg.Watch, &registryv1.WatchRequest{IncludeUnhealthy: true}, b.apply), func(error, time.Duration) {
		b.setStale(true)
	}, watch.WithLogger(b.log, "registry"))
	return nil
}

func (b *Balancer) setStale(stale bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stale != stale {
		b.stale = stale
		b.met.stale.Set(boolFloat(stale))
		b.notifyLocked()
	}
}

// apply installs one registry snapshot of every service.
func (b *Balancer) apply(resp *registryv1.WatchResponse) {
	byService := map[string][]*registryv1.Instance{}
	for _, in := range resp.Instances {
		byService[in.Service] = append(byService[in.Service], in)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	changed := false
	for name, list := range byService {
		if b.getOrCreateLocked(name).update(list, resp.Index, b.log, b.met) {
			changed = true
		}
	}
	for name, s := range b.services {
		if _, ok := byService[name]; !ok && s.update(nil, resp.Index, b.log, b.met) {
			changed = true
		}
	}
	if b.stale != resp.Stale {
		b.stale = resp.Stale
		b.met.stale.Set(boolFloat(resp.Stale))
		changed = true
	}
	if !b.synced {
		b.synced = true
		changed = true
	}
	if changed {
		b.notifyLocked()
	}
}

// update replaces the service's instances; it reports whether anything
// changed. An ejected instance whose health turns to passing is let back
// by s.set.Update (pkg/balance lifts the ejection, with slow start); the
// new shape goes to watchers with the rest of the change.
func (s *svc) update(list []*registryv1.Instance, index uint64, log *slog.Logger, met *metrics) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	same := len(list) == len(s.instances)
	if same {
		for _, in := range list {
			if old, ok := s.instances[in.Id]; !ok || !sameInstance(old, in) {
				same = false
				break
			}
		}
	}
	if same {
		return false
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Id < list[j].Id })
	eps := make([]balance.Endpoint, 0, len(list))
	instances := make(map[string]*registryv1.Instance, len(list))
	for _, in := range list {
		instances[in.Id] = in
		eps = append(eps, balance.Endpoint{
			ID:     in.Id,
			Addr:   net.JoinHostPort(in.Address, strconv.Itoa(int(in.Port))),
			Weight: in.Weight,
			Zone:   in.Zone,
			Health: healthOf(in.Health),
		})
	}
	var ejected map[string]bool // before the update, to log the lifts
	for _, es := range s.set.Endpoints() {
		if es.Ejected() {
			if ejected == nil {
				ejected = map[string]bool{}
			}
			ejected[es.ID()] = true
		}
	}
	if err := s.set.Update(eps); err != nil {
		// The registry guarantees unique, non-empty ids.
		log.Error("endpoint update refused", "service", s.name, "err", err)
		return false
	}
	if len(ejected) > 0 {
		for _, es := range s.set.Endpoints() {
			old := s.instances[es.ID()] // s.instances is still the previous set
			if ejected[es.ID()] && !es.Ejected() && old != nil && healthOf(old.Health) != balance.HealthHealthy &&
				es.Endpoint().Health == balance.HealthHealthy {
				met.lifted.Inc()
				log.Info("ejection lifted: health checks pass", "service", s.name, "endpoint", es.ID())
			}
		}
	}
	s.instances = instances
	s.healthy = 0
	for _, in := range list {
		if healthOf(in.Health) != balance.HealthUnhealthy {
			s.healthy++
		}
	}
	s.index = index
	s.version++
	s.shape = shapeOf(s.set)
	return true
}

// sameInstance compares what matters to balancing, ignoring timestamps.
func sameInstance(a, b *registryv1.Instance) bool {
	a2, b2 := proto.Clone(a).(*registryv1.Instance), proto.Clone(b).(*registryv1.Instance)
	a2.UpdatedAt, b2.UpdatedAt = nil, nil
	a2.HealthOutput, b2.HealthOutput = "", ""
	return proto.Equal(a2, b2)
}

func healthOf(h registryv1.HealthStatus) balance.Health {
	switch h {
	case registryv1.HealthStatus_HEALTH_STATUS_PASSING, registryv1.HealthStatus_HEALTH_STATUS_WARNING:
		return balance.HealthHealthy
	case registryv1.HealthStatus_HEALTH_STATUS_CRITICAL:
		return balance.HealthUnhealthy
	}
	return balance.HealthUnknown
}

func shapeOf(set *balance.Set) []endpointShape {
	eps := set.Endpoints()
	out := make([]endpointShape, len(eps))
	for i, es := range eps {
		out[i] = endpointShape{id: es.ID(), weight: es.EffectiveWeight(), ejected: es.Ejected()}
	}
	return out
}

func sameShape(a, b []endpointShape) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// reshape re-reads effective weights and ejections after reports or time
// passing; it reports whether watchers must be told.
func (s *svc) reshape() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	shape := shapeOf(s.set)
	if sameShape(shape, s.shape) {
		return false
	}
	s.shape = shape
	s.version++
	return true
}

// refresh applies time-based transitions (ejection ends, breaker open time,
// slow-start steps) and pushes what changed.
func (b *Balancer) refresh() {
	b.mu.RLock()
	list := make([]*svc, 0, len(b.services))
	for _, s := range b.services {
		list = append(list, s)
	}
	b.mu.RUnlock()
	changed := false
	for _, s := range list {
		s.set.Refresh()
		if s.reshape() {
			changed = true
		}
	}
	if changed {
		b.notify()
	}
}

// snapshot is a service's WatchEndpoints message.
func (b *Balancer) snapshot(s *svc, stale bool) *balancerv1.WatchEndpointsResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &balancerv1.WatchEndpointsResponse{
		Service: s.name,
		Policy:  fromConfig(s.set.Config()),
		Index:   s.index,
		Stale:   stale,
	}
	for _, es := range s.set.Endpoints() {
		if in := s.instances[es.ID()]; in != nil {
			resp.Endpoints = append(resp.Endpoints, endpointOf(in, es))
		}
	}
	return resp
}

func endpointOf(in *registryv1.Instance, es *balance.EndpointState) *balancerv1.Endpoint {
	w := in.Weight
	if w == 0 {
		w = 1
	}
	return &balancerv1.Endpoint{
		Id:              in.Id,
		Address:         in.Address,
		Port:            in.Port,
		Weight:          w,
		EffectiveWeight: es.EffectiveWeight(),
		Healthy:         healthOf(in.Health) != balance.HealthUnhealthy,
		Ejected:         es.Ejected(),
		Zone:            in.Zone,
		Tags:            in.Tags,
		Metadata:        in.Metadata,
	}
}

// policy returns a service's policy (the default when none was set).
func (b *Balancer) policy(name string) *balancerv1.Policy {
	if s := b.lookup(name); s != nil {
		return fromConfig(s.set.Config())
	}
	if p := b.storedPolicy(name); p != nil {
		return p
	}
	return fromConfig(balance.DefaultConfig())
}

func boolFloat(v bool) float64 {
	if v {
		return 1
	}
	return 0
}
