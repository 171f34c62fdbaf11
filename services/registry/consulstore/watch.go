package consulstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
)

// pending is a write of this store that Consul's catalog has not shown yet
// (the agent syncs its registrations to the catalog asynchronously), or an
// instance a restore put back. The snapshot shows it at once, so a caller
// reads its own write and watchers see it without waiting for the catalog.
type pending struct {
	inst  *registryv1.Instance // nil: deregistered
	until time.Time
	// restored: put back (or found on the agent) by a restore, not
	// written. The catalog showing the instance in any state resolves it:
	// whatever changed it since is newer.
	restored bool
}

// pendingRecord is a record write of this store that the records query
// has not shown yet.
type pendingRecord struct {
	rec   *registryv1.Record // nil: deleted
	until time.Time
}

// restoreMinInterval is the least time between two blocking queries of
// one loop while a restore runs.
const restoreMinInterval = time.Second

// located is an instance from a health response and the node it is on.
type located struct {
	inst   *registryv1.Instance
	node   string
	modify uint64
}

// query runs blocking queries with fn until ctx ends: fn gets the query
// options and the store's epoch when the query was issued, and returns the
// index to wait on next. Errors mark the store down and back off; going
// down cancels every query in flight, so that each asks again from index 0
// (a new Consul's indexes start low: an old index would block for the
// whole Wait), and the first answer to a query issued while down restores
// what Consul lost. With regress, an index that goes back (a new Consul
// answering on the same address) counts as a loss too.
func (s *Store) query(ctx context.Context, regress bool, fn func(q *api.QueryOptions, epoch uint64) (uint64, error)) {
	var index uint64
	var last time.Time
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		interval := s.o.MinInterval
		s.mu.Lock()
		if s.restoring {
			// Every re-registration changes the catalog: following it at
			// full speed would fetch a busy service's whole list ten times
			// a second from a Consul busy restoring it.
			interval = max(interval, restoreMinInterval)
		}
		s.mu.Unlock()
		if wait := time.Until(last.Add(interval)); wait > 0 && index != 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		last = time.Now()
		s.mu.Lock()
		epoch, down, lost := s.epoch, s.down, s.lost
		s.mu.Unlock()
		qctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(lost, cancel)
		next, err := fn((&api.QueryOptions{WaitIndex: index, WaitTime: s.o.Wait}).WithContext(qctx), epoch)
		stop()
		cancel()
		if err == nil && regress && next < index {
			s.markDown(fmt.Errorf("consul's catalog index went back from %d to %d: it lost its data", index, next))
			index = 0
			continue
		}
		if err == nil && down {
			// Consul is back: restore what it lost before anything else
			// (for as long as the store lives: this loop may end first).
			err = s.restore(s.ctx, epoch)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.markDown(err)
			index = 0
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			case <-s.kick:
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		s.report()
		backoff = 50 * time.Millisecond
		s.mu.Lock()
		moved := s.epoch != epoch
		s.mu.Unlock()
		if next < index || next == 0 || moved {
			// Consul's index went back (a restart), or Consul was lost or
			// restored since the query was issued: start over.
			next = 0
		}
		index = next
	}
}

// mirroring reports whether a response to a query issued in epoch may
// update the accepted set: Consul is up, no loss or restore happened since
// the query was issued, and the store knows its agent. s.mu is held.
func (s *Store) mirroring(epoch uint64) bool {
	return !s.down && epoch == s.epoch && s.agent.Node != ""
}

// catalogLoop follows the list of services; it starts a health query per
// service.
func (s *Store) catalogLoop(ctx context.Context) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		for _, cancel := range s.loops {
			cancel()
		}
		s.mu.Unlock()
	}()
	s.query(ctx, true, func(q *api.QueryOptions, epoch uint64) (uint64, error) {
		names, meta, err := s.c.Catalog().Services(q)
		if err != nil {
			return 0, err
		}
		s.learnAgent(ctx)
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
				delete(s.services, name)
				delete(s.waiting, name)
				s.serviceIx[name] = meta.LastIndex
				s.resolve(name)
				if s.mirroring(epoch) {
					s.mirror(name, nil)
				}
				gone = append(gone, name)
			}
		}
		s.index = max(s.index, meta.LastIndex)
		s.mu.Unlock()
		s.publish(gone...)
		return meta.LastIndex, nil
	})
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
	s.query(ctx, false, func(q *api.QueryOptions, epoch uint64) (uint64, error) {
		entries, meta, err := s.c.Health().Service(name, "", false, q)
		if err != nil {
			return 0, err
		}
		found := make([]located, 0, len(entries))
		next := make(map[string]converted, len(entries))
		for _, e := range entries {
			node := ""
			if e.Node != nil {
				node = e.Node.Node
			}
			key := node + "/" + e.Service.ID
			version := entryVersion(e)
			c, ok := cache[key]
			if !ok || c.version != version {
				c = converted{version: version, inst: toInstance(e)}
			}
			next[key] = c
			if c.inst != nil {
				found = append(found, located{inst: c.inst, node: node, modify: e.Service.ModifyIndex})
			}
		}
		cache = next
		s.mu.Lock()
		if ctx.Err() == nil {
			node := s.agent.Node
			s.services[name] = dedupe(found, node)
			s.serviceIx[name] = meta.LastIndex
			delete(s.waiting, name)
			s.resolve(name)
			if s.mirroring(epoch) {
				local := map[string]*registryv1.Instance{}
				for _, f := range found {
					if f.node == node {
						local[f.inst.Id] = f.inst
					}
				}
				s.mirror(name, local)
			}
		}
		s.index = max(s.index, meta.LastIndex)
		s.mu.Unlock()
		s.publish(name)
		return meta.LastIndex, nil
	})
}

// dedupe returns one instance per id: the same instance can be registered
// on two nodes (the store re-registered it on a new agent while the old
// node is still in the catalog). The one on the store's node wins, else
// the one registered last.
func dedupe(found []located, node string) []*registryv1.Instance {
	best := make(map[string]int, len(found)) // id -> index into found
	out := make([]*registryv1.Instance, 0, len(found))
	for i, f := range found {
		j, dup := best[f.inst.Id]
		if !dup {
			best[f.inst.Id] = i
			continue
		}
		if g := found[j]; preferred(f, g, node) {
			best[f.inst.Id] = i
		}
	}
	for i, f := range found {
		if best[f.inst.Id] == i {
			out = append(out, f.inst)
		}
	}
	return out
}

// preferred reports whether f wins over g, both the same instance.
func preferred(f, g located, node string) bool {
	if fl, gl := f.node == node, g.node == node; fl != gl {
		return fl
	}
	return f.modify > g.modify
}

// recordsLoop follows the records' KV prefix.
func (s *Store) recordsLoop(ctx context.Context) {
	defer s.wg.Done()
	s.query(ctx, false, func(q *api.QueryOptions, epoch uint64) (uint64, error) {
		pairs, meta, err := s.c.KV().List(s.o.Prefix+"records/", q)
		if err != nil {
			return 0, err
		}
		recs := make(map[string]*registryv1.Record, len(pairs))
		for _, p := range pairs {
			r := &registryv1.Record{}
			if proto.Unmarshal(p.Value, r) == nil {
				recs[p.Key] = r
			}
		}
		s.mu.Lock()
		s.records = recs
		s.recordsIx = meta.LastIndex
		s.recLoaded = true
		s.resolveRecords()
		if !s.down && epoch == s.epoch {
			// A mirror of the prefix, with this store's writes on top.
			own := maps.Clone(recs)
			for k, p := range s.pendRecs {
				if p.rec != nil {
					own[k] = p.rec
				} else {
					delete(own, k)
				}
			}
			s.ownedRecs = own
		}
		s.index = max(s.index, meta.LastIndex)
		s.mu.Unlock()
		s.publishRecords()
		return meta.LastIndex, nil
	})
}

// setPending records a write (nil inst: a deregistration); s.mu is held.
func (s *Store) setPending(service, id string, inst *registryv1.Instance) {
	s.addPending(service, id, &pending{inst: inst, until: time.Now().Add(s.o.PendingTTL)})
}

// addPending records a pending entry; s.mu is held.
func (s *Store) addPending(service, id string, p *pending) {
	m := s.pending[service]
	if m == nil {
		m = map[string]*pending{}
		s.pending[service] = m
	}
	m[id] = p
}

// setOwned adds an instance this store wrote to the accepted set; s.mu is
// held.
func (s *Store) setOwned(in *registryv1.Instance) {
	m := s.owned[in.Service]
	if m == nil {
		m = map[string]*owned{}
		s.owned[in.Service] = m
	}
	m[in.Id] = &owned{inst: in, at: time.Now()}
}

// dropOwned removes an instance from the accepted set; s.mu is held.
func (s *Store) dropOwned(service, id string) {
	delete(s.owned[service], id)
	if len(s.owned[service]) == 0 {
		delete(s.owned, service)
	}
}

// ownedInstance returns an instance of the accepted set, or nil.
func (s *Store) ownedInstance(service, id string) *registryv1.Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.owned[service][id]; o != nil {
		return o.inst
	}
	return nil
}

// mirror updates the accepted set from a health response for one service
// that reflects Consul after the last restore: local is the service's
// registry-made instances on the store's agent. They join the set (another
// registry on the same agent may have registered them, or a registry
// before this one); an instance seen there before and missing now was
// deregistered by someone else and leaves it. A write of this store that
// Consul has not shown yet keeps its own state. s.mu is held.
func (s *Store) mirror(service string, local map[string]*registryv1.Instance) {
	p := s.pending[service]
	m := s.owned[service]
	for id, in := range local {
		if w := p[id]; w != nil {
			if o := m[id]; o != nil && w.inst != nil {
				o.seen = true
			}
			continue
		}
		if m == nil {
			m = map[string]*owned{}
			s.owned[service] = m
		}
		m[id] = &owned{inst: in, seen: true}
	}
	for id, o := range m {
		if local[id] == nil && o.seen && p[id] == nil {
			delete(m, id)
		}
	}
	if len(m) == 0 {
		delete(s.owned, service)
	}
}

// catalogIndex returns a service's instances as Consul last reported
// them, by id; s.mu is held.
func (s *Store) catalogIndex(service string) map[string]*registryv1.Instance {
	m := make(map[string]*registryv1.Instance, len(s.services[service]))
	for _, in := range s.services[service] {
		m[in.Id] = in
	}
	return m
}

// resolve drops pending writes the catalog now shows: an instance with
// the same registration time and status, or no instance for a
// deregistration. (Output alone is not compared: the agent syncs a check's
// output to the catalog lazily when its status does not change.) s.mu is
// held.
func (s *Store) resolve(service string) {
	p := s.pending[service]
	if len(p) == 0 {
		delete(s.pending, service)
		return
	}
	cat := s.catalogIndex(service)
	for id, w := range p {
		got := cat[id]
		if w.inst == nil && got == nil || w.restored && got != nil ||
			w.inst != nil && got != nil && proto.Equal(got.UpdatedAt, w.inst.UpdatedAt) && got.Health == w.inst.Health {
			delete(p, id)
		}
	}
	if len(p) == 0 {
		delete(s.pending, service)
	}
}

// resolveRecords drops pending record writes the KV store now shows, and
// expired ones; s.mu is held.
func (s *Store) resolveRecords() {
	now := time.Now()
	for k, p := range s.pendRecs {
		got := s.records[k]
		if now.After(p.until) || p.rec == nil && got == nil || p.rec != nil && got != nil && proto.Equal(got, p.rec) {
			delete(s.pendRecs, k)
		}
	}
}

// shown is a service's instances as the snapshot shows them: Consul's
// catalog with this store's pending writes on top and the accepted
// instances the catalog lacks — all of them while Consul is down or being
// restored, else those it has not shown yet since they were written or put
// back (the agent syncs its registrations to the catalog asynchronously,
// seconds late when Consul is busy: an accepted write never goes missing
// from reads). s.mu is held.
func (s *Store) shown(service string) []*registryv1.Instance {
	cat, p := s.services[service], s.pending[service]
	now := time.Now()
	var lost map[string]*owned
	if s.down {
		lost = s.owned[service]
	} else if s.agent.Node != "" { // else the catalog never confirms a write (mirror)
		for _, o := range s.owned[service] {
			if !o.seen && !o.expired {
				lost = s.owned[service]
				break
			}
		}
	}
	if len(p) == 0 && len(lost) == 0 {
		return cat
	}
	for id, w := range p {
		if now.After(w.until) {
			delete(p, id)
		}
	}
	if len(p) == 0 {
		delete(s.pending, service)
	}
	out := make([]*registryv1.Instance, 0, len(cat)+len(p)+len(lost))
	for _, in := range cat {
		if p[in.Id] == nil {
			out = append(out, in)
		}
	}
	for _, w := range p {
		if w.inst != nil {
			out = append(out, w.inst)
		}
	}
	if len(lost) > 0 {
		have := make(map[string]bool, len(out))
		for _, in := range out {
			have[in.Id] = true
		}
		for id, o := range lost {
			if have[id] || p[id] != nil {
				continue
			}
			if !s.down {
				if o.seen || o.expired {
					continue
				}
				if now.Sub(o.at) > s.o.UnseenTTL {
					o.expired = true
					s.log.Warn("accepted instance never appeared in consul's catalog: no longer shown (a restore still puts it back)", "service", service, "id", id, "after", s.o.UnseenTTL)
					continue
				}
			}
			out = append(out, o.inst)
		}
	}
	return out
}

// shownRecords is the records as the snapshot shows them, built the same
// way as shown; s.mu is held.
func (s *Store) shownRecords() []*registryv1.Record {
	now := time.Now()
	maps.DeleteFunc(s.pendRecs, func(_ string, p *pendingRecord) bool { return now.After(p.until) })
	out := make([]*registryv1.Record, 0, len(s.records)+len(s.pendRecs))
	for k, r := range s.records {
		if s.pendRecs[k] == nil {
			out = append(out, r)
		}
	}
	for _, p := range s.pendRecs {
		if p.rec != nil {
			out = append(out, p.rec)
		}
	}
	if s.down {
		for k, r := range s.ownedRecs {
			if s.records[k] == nil && s.pendRecs[k] == nil {
				out = append(out, r)
			}
		}
	}
	return out
}

// publish pushes the store's view of the named services to the snapshot.
func (s *Store) publish(names ...string) { s.push(false, false, names) }

// publishRecords pushes the store's view of the records to the snapshot.
func (s *Store) publishRecords() { s.push(false, true, nil) }

// publishAll pushes the whole view: after a change of Consul's state (lost,
// restored) and at the first full load.
func (s *Store) publishAll() { s.push(true, true, nil) }

// push publishes a new snapshot (if anything changed) with the named
// services (every service when full) and, with recs, the records; the
// snapshot is stale while Consul is down or being restored. Before the
// first full load nothing is published.
func (s *Store) push(full, recs bool, names []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ready {
		if !s.catLoaded || !s.recLoaded || len(s.waiting) > 0 {
			return
		}
		s.ready = true
		full, recs = true, true
	}
	s.hub.Update(func(u *catalog.Update) {
		if full {
			names = s.allNames(u)
		}
		for _, name := range names {
			u.SetServiceAt(name, s.shown(name), s.serviceIx[name])
		}
		if recs {
			u.SetRecordsAt(s.shownRecords(), s.recordsIx)
		}
		u.AtLeast(s.index)
		u.SetStale(s.down)
	})
}

// allNames is every service the snapshot shows or should show; s.mu is
// held.
func (s *Store) allNames(u *catalog.Update) []string {
	set := map[string]bool{}
	for _, name := range u.Services() {
		set[name] = true
	}
	for name := range s.services {
		set[name] = true
	}
	for name := range s.pending {
		set[name] = true
	}
	if s.down {
		for name := range s.owned {
			set[name] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}
