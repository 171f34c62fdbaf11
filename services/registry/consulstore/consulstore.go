// Package consulstore keeps the registry's catalog in Consul.
//
// Instances are agent service registrations (service ID "<service>:<id>")
// that each carry one TTL check, "service:<service>:<id>": Heartbeat and
// SetHealth update it, so Consul itself turns a TTL instance critical when
// its heartbeats stop. Instances without a TTL check get a TTL check with a
// TTL of ten years, which only SetHealth changes. The registry's own fields
// (instance id, zone, check spec, registration time) travel in service
// metadata under the reserved "switchboard-" prefix; "switchboard-id" also
// marks a registration as made by a registry. DNS records and the
// configuration entries (balancer policies, prober jobs; config.go) live in
// the KV store under a prefix.
//
// The catalog snapshot is fed by Consul blocking queries: one on the service
// list, one per service on its health, one on the record prefix — shared by
// every watcher of the registry (watch.go). This store's own writes show in
// the snapshot as soon as they return, before Consul's catalog has them.
//
// When Consul is unreachable, writes fail with ErrUnavailable within the
// call timeout and the snapshot is marked stale. The store keeps the set of
// instances and records it must restore (its accepted set): every write it
// accepted and nobody deregistered, plus every registry-made instance on
// the Consul agent it talks to and every record under the prefix, as seen
// while Consul was up. When Consul answers again (the same agent restarted,
// a new agent with a new node name, a different agent), the store learns
// the agent's identity again and re-registers, a bounded number at a time,
// whatever of that set the agent lacks (recovery.go). Reads keep showing
// the accepted set meanwhile, and writes made during the restore show at
// once. So a registry that restarted restores what the registry before it
// registered, and an instance deregistered through another registry is not
// brought back.
package consulstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	// PendingTTL bounds how long a write of this store (or an instance it
	// restored) shows in the snapshot before Consul's catalog does (5s
	// when zero).
	PendingTTL time.Duration
	// UnseenTTL bounds how long an accepted instance that Consul's catalog
	// has not shown yet stays in reads (2m when zero). The agent took it
	// and syncs it to the catalog on its own time — seconds behind when
	// Consul is busy or has just restarted — so reads show it from the
	// moment the write returned; one the catalog never shows (deregistered
	// behind the registry's back before it synced) leaves reads after this
	// bound, with a warning.
	UnseenTTL time.Duration
	// RestoreConcurrency bounds the calls in flight while the store puts
	// back what Consul lost (8 when zero). Consul's agent applies
	// registrations one at a time: more in flight only makes each wait
	// longer.
	RestoreConcurrency int
	// RestoreTimeout bounds each call of a restore (10s when zero). It is
	// longer than Timeout, which bounds a caller's wait: a Consul busy
	// taking back thousands of instances answers slowly, and a restore
	// needs progress more than a quick failure.
	RestoreTimeout time.Duration
	// Logger receives the store's reports: Consul lost and back, a changed
	// agent, each restore and what it could not put back (nothing when
	// nil).
	Logger *slog.Logger
	// Observer is told when Consul is lost and back and what each restore
	// put back (the registry's metrics; nothing when nil).
	Observer catalog.Observer
}

// Store is the Consul store.
type Store struct {
	c      *api.Client
	addr   string
	o      Options
	log    *slog.Logger
	obs    catalog.Observer
	hub    *catalog.Hub
	ctx    context.Context // the store's life: Close cancels it
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // ends a loop's backoff: Consul took a write while the store thought it down
	cfg    *configState  // the configuration entries (config.go)

	restoreMu sync.Mutex                     // one restore at a time
	instMu    keyedMutex                     // by service ID: orders the writes and the restore of one instance
	recMu     sync.RWMutex                   // orders record writes (write lock) and record restores (read lock)
	upMu      sync.Mutex                     // orders reports of up and down
	up        bool                           // as last reported; guarded by upMu
	progress  restoreProgress                // of the restore under way; guarded by restoreMu
	mu        sync.Mutex                     // guards everything below
	owned     map[string]map[string]*owned   // the accepted set: what a restore puts back, by service and id
	ownedRecs map[string]*registryv1.Record  // to restore: the records, by key
	agent     agentID                        // the agent the store talks to, once known
	agentTry  bool                           // the agent was asked at start-up (it may refuse)
	pending   map[string]map[string]*pending // by service, id: our writes Consul has not shown yet
	pendRecs  map[string]*pendingRecord      // by key: our record writes Consul has not shown yet
	services  map[string][]*registryv1.Instance
	serviceIx map[string]uint64             // Consul's index of each service
	records   map[string]*registryv1.Record // as Consul last reported, by key
	recordsIx uint64
	loops     map[string]context.CancelFunc // per-service health queries
	down      bool                          // Consul unreachable, or lost and not restored yet
	restoring bool                          // a restore is under way
	downAt    time.Time                     // when down began
	epoch     uint64                        // bumps when the store goes down and when a restore ends
	lost      context.Context               // done when the store goes down: ends the queries in flight
	markLost  context.CancelFunc
	ready     bool            // the first full load is published
	waiting   map[string]bool // services whose first load is due
	catLoaded bool            // the service list was read once
	recLoaded bool            // the records were read once
	index     uint64          // highest Consul index seen
}

// owned is an instance of the accepted set: what the store puts back when
// Consul loses it.
type owned struct {
	inst *registryv1.Instance
	// seen: Consul's catalog showed the instance on the store's agent since
	// it was last written, put back, or the agent changed. Only an instance
	// seen there and then missing was deregistered by someone else; one
	// never seen may still be on its way to the catalog, and reads show it
	// meanwhile (for at most UnseenTTL from at).
	seen bool
	at   time.Time // when it was written or put back
	// expired: UnseenTTL passed without the catalog showing it; reads no
	// longer show it (logged once).
	expired bool
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
	if o.UnseenTTL <= 0 {
		o.UnseenTTL = 2 * time.Minute
	}
	if o.RestoreConcurrency <= 0 {
		o.RestoreConcurrency = 8
	}
	if o.RestoreTimeout <= 0 {
		o.RestoreTimeout = 10 * time.Second
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
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var obs catalog.Observer = catalog.NopObserver{}
	if o.Observer != nil {
		obs = o.Observer
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		c: c, addr: cfg.Address, o: o, log: log, obs: obs, hub: catalog.NewHub(1), ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1),
		owned: map[string]map[string]*owned{}, ownedRecs: map[string]*registryv1.Record{},
		pending: map[string]map[string]*pending{}, pendRecs: map[string]*pendingRecord{},
		services: map[string][]*registryv1.Instance{}, serviceIx: map[string]uint64{},
		records: map[string]*registryv1.Record{}, loops: map[string]context.CancelFunc{},
		cfg: newConfigState(),
	}
	s.lost, s.markLost = context.WithCancel(ctx)
	// Stale until the first full load: a watcher connecting now must not
	// take an empty catalog for the truth.
	s.hub.Update(func(u *catalog.Update) { u.SetStale(true) })
	s.wg.Add(3)
	go s.catalogLoop(ctx)
	go s.recordsLoop(ctx)
	go s.configLoop(ctx)
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

// registration is the agent registration of an instance, its check in the
// instance's health.
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

// lockInstance serialises the writes to one instance and its restore, so
// that a restore never puts back an older version over a newer write. It
// returns the unlock function.
func (s *Store) lockInstance(service, id string) func() {
	return s.instMu.lock(serviceID(service, id))
}

// keyedMutex is a mutex per key, held only by the calls on that key.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	mu    sync.Mutex
	users int // holders and waiters
}

// lock locks key and returns the unlock function.
func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{}
		k.m[key] = l
	}
	l.users++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		if l.users--; l.users == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

// accepted reports a write Consul took, and wakes the loops when the store
// still thinks Consul down: it is back, and the restore should start.
func (s *Store) accepted() {
	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	if down {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// Register adds or replaces an instance.
func (s *Store) Register(ctx context.Context, in *registryv1.Instance) (*registryv1.Instance, error) {
	s.waitLoaded(ctx)
	reg, err := registration(in)
	if err != nil {
		return nil, err
	}
	defer s.lockInstance(in.Service, in.Id)()
	cctx, cancel := s.call(ctx)
	defer cancel()
	if err := s.c.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(cctx)); err != nil {
		return nil, classify("register", err)
	}
	s.mu.Lock()
	s.setOwned(in)
	s.setPending(in.Service, in.Id, in)
	s.mu.Unlock()
	s.accepted()
	s.publish(in.Service)
	return in, nil
}

// Deregister removes an instance.
func (s *Store) Deregister(ctx context.Context, service, id string) error {
	s.waitLoaded(ctx)
	defer s.lockInstance(service, id)()
	if s.hub.Snapshot().Instance(service, id) == nil {
		return fmt.Errorf("instance %s/%s: %w", service, id, catalog.ErrNotFound)
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	if err := s.c.Agent().ServiceDeregisterOpts(serviceID(service, id), (&api.QueryOptions{}).WithContext(cctx)); err != nil {
		err = classify("deregister", err)
		// An accepted instance Consul lost and the restore has not put
		// back yet: forgetting it is the deregistration.
		if !errors.Is(err, catalog.ErrNotFound) || s.ownedInstance(service, id) == nil {
			return err
		}
	}
	s.mu.Lock()
	s.dropOwned(service, id)
	s.setPending(service, id, nil)
	s.mu.Unlock()
	s.accepted()
	s.publish(service)
	return nil
}

// updateCheck sets an instance's TTL check.
func (s *Store) updateCheck(ctx context.Context, service, id string, st registryv1.HealthStatus, output string, heartbeat bool) error {
	s.waitLoaded(ctx)
	defer s.lockInstance(service, id)()
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
		err = classify("update check", err)
		own := s.ownedInstance(service, id)
		if !errors.Is(err, catalog.ErrNotFound) || own == nil {
			return err
		}
		// Consul lost an accepted instance and the restore has not put it
		// back yet: put it back now, in the new status.
		own = proto.Clone(own).(*registryv1.Instance)
		own.Health, own.HealthOutput = st, output
		if err := s.putBack(cctx, own); err != nil {
			return classify("re-register", err)
		}
	}
	next := proto.Clone(cur).(*registryv1.Instance)
	next.Health, next.HealthOutput = st, output
	s.mu.Lock()
	if o := s.owned[service][id]; o != nil {
		in := proto.Clone(o.inst).(*registryv1.Instance)
		in.Health, in.HealthOutput = st, output
		o.inst = in
	}
	s.setPending(service, id, next)
	s.mu.Unlock()
	s.accepted()
	s.publish(service)
	return nil
}

// putBack registers an instance with the agent again, in its last health.
func (s *Store) putBack(ctx context.Context, in *registryv1.Instance) error {
	reg, err := registration(in)
	if err != nil {
		return err
	}
	if err := s.c.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		return err
	}
	if in.HealthOutput == "" {
		return nil // the registration set the status
	}
	return s.c.Agent().UpdateTTLOpts(checkID(in.Service, in.Id), in.HealthOutput, consulStatus(in.Health), (&api.QueryOptions{}).WithContext(ctx))
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
	s.recMu.Lock()
	defer s.recMu.Unlock()
	cctx, cancel := s.call(ctx)
	defer cancel()
	k := s.recordKey(r)
	if _, err := s.c.KV().Put(&api.KVPair{Key: k, Value: v}, (&api.WriteOptions{}).WithContext(cctx)); err != nil {
		return classify("put record", err)
	}
	s.mu.Lock()
	s.ownedRecs[k] = r
	s.pendRecs[k] = &pendingRecord{rec: r, until: time.Now().Add(s.o.PendingTTL)}
	s.mu.Unlock()
	s.accepted()
	s.publishRecords()
	return nil
}

// DeleteRecord removes records of name and type (with data, if set).
func (s *Store) DeleteRecord(ctx context.Context, name, typ, data string) (int, error) {
	s.waitLoaded(ctx)
	s.recMu.Lock()
	defer s.recMu.Unlock()
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
	until := time.Now().Add(s.o.PendingTTL)
	for _, m := range []map[string]*registryv1.Record{s.records, s.ownedRecs} {
		for k, r := range m {
			if match(r) {
				s.pendRecs[k] = &pendingRecord{until: until}
			}
		}
	}
	for k, p := range s.pendRecs {
		if p.rec != nil && match(p.rec) {
			s.pendRecs[k] = &pendingRecord{until: until}
		}
	}
	maps.DeleteFunc(s.ownedRecs, func(_ string, r *registryv1.Record) bool { return match(r) })
	s.mu.Unlock()
	s.accepted()
	s.publishRecords()
	return n, nil
}
