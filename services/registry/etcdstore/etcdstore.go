// Package etcdstore keeps the registry's catalog in etcd.
//
// Layout under the prefix (default /switchboard/registry/):
//
//	i/<service>/<id>   an instance (protobuf), without a lease
//	a/<service>/<id>   "alive" key of a TTL instance, on a lease of its TTL
//	r/<name>/<type>/<hash>  a DNS record (protobuf)
//	c/<kind>/<key>     a configuration entry (protobuf): a balancer policy,
//	                   a prober job
//
// A TTL instance whose lease expires keeps its instance key and is shown
// CRITICAL ("ttl expired") until the next Heartbeat, the same as the other
// backends. One etcd watch of the prefix feeds the catalog snapshot; a probe
// loop marks the snapshot stale when etcd is unreachable and, when it comes
// back, re-creates any instance it last saw that etcd lost (its data was
// wiped), and every configuration entry, then resynchronises the watch. What it restores is a mirror of
// the prefix, not a memory of its own calls: a registry that restarted
// restores what the one before it registered, and an instance deleted
// through another registry is not brought back.
package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
)

// DefaultPrefix is the default key prefix.
const DefaultPrefix = "/switchboard/registry/"

// Options configure the store.
type Options struct {
	// Endpoints of the etcd cluster.
	Endpoints []string
	// Prefix of every key (DefaultPrefix when empty).
	Prefix string
	// Timeout bounds each call to etcd (1s when zero).
	Timeout time.Duration
	// ProbeInterval is how often reachability is checked (500ms when zero).
	ProbeInterval time.Duration
	// RestoreConcurrency bounds the writes in flight while the store
	// re-creates what etcd lost (16 when zero).
	RestoreConcurrency int
	// Logger receives the store's reports: etcd lost and back, each
	// restore (nothing when nil).
	Logger *slog.Logger
	// Observer is told when etcd is lost and back and what each restore
	// put back (the registry's metrics; nothing when nil).
	Observer catalog.Observer
}

// Store is the etcd store.
type Store struct {
	cli    *clientv3.Client
	o      Options
	log    *slog.Logger
	obs    catalog.Observer
	hub    *catalog.Hub
	cancel context.CancelFunc
	wg     sync.WaitGroup
	resync chan struct{} // tells the watch loop to start over
	probe  chan struct{} // asks the probe loop to check now

	mu       sync.Mutex
	owned    map[string]*registryv1.Instance    // to restore: the instances last seen, by service/id
	ownedCfg map[string]*registryv1.ConfigEntry // to restore: the configuration last seen, by kind/key
	rev      int64                              // last revision applied to the snapshot
	revCh    chan struct{}                      // closed when rev advances
	stale    bool
	up       bool      // as last reported to the observer
	reported bool      // up was reported once
	lost     time.Time // when etcd was lost; zero while it answers
}

// Open connects to etcd and starts the watch and probe loops. It does not
// fail when etcd is down: the store starts stale and catches up.
func Open(_ context.Context, o Options) (*Store, error) {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = 500 * time.Millisecond
	}
	if o.RestoreConcurrency <= 0 {
		o.RestoreConcurrency = 16
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var obs catalog.Observer = catalog.NopObserver{}
	if o.Observer != nil {
		obs = o.Observer
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   o.Endpoints,
		DialTimeout: o.Timeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", o.Endpoints, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		cli: cli, o: o, log: log, obs: obs, hub: catalog.NewHub(1), cancel: cancel,
		resync: make(chan struct{}, 1), probe: make(chan struct{}, 1),
		owned: map[string]*registryv1.Instance{}, ownedCfg: map[string]*registryv1.ConfigEntry{}, revCh: make(chan struct{}),
	}
	// Stale until the first full read: a watcher connecting now must not
	// take an empty catalog for the truth.
	s.hub.Update(func(u *catalog.Update) { u.SetStale(true) })
	s.wg.Add(2)
	go s.watchLoop(ctx)
	go s.probeLoop(ctx)
	return s, nil
}

func (s *Store) instKey(service, id string) string  { return s.o.Prefix + "i/" + service + "/" + id }
func (s *Store) aliveKey(service, id string) string { return s.o.Prefix + "a/" + service + "/" + id }
func (s *Store) recKey(k string) string             { return s.o.Prefix + "r/" + k }
func (s *Store) cfgKey(kind, key string) string {
	return s.o.Prefix + "c/" + catalog.ConfigKey(kind, key)
}

// Snapshot returns the current catalog.
func (s *Store) Snapshot() *catalog.Snapshot { return s.hub.Snapshot() }

// Close stops the loops and the client.
func (s *Store) Close() error {
	s.cancel()
	s.wg.Wait()
	if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

func (s *Store) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.o.Timeout)
}

// unavailable wraps an etcd error as ErrUnavailable and asks for a probe.
func (s *Store) unavailable(op string, err error) error {
	select {
	case s.probe <- struct{}{}:
	default:
	}
	return fmt.Errorf("etcd %s: %w: %w", op, catalog.ErrUnavailable, err)
}

// Ping checks that etcd answers a read.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.call(ctx)
	defer cancel()
	if _, err := s.cli.Get(ctx, s.o.Prefix+"ping", clientv3.WithCountOnly()); err != nil {
		return s.unavailable("ping", err)
	}
	return nil
}

// waitRev waits (bounded by the call timeout) until the snapshot includes
// revision rev, so a caller reads its own write.
func (s *Store) waitRev(ctx context.Context, rev int64) {
	ctx, cancel := s.call(ctx)
	defer cancel()
	for {
		s.mu.Lock()
		cur, ch := s.rev, s.revCh
		s.mu.Unlock()
		if cur >= rev {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

func leaseSeconds(ttl time.Duration) int64 {
	return max(1, int64(math.Ceil(ttl.Seconds())))
}

// put writes an instance (and its alive key on a fresh lease for a TTL
// instance) and returns the revision.
func (s *Store) put(ctx context.Context, in *registryv1.Instance) (int64, error) {
	v, err := proto.Marshal(in)
	if err != nil {
		return 0, err
	}
	ops := []clientv3.Op{clientv3.OpPut(s.instKey(in.Service, in.Id), string(v))}
	if ttl := catalog.TTL(in); ttl > 0 {
		lease, err := s.cli.Grant(ctx, leaseSeconds(ttl))
		if err != nil {
			return 0, s.unavailable("grant", err)
		}
		ops = append(ops, clientv3.OpPut(s.aliveKey(in.Service, in.Id), "", clientv3.WithLease(lease.ID)))
	} else {
		ops = append(ops, clientv3.OpDelete(s.aliveKey(in.Service, in.Id)))
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return 0, s.unavailable("register", err)
	}
	return resp.Header.Revision, nil
}

// Register adds or replaces an instance.
func (s *Store) Register(ctx context.Context, in *registryv1.Instance) (*registryv1.Instance, error) {
	cctx, cancel := s.call(ctx)
	defer cancel()
	rev, err := s.put(cctx, in)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.owned[in.Service+"/"+in.Id] = in
	s.mu.Unlock()
	s.waitRev(ctx, rev)
	return in, nil
}

// Deregister removes an instance.
func (s *Store) Deregister(ctx context.Context, service, id string) error {
	cctx, cancel := s.call(ctx)
	defer cancel()
	k := s.instKey(service, id)
	resp, err := s.cli.Txn(cctx).If(clientv3.Compare(clientv3.CreateRevision(k), ">", 0)).
		Then(clientv3.OpDelete(k), clientv3.OpDelete(s.aliveKey(service, id))).Commit()
	if err != nil {
		return s.unavailable("deregister", err)
	}
	s.mu.Lock()
	delete(s.owned, service+"/"+id)
	s.mu.Unlock()
	if !resp.Succeeded {
		return fmt.Errorf("instance %s/%s: %w", service, id, catalog.ErrNotFound)
	}
	s.waitRev(ctx, resp.Header.Revision)
	return nil
}

// load reads an instance and its alive key.
func (s *Store) load(ctx context.Context, service, id string) (*registryv1.Instance, int64, int64, error) {
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(s.instKey(service, id)), clientv3.OpGet(s.aliveKey(service, id))).Commit()
	if err != nil {
		return nil, 0, 0, s.unavailable("get", err)
	}
	ik := resp.Responses[0].GetResponseRange().Kvs
	if len(ik) == 0 {
		return nil, 0, 0, fmt.Errorf("instance %s/%s: %w", service, id, catalog.ErrNotFound)
	}
	in := &registryv1.Instance{}
	if err := proto.Unmarshal(ik[0].Value, in); err != nil {
		return nil, 0, 0, fmt.Errorf("instance %s/%s: %w", service, id, err)
	}
	var lease int64
	if ak := resp.Responses[1].GetResponseRange().Kvs; len(ak) > 0 {
		lease = ak[0].Lease
	}
	return in, ik[0].ModRevision, lease, nil
}

// alive refreshes (or re-creates) a TTL instance's alive key.
func (s *Store) alive(ctx context.Context, in *registryv1.Instance, lease int64) (int64, error) {
	if lease != 0 {
		if _, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(lease)); err == nil {
			return 0, nil
		} else if ctx.Err() != nil || !strings.Contains(err.Error(), "not found") {
			return 0, s.unavailable("keepalive", err)
		}
	}
	l, err := s.cli.Grant(ctx, leaseSeconds(catalog.TTL(in)))
	if err != nil {
		return 0, s.unavailable("grant", err)
	}
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(s.instKey(in.Service, in.Id)), ">", 0)).
		Then(clientv3.OpPut(s.aliveKey(in.Service, in.Id), "", clientv3.WithLease(l.ID))).Commit()
	if err != nil {
		return 0, s.unavailable("alive", err)
	}
	return resp.Header.Revision, nil
}

// setHealth writes a new status unless it is already current; with alive it
// also refreshes a TTL instance's lease.
func (s *Store) setHealth(ctx context.Context, service, id string, st registryv1.HealthStatus, output string, heartbeat bool) error {
	cctx, cancel := s.call(ctx)
	defer cancel()
	for attempt := 0; ; attempt++ {
		in, modRev, lease, err := s.load(cctx, service, id)
		if err != nil {
			return err
		}
		ttl := catalog.TTL(in)
		if heartbeat && ttl == 0 {
			return fmt.Errorf("instance %s/%s has no ttl check: %w", service, id, catalog.ErrFailedPrecondition)
		}
		var rev int64
		if ttl > 0 {
			if rev, err = s.alive(cctx, in, lease); err != nil {
				return err
			}
		}
		if in.Health != st || in.HealthOutput != output {
			next := proto.Clone(in).(*registryv1.Instance)
			next.Health, next.HealthOutput = st, output
			v, err := proto.Marshal(next)
			if err != nil {
				return err
			}
			k := s.instKey(service, id)
			resp, err := s.cli.Txn(cctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", modRev)).
				Then(clientv3.OpPut(k, string(v))).Commit()
			if err != nil {
				return s.unavailable("set health", err)
			}
			if !resp.Succeeded {
				if attempt < 3 {
					continue // changed under us: read again
				}
				return fmt.Errorf("instance %s/%s keeps changing: %w", service, id, catalog.ErrUnavailable)
			}
			rev = resp.Header.Revision
			s.mu.Lock()
			if o := s.owned[service+"/"+id]; o != nil {
				s.owned[service+"/"+id] = next
			}
			s.mu.Unlock()
		}
		if rev > 0 {
			s.waitRev(ctx, rev)
		}
		return nil
	}
}

// Heartbeat marks a TTL instance alive and PASSING.
func (s *Store) Heartbeat(ctx context.Context, service, id string) error {
	return s.setHealth(ctx, service, id, registryv1.HealthStatus_HEALTH_STATUS_PASSING, catalog.HeartbeatOutput, true)
}

// SetHealth records a check result (and restarts a TTL instance's TTL).
func (s *Store) SetHealth(ctx context.Context, service, id string, st registryv1.HealthStatus, output string) error {
	return s.setHealth(ctx, service, id, st, output, false)
}

// PutRecord stores a record.
func (s *Store) PutRecord(ctx context.Context, r *registryv1.Record) error {
	v, err := proto.Marshal(r)
	if err != nil {
		return err
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	resp, err := s.cli.Put(cctx, s.recKey(catalog.RecordKey(r)), string(v))
	if err != nil {
		return s.unavailable("put record", err)
	}
	s.waitRev(ctx, resp.Header.Revision)
	return nil
}

// DeleteRecord removes records of name and type (with data, if set).
func (s *Store) DeleteRecord(ctx context.Context, name, typ, data string) (int, error) {
	cctx, cancel := s.call(ctx)
	defer cancel()
	var (
		resp *clientv3.DeleteResponse
		err  error
	)
	if data != "" {
		resp, err = s.cli.Delete(cctx, s.recKey(catalog.RecordSetKey(name, typ)+catalog.DataHash(data)))
	} else {
		resp, err = s.cli.Delete(cctx, s.recKey(catalog.RecordSetKey(name, typ)), clientv3.WithPrefix())
	}
	if err != nil {
		return 0, s.unavailable("delete record", err)
	}
	if resp.Deleted > 0 {
		s.waitRev(ctx, resp.Header.Revision)
	}
	return int(resp.Deleted), nil
}

// view is the store's copy of the keys under the prefix.
type view struct {
	insts map[string]*registryv1.Instance // "service/id"
	alive map[string]bool
	recs  map[string]*registryv1.Record
	cfg   map[string]*registryv1.ConfigEntry // by kind/key
}

// shown is how an instance appears in the catalog: CRITICAL when it has a
// TTL check and its alive key expired.
func (v *view) shown(k string) *registryv1.Instance {
	in := v.insts[k]
	if in == nil || catalog.TTL(in) == 0 || v.alive[k] {
		return in
	}
	if in.Health == registryv1.HealthStatus_HEALTH_STATUS_CRITICAL {
		return in
	}
	c := proto.Clone(in).(*registryv1.Instance)
	c.Health, c.HealthOutput = registryv1.HealthStatus_HEALTH_STATUS_CRITICAL, catalog.TTLExpiredOutput
	return c
}

// apply records one key's new value (or its deletion); it returns the
// instance key it touched ("" for records).
func (v *view) apply(prefix string, key, value []byte, deleted bool) (string, bool) {
	k := strings.TrimPrefix(string(key), prefix)
	switch {
	case strings.HasPrefix(k, "i/"):
		id := k[2:]
		if deleted {
			delete(v.insts, id)
			return id, true
		}
		in := &registryv1.Instance{}
		if proto.Unmarshal(value, in) != nil {
			return "", false
		}
		v.insts[id] = in
		return id, true
	case strings.HasPrefix(k, "a/"):
		id := k[2:]
		if deleted {
			delete(v.alive, id)
		} else {
			v.alive[id] = true
		}
		return id, true
	case strings.HasPrefix(k, "c/"):
		if deleted {
			delete(v.cfg, k[2:])
			return "", true
		}
		e := &registryv1.ConfigEntry{}
		if proto.Unmarshal(value, e) != nil {
			return "", false
		}
		v.cfg[k[2:]] = e
		return "", true
	case strings.HasPrefix(k, "r/"):
		if deleted {
			delete(v.recs, k)
			return "", true
		}
		r := &registryv1.Record{}
		if proto.Unmarshal(value, r) != nil {
			return "", false
		}
		v.recs[k] = r
		return "", true
	}
	return "", false
}

// config returns one kind's entries.
func (v *view) config(kind string) []*registryv1.ConfigEntry {
	var out []*registryv1.ConfigEntry
	for _, e := range v.cfg {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func (v *view) records() []*registryv1.Record {
	out := make([]*registryv1.Record, 0, len(v.recs))
	for _, r := range v.recs {
		out = append(out, r)
	}
	return out
}

func (s *Store) setRev(rev int64) {
	s.mu.Lock()
	if rev > s.rev {
		s.rev = rev
		close(s.revCh)
		s.revCh = make(chan struct{})
	}
	s.mu.Unlock()
}

// watchLoop keeps the snapshot current: a full read, then etcd's watch
// from the next revision, starting over on errors and on resync requests.
func (s *Store) watchLoop(ctx context.Context) {
	defer s.wg.Done()
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		v, rev, err := s.sync(ctx)
		if err != nil {
			s.setStale(true)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			case <-s.resync:
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		s.follow(ctx, v, rev)
	}
}

// sync reads everything under the prefix and publishes it.
func (s *Store) sync(ctx context.Context) (*view, int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*s.o.Timeout)
	defer cancel()
	resp, err := s.cli.Get(cctx, s.o.Prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	v := &view{insts: map[string]*registryv1.Instance{}, alive: map[string]bool{}, recs: map[string]*registryv1.Record{}, cfg: map[string]*registryv1.ConfigEntry{}}
	for _, kv := range resp.Kvs {
		v.apply(s.o.Prefix, kv.Key, kv.Value, false)
	}
	// Only ever add here: etcd may have come back empty, and restore
	// needs what it lost.
	s.mu.Lock()
	for k, in := range v.insts {
		s.owned[k] = in
	}
	for k, e := range v.cfg {
		s.ownedCfg[k] = e
	}
	s.mu.Unlock()
	byService := map[string][]*registryv1.Instance{}
	for k := range v.insts {
		in := v.shown(k)
		byService[in.Service] = append(byService[in.Service], in)
	}
	rev := resp.Header.Revision
	s.hub.Update(func(u *catalog.Update) {
		for _, name := range u.Services() {
			if byService[name] == nil {
				u.SetService(name, nil)
			}
		}
		for name, list := range byService {
			u.SetService(name, list)
		}
		u.SetRecords(v.records())
		for _, kind := range catalog.ConfigKinds {
			u.SetConfig(kind, v.config(kind))
		}
		u.AtLeast(uint64(rev))
		u.SetStale(s.isStale())
	})
	s.setRev(rev)
	s.report()
	return v, rev, nil
}

// follow applies etcd's watch events until the watch fails or a resync is
// requested.
func (s *Store) follow(ctx context.Context, v *view, rev int64) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.cli.Watch(wctx, s.o.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.resync:
			return
		case resp, ok := <-wch:
			if !ok || resp.Err() != nil || resp.Canceled {
				return
			}
			touched := map[string]bool{}
			recs := false
			kinds := map[string]bool{}
			for _, ev := range resp.Events {
				deleted := ev.Type == clientv3.EventTypeDelete
				if k, ok := strings.CutPrefix(string(ev.Kv.Key), s.o.Prefix+"c/"); ok {
					if _, ok := v.apply(s.o.Prefix, ev.Kv.Key, ev.Kv.Value, deleted); ok {
						kind, _, _ := strings.Cut(k, "/")
						kinds[kind] = true
						s.mu.Lock()
						if deleted {
							delete(s.ownedCfg, k)
						} else {
							s.ownedCfg[k] = v.cfg[k]
						}
						s.mu.Unlock()
					}
					continue
				}
				id, ok := v.apply(s.o.Prefix, ev.Kv.Key, ev.Kv.Value, deleted)
				if !ok {
					continue
				}
				if k := string(ev.Kv.Key); strings.HasPrefix(k, s.o.Prefix+"i/") {
					s.mu.Lock()
					if deleted {
						delete(s.owned, id)
					} else {
						s.owned[id] = v.insts[id]
					}
					s.mu.Unlock()
				}
				if id == "" {
					recs = true
				} else {
					touched[id] = true
				}
			}
			s.hub.Update(func(u *catalog.Update) {
				for id := range touched {
					service, iid, _ := strings.Cut(id, "/")
					if in := v.shown(id); in != nil {
						u.PutInstance(in)
					} else {
						u.DeleteInstance(service, iid)
					}
				}
				if recs {
					u.SetRecords(v.records())
				}
				for kind := range kinds {
					u.SetConfig(kind, v.config(kind))
				}
				u.AtLeast(uint64(resp.Header.Revision))
			})
			s.setRev(resp.Header.Revision)
		}
	}
}

func (s *Store) isStale() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stale
}

func (s *Store) setStale(stale bool) {
	s.mu.Lock()
	s.stale = stale
	s.mu.Unlock()
	s.hub.Update(func(u *catalog.Update) { u.SetStale(stale) })
	s.report()
}

// report logs and tells the observer when etcd was lost or is back.
func (s *Store) report() {
	s.mu.Lock()
	up := !s.stale
	changed := !s.reported || up != s.up
	s.up, s.reported = up, true
	if changed && !up && s.lost.IsZero() {
		s.lost = time.Now()
	}
	s.mu.Unlock()
	if !changed {
		return
	}
	if !up {
		s.log.Warn("etcd lost: reads answer from the last catalog (stale), writes fail until it is back", "endpoints", s.o.Endpoints)
	}
	s.obs.BackendUp(up)
}

// probeLoop checks reachability; on recovery it restores owned instances
// and makes the watch loop start over.
func (s *Store) probeLoop(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.o.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.probe:
		}
		err := s.Ping(ctx)
		wasStale := s.isStale()
		switch {
		case err != nil && ctx.Err() == nil:
			if !wasStale {
				s.setStale(true)
			}
		case err == nil && wasStale:
			if err := s.restore(ctx); err != nil {
				continue
			}
			s.mu.Lock()
			s.stale = false
			s.mu.Unlock()
			select {
			case s.resync <- struct{}{}:
			default:
			}
		}
	}
}

// restore re-creates the instances the store last saw that etcd no longer
// has (it lost its data), at most RestoreConcurrency writes at once.
func (s *Store) restore(ctx context.Context) error {
	s.mu.Lock()
	owned := make([]*registryv1.Instance, 0, len(s.owned))
	for _, in := range s.owned {
		owned = append(owned, in)
	}
	cfg := make([]*registryv1.ConfigEntry, 0, len(s.ownedCfg))
	for _, e := range s.ownedCfg {
		cfg = append(cfg, e)
	}
	lost := s.lost
	s.mu.Unlock()
	start := time.Now()
	s.log.Info("etcd answers again: restoring what it lost", "outage", start.Sub(lost).Round(time.Millisecond), "accepted_instances", len(owned))
	var created atomic.Int64
	err := catalog.Parallel(ctx, s.o.RestoreConcurrency, owned, func(ctx context.Context, in *registryv1.Instance) error {
		v, err := proto.Marshal(in)
		if err != nil {
			return err
		}
		cctx, cancel := s.call(ctx)
		defer cancel()
		k := s.instKey(in.Service, in.Id)
		resp, err := s.cli.Txn(cctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).Then(clientv3.OpPut(k, string(v))).Commit()
		if err != nil {
			return errors.Join(catalog.ErrUnavailable, err)
		}
		if resp.Succeeded {
			created.Add(1)
		}
		return nil
	})
	if err == nil {
		// Configuration entries (policies, jobs) the same way: created
		// only where etcd has none.
		err = catalog.Parallel(ctx, s.o.RestoreConcurrency, cfg, func(ctx context.Context, e *registryv1.ConfigEntry) error {
			v, err := proto.Marshal(e)
			if err != nil {
				return err
			}
			cctx, cancel := s.call(ctx)
			defer cancel()
			k := s.cfgKey(e.Kind, e.Key)
			if _, err := s.cli.Txn(cctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).Then(clientv3.OpPut(k, string(v))).Commit(); err != nil {
				return errors.Join(catalog.ErrUnavailable, err)
			}
			return nil
		})
	}
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("restore interrupted: it runs again when etcd answers", "restored_instances", created.Load(), "err", err)
		}
		return err
	}
	took := time.Since(start)
	s.mu.Lock()
	s.lost = time.Time{}
	s.mu.Unlock()
	s.obs.Restored(catalog.Restore{Took: took, Instances: int(created.Load())})
	s.log.Info("restore finished", "took", took.Round(time.Millisecond), "restored_instances", created.Load(), "failed", 0)
	return nil
}

// PutConfig stores a configuration entry.
func (s *Store) PutConfig(ctx context.Context, e *registryv1.ConfigEntry) error {
	v, err := proto.Marshal(e)
	if err != nil {
		return err
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	resp, err := s.cli.Put(cctx, s.cfgKey(e.Kind, e.Key), string(v))
	if err != nil {
		return s.unavailable("put config", err)
	}
	s.waitRev(ctx, resp.Header.Revision)
	return nil
}

// DeleteConfig removes a configuration entry.
func (s *Store) DeleteConfig(ctx context.Context, kind, key string) error {
	cctx, cancel := s.call(ctx)
	defer cancel()
	resp, err := s.cli.Delete(cctx, s.cfgKey(kind, key))
	if err != nil {
		return s.unavailable("delete config", err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("%s %q: %w", kind, key, catalog.ErrNotFound)
	}
	s.waitRev(ctx, resp.Header.Revision)
	return nil
}
