// Package consulstore keeps the registry's catalog in Consul.
//
// Instances are agent service registrations (service ID "<service>:<id>")
// that each carry one TTL check, "service:<service>:<id>": Heartbeat and
// SetHealth update it, so Consul itself turns a TTL instance critical when
// its heartbeats stop. Instances without a TTL check get a TTL check with a
// TTL of ten years, which only SetHealth changes. The registry's own fields
// (instance id, zone, check spec, registration time) travel in service
// metadata under the reserved "switchboard-" prefix. DNS records live in
// the KV store under a prefix.
//
// The catalog snapshot is fed by Consul blocking queries: one on the service
// list, one per service on its health, one on the record prefix — shared by
// every watcher of the registry. When Consul is unreachable, writes fail
// with ErrUnavailable within the call timeout and the snapshot is marked
// stale; when it returns, the store re-registers every instance and record
// that it holds (a dev agent, or a new agent, has forgotten them) and
// publishes a fresh snapshot once they are back.
//
// What the store restores is a mirror of Consul, not a memory of its own
// calls: every instance registered with the store's agent (its node) and
// every record under the prefix, as last seen while Consul was up. So a
// registry that restarted restores what the registry before it registered,
// and an instance another registry deregistered is not brought back.
package consulstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
)

// DefaultPrefix is the default KV prefix of the DNS records.
const DefaultPrefix = "switchboard/registry/"

// Metadata keys the store uses for its own fields.
const (
	metaID      = "switchboard-id"
	metaZone    = "switchboard-zone"
	metaCheck   = "switchboard-check"
	metaUpdated = "switchboard-updated"
)

// noExpiry is the TTL of the check of an instance without a TTL check.
const noExpiry = 10 * 365 * 24 * time.Hour

// Options configure the store.
type Options struct {
	// Address of Consul's HTTP API ("" = CONSUL_HTTP_ADDR, else
	// 127.0.0.1:8500). Token, datacenter and TLS come from the standard
	// CONSUL_HTTP_* variables.
	Address string
	// Datacenter to use ("" = the agent's).
	Datacenter string
	// Prefix of the records in the KV store (DefaultPrefix when empty).
	Prefix string
	// Wait is the longest wait of a blocking query (5m when zero).
	Wait time.Duration
	// Timeout bounds each write and read that is not a blocking query (1s
	// when zero).
	Timeout time.Duration
	// MinInterval is the least time between two blocking queries of one
	// loop (100ms when zero): changes that come faster are coalesced, which
	// bounds the cost of following a busy service. This store's own writes
	// show at once regardless.
	MinInterval time.Duration
	// PendingTTL bounds how long a write of this store shows in the
	// snapshot before Consul's catalog does (5s when zero).
	PendingTTL time.Duration
	// RecoveryWait bounds how long, after Consul returns, the store keeps
	// the snapshot stale while it waits to see its re-registrations (5s
	// when zero).
	RecoveryWait time.Duration
}

// Store is the Consul store.
type Store struct {
	c      *api.Client
	o      Options
	hub    *catalog.Hub
	cancel context.CancelFunc
	wg     sync.WaitGroup

	restoreMu sync.Mutex // one restore at a time

	mu         sync.Mutex
	owned      map[string]*registryv1.Instance   // to restore: the agent's instances, by service ID
	ownedRecs  map[string]*registryv1.Record     // to restore: the records, by key
	node       string                            // the agent's node name, once known
	pending    map[string]map[string]*pending    // by service, id: our writes Consul has not shown yet
	services   map[string][]*registryv1.Instance // as Consul last reported
	serviceIdx map[string]uint64                 // Consul's index of each service
	records    []*registryv1.Record
	recordsIdx uint64
	loops      map[string]context.CancelFunc // per-service health queries
	down       bool                          // a query failed; not yet recovered
	ready      bool                          // the first full load is published
	waiting    map[string]bool               // services whose first load is due
	catLoaded  bool                          // the service list was read once
	recLoaded  bool                          // the records were read once
	recovering time.Time                     // zero, or when the recovery gives up waiting
	index      uint64                        // highest Consul index seen
}

// Open connects to Consul and starts the blocking queries. It does not fail
// when Consul is down: the store starts stale and catches up.
func Open(_ context.Context, o Options) (*Store, error) {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(o.Prefix, "/") {
		o.Prefix += "/"
	}
	if o.Wait <= 0 {
		o.Wait = 5 * time.Minute
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.MinInterval <= 0 {
		o.MinInterval = 100 * time.Millisecond
	}
	if o.PendingTTL <= 0 {
		o.PendingTTL = 5 * time.Second
	}
	if o.RecoveryWait <= 0 {
		o.RecoveryWait = 5 * time.Second
	}
	cfg := api.DefaultConfig()
	if o.Address != "" {
		cfg.Address = o.Address
	}
	if o.Datacenter != "" {
		cfg.Datacenter = o.Datacenter
	}
	if cfg.Transport != nil {
		// Many concurrent writes plus one blocking query per service.
		cfg.Transport.MaxIdleConnsPerHost = 256
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul %s: %w", cfg.Address, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		c: c, o: o, hub: catalog.NewHub(1), cancel: cancel,
		owned: map[string]*registryv1.Instance{}, ownedRecs: map[string]*registryv1.Record{},
		pending: map[string]map[string]*pending{}, services: map[string][]*registryv1.Instance{}, serviceIdx: map[string]uint64{}, loops: map[string]context.CancelFunc{},
	}
	// Stale until the first full load: a watcher connecting now must not
	// take an empty catalog for the truth.
	s.hub.Update(func(u *catalog.Update) { u.SetStale(true) })
	s.wg.Add(2)
	go s.catalogLoop(ctx)
	go s.recordsLoop(ctx)
	return s, nil
}

// Snapshot returns the current catalog.
func (s *Store) Snapshot() *catalog.Snapshot { return s.hub.Snapshot() }

// Close stops every blocking query. Registrations stay in Consul.
func (s *Store) Close() error {
	s.cancel()
	s.wg.Wait()
	return nil
}

// Ping asks Consul for its leader.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	leader, err := s.c.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return classify("ping", err)
	}
	if leader == "" {
		return fmt.Errorf("consul has no leader: %w", catalog.ErrUnavailable)
	}
	return nil
}

// classify wraps a Consul client error.
func classify(op string, err error) error {
	var se api.StatusError
	if errors.As(err, &se) {
		switch {
		case se.Code == http.StatusNotFound || strings.Contains(se.Body, "does not have associated TTL") || strings.Contains(se.Body, "Unknown check"):
			return fmt.Errorf("consul %s: %w: %s", op, catalog.ErrNotFound, se.Body)
		case se.Code == http.StatusBadRequest:
			return &catalog.FieldError{Field: "instance", Reason: "rejected by consul: " + strings.TrimSpace(se.Body)}
		case se.Code == http.StatusForbidden:
			return fmt.Errorf("consul %s: permission denied (check CONSUL_HTTP_TOKEN): %w: %s", op, catalog.ErrUnavailable, se.Body)
		}
	}
	return fmt.Errorf("consul %s: %w: %w", op, catalog.ErrUnavailable, err)
}

func serviceID(service, id string) string { return service + ":" + id }
func checkID(service, id string) string   { return "service:" + serviceID(service, id) }

func consulStatus(st registryv1.HealthStatus) string {
	switch st {
	case registryv1.HealthStatus_HEALTH_STATUS_WARNING:
		return api.HealthWarning
	case registryv1.HealthStatus_HEALTH_STATUS_CRITICAL:
		return api.HealthCritical
	default:
		return api.HealthPassing
	}
}

func fromConsulStatus(st string) registryv1.HealthStatus {
	switch st {
	case api.HealthPassing:
		return registryv1.HealthStatus_HEALTH_STATUS_PASSING
	case api.HealthWarning:
		return registryv1.HealthStatus_HEALTH_STATUS_WARNING
	default:
		return registryv1.HealthStatus_HEALTH_STATUS_CRITICAL
	}
}

// registration is the agent registration of an instance.
func registration(in *registryv1.Instance) (*api.AgentServiceRegistration, error) {
	meta := make(map[string]string, len(in.Metadata)+4)
	maps.Copy(meta, in.Metadata)
	meta[metaID] = in.Id
	if in.Zone != "" {
		meta[metaZone] = in.Zone
	}
	if in.Check != nil {
		b, err := protojson.Marshal(in.Check)
		if err != nil {
			return nil, err
		}
		meta[metaCheck] = string(b)
	}
	meta[metaUpdated] = in.UpdatedAt.AsTime().UTC().Format(time.RFC3339Nano)
	ttl := catalog.TTL(in)
	if ttl == 0 {
		ttl = noExpiry
	}
	return &api.AgentServiceRegistration{
		ID: serviceID(in.Service, in.Id), Name: in.Service, Address: in.Address, Port: int(in.Port),
		Tags: in.Tags, Meta: meta,
		Weights: &api.AgentWeights{Passing: int(in.Weight), Warning: int(in.Weight)},
		Check: &api.AgentServiceCheck{
			CheckID: checkID(in.Service, in.Id), Name: "switchboard health",
			TTL: ttl.String(), Status: consulStatus(in.Health),
		},
	}, nil
}

// entryVersion identifies the state of a health entry: the modify indexes
// of its service, node and checks, and the checks' statuses and outputs.
func entryVersion(e *api.ServiceEntry) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d", e.Service.ModifyIndex)
	if e.Node != nil {
		fmt.Fprintf(&b, "/%d", e.Node.ModifyIndex)
	}
	for _, c := range e.Checks {
		fmt.Fprintf(&b, "/%s=%d:%s:%d", c.CheckID, c.ModifyIndex, c.Status, len(c.Output))
	}
	return b.String()
}

// toInstance converts a health entry; nil when the service was not
// registered by a registry.
func toInstance(e *api.ServiceEntry) *registryv1.Instance {
	sv := e.Service
	id := sv.Meta[metaID]
	if id == "" {
		return nil
	}
	in := &registryv1.Instance{
		Service: sv.Service, Id: id, Address: sv.Address, Port: uint32(sv.Port),
		Weight: uint32(sv.Weights.Passing), Zone: sv.Meta[metaZone],
	}
	if in.Address == "" && e.Node != nil {
		in.Address = e.Node.Address
	}
	if len(sv.Tags) > 0 {
		in.Tags = sv.Tags
	}
	for k, v := range sv.Meta {
		if !strings.HasPrefix(k, "switchboard-") {
			if in.Metadata == nil {
				in.Metadata = map[string]string{}
			}
			in.Metadata[k] = v
		}
	}
	if c := sv.Meta[metaCheck]; c != "" {
		in.Check = &registryv1.HealthCheck{}
		if protojson.Unmarshal([]byte(c), in.Check) != nil {
			in.Check = nil
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, sv.Meta[metaUpdated]); err == nil {
		in.UpdatedAt = catalog.Timestamp(t)
	}
	in.Health = fromConsulStatus(e.Checks.AggregatedStatus())
	for _, c := range e.Checks {
		if c.CheckID == checkID(in.Service, in.Id) {
			in.HealthOutput = c.Output
		}
	}
	return in
}

func (s *Store) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.o.Timeout)
}

// waitFor waits, bounded by the call timeout, until the snapshot shows a
// write, so that a caller reads its own write.
func (s *Store) waitFor(ctx context.Context, pred func(*catalog.Snapshot) bool) {
	ctx, cancel := s.call(ctx)
	defer cancel()
	_ = s.hub.Wait(ctx, func(snap *catalog.Snapshot) bool { return snap.Stale() || pred(snap) })
}

// waitLoaded waits (bounded by the call timeout) for the first full load
// after Open, so a write shows on top of the real catalog.
func (s *Store) waitLoaded(ctx context.Context) {
	s.mu.Lock()
	ready := s.ready
	s.mu.Unlock()
	if ready {
		return
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	_ = s.hub.Wait(ctx, func(snap *catalog.Snapshot) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.ready || s.down
	})
}

// Register adds or replaces an instance.
func (s *Store) Register(ctx context.Context, in *registryv1.Instance) (*registryv1.Instance, error) {
	s.waitLoaded(ctx)
	reg, err := registration(in)
	if err != nil {
		return nil, err
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	if err := s.c.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(cctx)); err != nil {
		return nil, classify("register", err)
	}
	s.mu.Lock()
	s.owned[serviceID(in.Service, in.Id)] = in
	s.setPending(in.Service, in.Id, in)
	s.mu.Unlock()
	s.publish(in.Service)
	return in, nil
}

// Deregister removes an instance.
func (s *Store) Deregister(ctx context.Context, service, id string) error {
	s.waitLoaded(ctx)
	if s.hub.Snapshot().Instance(service, id) == nil {
		return fmt.Errorf("instance %s/%s: %w", service, id, catalog.ErrNotFound)
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	if err := s.c.Agent().ServiceDeregisterOpts(serviceID(service, id), (&api.QueryOptions{}).WithContext(cctx)); err != nil {
		return classify("deregister", err)
	}
	s.mu.Lock()
	delete(s.owned, serviceID(service, id))
	s.setPending(service, id, nil)
	s.mu.Unlock()
	s.publish(service)
	return nil
}

// updateCheck sets an instance's TTL check.
func (s *Store) updateCheck(ctx context.Context, service, id string, st registryv1.HealthStatus, output string, heartbeat bool) error {
	s.waitLoaded(ctx)
	cur := s.hub.Snapshot().Instance(service, id)
	if cur == nil {
		return fmt.Errorf("instance %s/%s: %w", service, id, catalog.ErrNotFound)
	}
	if heartbeat && catalog.TTL(cur) == 0 {
		return fmt.Errorf("instance %s/%s has no ttl check: %w", service, id, catalog.ErrFailedPrecondition)
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	if err := s.c.Agent().UpdateTTLOpts(checkID(service, id), output, consulStatus(st), (&api.QueryOptions{}).WithContext(cctx)); err != nil {
		return classify("update check", err)
	}
	next := proto.Clone(cur).(*registryv1.Instance)
	next.Health, next.HealthOutput = st, output
	s.mu.Lock()
	if o := s.owned[serviceID(service, id)]; o != nil {
		o = proto.Clone(o).(*registryv1.Instance)
		o.Health, o.HealthOutput = st, output
		s.owned[serviceID(service, id)] = o
	}
	s.setPending(service, id, next)
	s.mu.Unlock()
	s.publish(service)
	return nil
}

// pending is a write of this store that Consul's catalog has not shown yet
// (the agent syncs its registrations to the catalog asynchronously). The
// snapshot shows it at once, so a caller reads its own write and watchers
// see it without waiting for the catalog.
type pending struct {
	inst  *registryv1.Instance // nil: deregistered
	until time.Time
}

// setPending records a write (nil inst: a deregistration); s.mu is held.
func (s *Store) setPending(service, id string, inst *registryv1.Instance) {
	m := s.pending[service]
	if m == nil {
		m = map[string]*pending{}
		s.pending[service] = m
	}
	m[id] = &pending{inst: inst, until: time.Now().Add(s.o.PendingTTL)}
}

// catalogInstance returns an instance as Consul last reported it; s.mu is
// held.
func (s *Store) catalogInstance(service, id string) *registryv1.Instance {
	for _, in := range s.services[service] {
		if in.Id == id {
			return in
		}
	}
	return nil
}

// resolve drops pending writes the catalog now shows: an instance with
// the same registration time and status, or no instance for a
// deregistration. (Output alone is not compared: the agent syncs a check's
// output to the catalog lazily when its status does not change.) s.mu is
// held.
func (s *Store) resolve(service string) {
	for id, p := range s.pending[service] {
		got := s.catalogInstance(service, id)
		if p.inst == nil && got == nil ||
			p.inst != nil && got != nil && proto.Equal(got.UpdatedAt, p.inst.UpdatedAt) && got.Health == p.inst.Health {
			delete(s.pending[service], id)
		}
	}
	if len(s.pending[service]) == 0 {
		delete(s.pending, service)
	}
}

// shown is a service's instances as the snapshot shows them: Consul's
// catalog with this store's pending writes on top; s.mu is held.
func (s *Store) shown(service string) []*registryv1.Instance {
	p := s.pending[service]
	if len(p) == 0 {
		return s.services[service]
	}
	now := time.Now()
	out := make([]*registryv1.Instance, 0, len(s.services[service])+len(p))
	for _, in := range s.services[service] {
		if p[in.Id] == nil || now.After(p[in.Id].until) {
			out = append(out, in)
		}
	}
	for id, w := range p {
		if now.After(w.until) {
			delete(p, id)
			continue
		}
		if w.inst != nil {
			out = append(out, w.inst)
		}
	}
	return out
}

// Heartbeat passes a TTL instance's check.
func (s *Store) Heartbeat(ctx context.Context, service, id string) error {
	return s.updateCheck(ctx, service, id, registryv1.HealthStatus_HEALTH_STATUS_PASSING, catalog.HeartbeatOutput, true)
}

// SetHealth sets an instance's check.
func (s *Store) SetHealth(ctx context.Context, service, id string, st registryv1.HealthStatus, output string) error {
	return s.updateCheck(ctx, service, id, st, output, false)
}

func (s *Store) recordKey(r *registryv1.Record) string {
	return s.o.Prefix + "records/" + catalog.RecordKey(r)
}

// PutRecord stores a record in the KV store.
func (s *Store) PutRecord(ctx context.Context, r *registryv1.Record) error {
	s.waitLoaded(ctx)
	v, err := proto.Marshal(r)
	if err != nil {
		return err
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	if _, err := s.c.KV().Put(&api.KVPair{Key: s.recordKey(r), Value: v}, (&api.WriteOptions{}).WithContext(cctx)); err != nil {
		return classify("put record", err)
	}
	s.mu.Lock()
	s.ownedRecs[s.recordKey(r)] = r
	s.mu.Unlock()
	s.waitFor(ctx, func(snap *catalog.Snapshot) bool {
		_, recs := snap.Records()
		for _, c := range recs {
			if proto.Equal(c, r) {
				return true
			}
		}
		return false
	})
	return nil
}

// DeleteRecord removes records of name and type (with data, if set).
func (s *Store) DeleteRecord(ctx context.Context, name, typ, data string) (int, error) {
	s.waitLoaded(ctx)
	match := func(r *registryv1.Record) bool {
		return r.Name == name && r.Type == typ && (data == "" || r.Data == data)
	}
	_, recs := s.hub.Snapshot().Records()
	n := 0
	for _, r := range recs {
		if match(r) {
			n++
		}
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	var err error
	if data != "" {
		_, err = s.c.KV().Delete(s.o.Prefix+"records/"+catalog.RecordSetKey(name, typ)+catalog.DataHash(data), (&api.WriteOptions{}).WithContext(cctx))
	} else {
		_, err = s.c.KV().DeleteTree(s.o.Prefix+"records/"+catalog.RecordSetKey(name, typ), (&api.WriteOptions{}).WithContext(cctx))
	}
	if err != nil {
		return 0, classify("delete record", err)
	}
	s.mu.Lock()
	for k, r := range s.ownedRecs {
		if match(r) {
			delete(s.ownedRecs, k)
		}
	}
	s.mu.Unlock()
	s.waitFor(ctx, func(snap *catalog.Snapshot) bool {
		_, recs := snap.Records()
		for _, r := range recs {
			if match(r) {
				return false
			}
		}
		return true
	})
	return n, nil
}

// query runs blocking queries with fn until ctx ends: fn gets the index to
// wait on and returns the new one. Errors mark the store down and back off.
func (s *Store) query(ctx context.Context, fn func(q *api.QueryOptions) (uint64, error)) {
	var index uint64
	var last time.Time
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		if wait := time.Until(last.Add(s.o.MinInterval)); wait > 0 && index != 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		last = time.Now()
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: s.o.Wait}).WithContext(ctx)
		next, err := fn(q)
		if err == nil && s.isDown() {
			// Consul is back: restore what it lost before anything else.
			err = s.restore(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.markDown()
			index = 0
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		if next < index || next == 0 {
			next = 0 // Consul's index went back (a restart): start over
		}
		index = next
	}
}

func (s *Store) isDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down
}

func (s *Store) markDown() {
	s.mu.Lock()
	wasDown := s.down
	s.down = true
	s.mu.Unlock()
	if !wasDown {
		s.hub.Update(func(u *catalog.Update) { u.SetStale(true) })
	}
}

// catalogLoop follows the list of services; it starts a health query per
// service and, after an outage, restores what this store registered.
func (s *Store) catalogLoop(ctx context.Context) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		for _, cancel := range s.loops {
			cancel()
		}
		s.mu.Unlock()
	}()
	s.query(ctx, func(q *api.QueryOptions) (uint64, error) {
		names, meta, err := s.c.Catalog().Services(q)
		if err != nil {
			return 0, err
		}
		s.learnNode(ctx)
		s.mu.Lock()
		if !s.catLoaded {
			s.catLoaded = true
			s.waiting = map[string]bool{}
			for name := range names {
				if name != "consul" {
					s.waiting[name] = true
				}
			}
		}
		for name := range names {
			if name == "consul" || s.loops[name] != nil {
				continue
			}
			lctx, cancel := context.WithCancel(ctx)
			s.loops[name] = cancel
			s.wg.Add(1)
			go s.serviceLoop(lctx, name)
		}
		var gone []string
		for name, cancel := range s.loops {
			if _, ok := names[name]; !ok {
				cancel()
				delete(s.loops, name)
				s.mirror(name, nil)
				delete(s.services, name)
				delete(s.waiting, name)
				s.serviceIdx[name] = meta.LastIndex
				s.resolve(name)
				gone = append(gone, name)
			}
		}
		s.index = max(s.index, meta.LastIndex)
		s.mu.Unlock()
		s.publish(gone...)
		return meta.LastIndex, nil
	})
}

// restore re-registers every instance and record this store registered
// that Consul lost; publish then keeps the snapshot stale until they show
// (bounded by RecoveryWait).
func (s *Store) restore(ctx context.Context) error {
	s.restoreMu.Lock()
	defer s.restoreMu.Unlock()
	if !s.isDown() {
		return nil // another loop restored meanwhile
	}
	s.mu.Lock()
	owned := make([]*registryv1.Instance, 0, len(s.owned))
	for _, in := range s.owned {
		owned = append(owned, in)
	}
	recs := make([]*registryv1.Record, 0, len(s.ownedRecs))
	for _, r := range s.ownedRecs {
		recs = append(recs, r)
	}
	s.mu.Unlock()
	agent, err := func() (map[string]*api.AgentService, error) {
		cctx, cancel := s.call(ctx)
		defer cancel()
		return s.c.Agent().ServicesWithFilterOpts("", (&api.QueryOptions{}).WithContext(cctx))
	}()
	if err != nil {
		return classify("list agent services", err)
	}
	for _, in := range owned {
		if agent[serviceID(in.Service, in.Id)] != nil {
			continue
		}
		reg, err := registration(in)
		if err != nil {
			continue
		}
		cctx, cancel := s.call(ctx)
		err = s.c.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(cctx))
		if err == nil && (in.Health != registryv1.HealthStatus_HEALTH_STATUS_PASSING || in.HealthOutput != "") {
			err = s.c.Agent().UpdateTTLOpts(checkID(in.Service, in.Id), in.HealthOutput, consulStatus(in.Health), (&api.QueryOptions{}).WithContext(cctx))
		}
		cancel()
		if err != nil {
			return classify("re-register", err)
		}
	}
	for _, r := range recs {
		v, err := proto.Marshal(r)
		if err != nil {
			continue
		}
		cctx, cancel := s.call(ctx)
		_, _, err = s.c.KV().CAS(&api.KVPair{Key: s.recordKey(r), Value: v, ModifyIndex: 0}, (&api.WriteOptions{}).WithContext(cctx))
		cancel()
		if err != nil {
			return classify("restore record", err)
		}
	}
	s.mu.Lock()
	if s.down {
		s.down = false
		s.recovering = time.Now().Add(s.o.RecoveryWait)
	}
	s.mu.Unlock()
	s.publish()
	return nil
}

// serviceLoop follows one service's health.
func (s *Store) serviceLoop(ctx context.Context, name string) {
	defer s.wg.Done()
	// Entries whose service and checks did not change keep their converted
	// instance, so an unchanged instance is the same pointer (cheap to
	// compare) from one response to the next.
	type converted struct {
		version string
		inst    *registryv1.Instance
	}
	cache := map[string]converted{}
	s.query(ctx, func(q *api.QueryOptions) (uint64, error) {
		entries, meta, err := s.c.Health().Service(name, "", false, q)
		if err != nil {
			return 0, err
		}
		var insts []*registryv1.Instance
		local := map[string]*registryv1.Instance{} // on the store's agent, by id
		s.mu.Lock()
		node := s.node
		s.mu.Unlock()
		next := make(map[string]converted, len(entries))
		for _, e := range entries {
			version := entryVersion(e)
			c, ok := cache[e.Service.ID]
			if !ok || c.version != version {
				c = converted{version: version, inst: toInstance(e)}
			}
			next[e.Service.ID] = c
			if c.inst != nil {
				insts = append(insts, c.inst)
				if node != "" && e.Node != nil && e.Node.Node == node {
					local[c.inst.Id] = c.inst
				}
			}
		}
		cache = next
		s.mu.Lock()
		if ctx.Err() == nil {
			if node != "" {
				s.mirror(name, local)
			}
			s.services[name] = insts
			s.serviceIdx[name] = meta.LastIndex
			delete(s.waiting, name)
			s.resolve(name)
		}
		s.index = max(s.index, meta.LastIndex)
		s.mu.Unlock()
		s.publish(name)
		return meta.LastIndex, nil
	})
}

// learnNode asks the agent for its node name until it knows it: the
// store restores the instances registered on that node.
func (s *Store) learnNode(ctx context.Context) {
	s.mu.Lock()
	known := s.node != ""
	s.mu.Unlock()
	if known {
		return
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	var self struct{ Config struct{ NodeName string } }
	if _, err := s.c.Raw().Query("/v1/agent/self", &self, (&api.QueryOptions{}).WithContext(cctx)); err != nil || self.Config.NodeName == "" {
		return // a later catalog response asks again
	}
	s.mu.Lock()
	s.node = self.Config.NodeName
	s.mu.Unlock()
}

// mirror updates what the store restores after an outage from a fresh
// response for one service: local is its instances on the store's agent.
// A write of this store that Consul has not shown yet keeps its own state.
// While Consul is down or the store is restoring, the mirror keeps what it
// had. s.mu is held.
func (s *Store) mirror(service string, local map[string]*registryv1.Instance) {
	if s.down || !s.recovering.IsZero() {
		return
	}
	p := s.pending[service]
	for id, in := range local {
		if p[id] == nil {
			s.owned[serviceID(service, id)] = in
		}
	}
	for _, in := range s.services[service] {
		if local[in.Id] == nil && p[in.Id] == nil {
			delete(s.owned, serviceID(service, in.Id))
		}
	}
}

// recordsLoop follows the records' KV prefix.
func (s *Store) recordsLoop(ctx context.Context) {
	defer s.wg.Done()
	s.query(ctx, func(q *api.QueryOptions) (uint64, error) {
		pairs, meta, err := s.c.KV().List(s.o.Prefix+"records/", q)
		if err != nil {
			return 0, err
		}
		var recs []*registryv1.Record
		keys := make(map[string]*registryv1.Record, len(pairs))
		for _, p := range pairs {
			r := &registryv1.Record{}
			if proto.Unmarshal(p.Value, r) == nil {
				recs = append(recs, r)
				keys[p.Key] = r
			}
		}
		s.mu.Lock()
		if !s.down && s.recovering.IsZero() {
			s.ownedRecs = keys
		}
		s.records = recs
		s.recordsIdx = meta.LastIndex
		s.recLoaded = true
		s.index = max(s.index, meta.LastIndex)
		s.mu.Unlock()
		s.publish()
		return meta.LastIndex, nil
	})
}

// publish pushes the store's view of Consul to the snapshot: the named
// services (all of them while finishing a recovery) and the records. While
// Consul is down, or after it returned but before this store's
// registrations are back, the last snapshot stays, marked stale.
func (s *Store) publish(names ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return
	}
	full := false
	if !s.ready {
		if !s.catLoaded || !s.recLoaded || len(s.waiting) > 0 {
			return
		}
		s.ready = true
		full = true
	}
	if !s.recovering.IsZero() {
		missing := false
		for _, in := range s.owned {
			found := false
			for _, c := range s.services[in.Service] {
				if c.Id == in.Id {
					found = true
					break
				}
			}
			if !found {
				missing = true
				break
			}
		}
		if missing && time.Now().Before(s.recovering) {
			return
		}
		s.recovering = time.Time{}
		full = true
	}
	s.hub.Update(func(u *catalog.Update) {
		if full {
			for _, name := range u.Services() {
				if s.services[name] == nil && s.pending[name] == nil {
					u.SetServiceAt(name, nil, s.serviceIdx[name])
				}
			}
			for name := range s.services {
				u.SetServiceAt(name, s.shown(name), s.serviceIdx[name])
			}
			for name := range s.pending {
				u.SetServiceAt(name, s.shown(name), s.serviceIdx[name])
			}
		} else {
			for _, name := range names {
				u.SetServiceAt(name, s.shown(name), s.serviceIdx[name])
			}
		}
		u.SetRecordsAt(s.records, s.recordsIdx)
		u.AtLeast(s.index)
		u.SetStale(false)
	})
}
