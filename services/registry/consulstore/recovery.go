package consulstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
)

// agentID identifies the Consul agent the store talks to. A recreated
// agent (a new container) has a new node name; a dev agent started afresh
// has a new node ID.
type agentID struct {
	Node string // node name
	ID   string // node ID
}

// restoreProgress is the state of the restore under way: it may take
// several attempts when Consul fails again meanwhile.
type restoreProgress struct {
	began              time.Time    // first attempt; zero when no restore is under way
	instances, records atomic.Int64 // put back, over every attempt
	failed             atomic.Int64 // refused by Consul in the last attempt
	mu                 sync.Mutex
	refused            map[string]bool // service IDs Consul refused in the last attempt
}

// askAgent asks the agent for its node name and ID, bounded by timeout.
func (s *Store) askAgent(ctx context.Context, timeout time.Duration) (agentID, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var self struct {
		Config struct{ NodeName, NodeID string }
	}
	if _, err := s.c.Raw().Query("/v1/agent/self", &self, (&api.QueryOptions{}).WithContext(cctx)); err != nil {
		return agentID{}, err
	}
	if self.Config.NodeName == "" {
		return agentID{}, errors.New("consul /v1/agent/self has no node name")
	}
	return agentID{Node: self.Config.NodeName, ID: self.Config.NodeID}, nil
}

// learnAgent asks the agent who it is at start-up, until it answers (or
// refuses: then only this store's own writes are restored). Every restore
// asks again.
func (s *Store) learnAgent(ctx context.Context) {
	s.mu.Lock()
	asked := s.agentTry
	s.mu.Unlock()
	if asked {
		return
	}
	id, err := s.askAgent(ctx, s.o.Timeout)
	if err != nil && !refused(err) {
		return // unreachable: a later catalog response asks again
	}
	s.mu.Lock()
	s.agent, s.agentTry = id, true
	s.mu.Unlock()
	if err != nil {
		s.log.Warn("consul agent does not say who it is (the token needs agent read): after a consul loss this registry restores only its own writes", "addr", s.addr, "err", err)
		return
	}
	s.log.Info("consul connected", "addr", s.addr, "node", id.Node, "node_id", id.ID)
}

// report tells the observer when Consul's reachability changed.
func (s *Store) report() {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	s.mu.Lock()
	up := !s.down
	s.mu.Unlock()
	if up != s.up {
		s.up = up
		s.obs.BackendUp(up)
	}
}

// markDown marks Consul lost: the snapshot goes stale (keeping the
// accepted set in view), the accepted set stops following the catalog, and
// the next answer from Consul starts a restore.
func (s *Store) markDown(cause error) {
	s.mu.Lock()
	was := s.down
	if !was {
		s.down, s.downAt = true, time.Now()
		s.epoch++
		s.markLost()
		s.lost, s.markLost = context.WithCancel(context.Background())
	}
	n := 0
	for _, m := range s.owned {
		n += len(m)
	}
	s.mu.Unlock()
	if was {
		return
	}
	s.log.Warn("consul lost: reads answer from the last catalog (stale), writes fail until it is back", "addr", s.addr, "accepted_instances", n, "err", cause)
	s.report()
	s.publishAll()
}

// restore puts back what Consul lost, once it answers again: it learns the
// agent's identity (a new agent may have a new node name), lists what the
// agent and the KV store hold, and re-registers the accepted instances and
// records they lack, at most RestoreConcurrency calls at once. An instance
// or record Consul refuses is logged and kept for the next restore; any
// other failure interrupts the restore, which resumes (without redoing
// what it put back) at Consul's next answer. When it ends the snapshot is
// fresh again. It runs on an answer to a query issued in epoch, while the
// store was down already (an answer to an earlier query says nothing of
// Consul now). Only one loop restores; the others carry on.
func (s *Store) restore(ctx context.Context, epoch uint64) error {
	if !s.restoreMu.TryLock() {
		return nil
	}
	defer s.restoreMu.Unlock()
	s.mu.Lock()
	down, downAt := s.down && s.epoch == epoch, s.downAt
	s.mu.Unlock()
	if !down {
		return nil
	}
	s.mu.Lock()
	s.restoring = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.restoring = false
		s.mu.Unlock()
	}()
	p := &s.progress
	if p.began.IsZero() {
		p.began = time.Now()
		p.instances.Store(0)
		p.records.Store(0)
	}
	// What was put back counts over every attempt; what Consul refused,
	// over the last one (an attempt tries every refusal again).
	p.refused = map[string]bool{}
	p.failed.Store(0)
	if err := s.restoreOnce(ctx, downAt); err != nil {
		if ctx.Err() == nil {
			s.log.Warn("restore interrupted: it resumes when consul answers again", "restored_instances", p.instances.Load(), "restored_records", p.records.Load(), "err", err)
		}
		return err
	}
	took := time.Since(p.began)
	r := catalog.Restore{Took: took, Instances: int(p.instances.Load()), Records: int(p.records.Load()), Failed: int(p.failed.Load())}
	s.mu.Lock()
	// Accepted instances the catalog does not show yet stay in view until
	// it does (bounded by PendingTTL), now that the snapshot is fresh.
	until := time.Now().Add(s.o.PendingTTL)
	for service, m := range s.owned {
		cat := s.catalogIndex(service)
		for id, o := range m {
			if cat[id] == nil && s.pending[service][id] == nil && !p.refused[serviceID(service, id)] {
				s.addPending(service, id, &pending{inst: o.inst, until: until, restored: true})
			}
		}
	}
	s.down = false
	s.epoch++
	s.mu.Unlock()
	p.began = time.Time{}
	s.report()
	s.obs.Restored(r)
	level := slog.LevelInfo
	if r.Failed > 0 {
		level = slog.LevelWarn
	}
	s.log.Log(ctx, level, "restore finished", "took", took.Round(time.Millisecond), "restored_instances", r.Instances, "restored_records", r.Records, "failed", r.Failed)
	s.publishAll()
	return nil
}

// restoreOnce is one attempt of restore.
func (s *Store) restoreOnce(ctx context.Context, downAt time.Time) error {
	id, err := s.askAgent(ctx, s.o.RestoreTimeout)
	if err != nil {
		if !refused(err) {
			return classify("agent self", err)
		}
		s.log.Warn("consul agent does not say who it is (the token needs agent read on its new node?): the registry restores what it accepted but no longer learns from the catalog what other registries deregistered", "addr", s.addr, "err", err)
	}
	s.mu.Lock()
	was := s.agent
	s.agent, s.agentTry = id, true
	var insts []*registryv1.Instance
	for _, m := range s.owned {
		for _, o := range m {
			// Confirm again on this agent before believing a deregistration;
			// reads show it until the catalog does.
			o.seen, o.at, o.expired = false, time.Now(), false
			insts = append(insts, o.inst)
		}
	}
	recs := maps.Clone(s.ownedRecs)
	s.mu.Unlock()
	switch {
	case was.Node != "" && was.Node != id.Node:
		s.log.Warn("consul agent changed: restoring this registry's instances on the new node", "node", id.Node, "node_id", id.ID, "was_node", was.Node, "was_node_id", was.ID)
	case was.ID != "" && was.ID != id.ID:
		s.log.Info("consul agent restarted with a new node ID", "node", id.Node, "node_id", id.ID, "was_node_id", was.ID)
	}

	cctx, cancel := context.WithTimeout(ctx, s.o.RestoreTimeout)
	have, err := s.c.Agent().ServicesWithFilterOpts("", (&api.QueryOptions{}).WithContext(cctx))
	cancel()
	if err != nil {
		return classify("list agent services", err)
	}
	cctx, cancel = context.WithTimeout(ctx, s.o.RestoreTimeout)
	keys, _, err := s.c.KV().Keys(s.o.Prefix+"records/", "", (&api.QueryOptions{}).WithContext(cctx))
	cancel()
	if err != nil {
		return classify("list records", err)
	}
	var jobs []restoreJob
	for _, in := range insts {
		if older(have[serviceID(in.Service, in.Id)], in) {
			jobs = append(jobs, restoreJob{inst: in})
		}
	}
	missingInsts := len(jobs)
	present := make(map[string]bool, len(keys))
	for _, k := range keys {
		present[k] = true
	}
	for k, r := range recs {
		if !present[k] {
			jobs = append(jobs, restoreJob{key: k, rec: r})
		}
	}
	s.log.Info("consul answers again: restoring what it lost", "outage", time.Since(downAt).Round(time.Millisecond),
		"node", id.Node, "accepted_instances", len(insts), "missing_instances", missingInsts,
		"accepted_records", len(recs), "missing_records", len(jobs)-missingInsts)
	return catalog.Parallel(ctx, s.o.RestoreConcurrency, jobs, func(ctx context.Context, j restoreJob) error {
		if j.inst != nil {
			return s.restoreInstance(ctx, j.inst)
		}
		return s.restoreRecord(ctx, j.key, j.rec)
	})
}

// older reports whether the agent lacks an accepted instance, or holds an
// earlier registration of it (by registration time: a later one, made
// through another registry, is left alone).
func older(have *api.AgentService, in *registryv1.Instance) bool {
	if have == nil {
		return true
	}
	t, err := time.Parse(time.RFC3339Nano, have.Meta[metaUpdated])
	return err == nil && t.Before(in.UpdatedAt.AsTime())
}

// restoreJob is an instance or a record to put back.
type restoreJob struct {
	inst *registryv1.Instance
	key  string
	rec  *registryv1.Record
}

// refused reports whether Consul answered a call with a refusal that
// trying again will not change (bad request, permission denied), as
// opposed to being unreachable or overloaded.
func refused(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code >= 400 && se.Code < 500 &&
		se.Code != http.StatusRequestTimeout && se.Code != http.StatusTooManyRequests
}

// retry calls fn, each call bounded by RestoreTimeout, up to three times
// while it fails for a reason other than a refusal (an overloaded Consul
// times out a call now and then: one slow call must not start the whole
// restore over).
func (s *Store) retry(ctx context.Context, fn func(context.Context) error) error {
	var err error
	for attempt, delay := 0, 100*time.Millisecond; attempt < 3; attempt, delay = attempt+1, 2*delay {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(delay):
			}
		}
		cctx, cancel := context.WithTimeout(ctx, s.o.RestoreTimeout)
		err = fn(cctx)
		cancel()
		if err == nil || refused(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// restoreInstance puts back one accepted instance, unless it was written
// through this store since the restore listed it (that write put it back,
// or removed it).
func (s *Store) restoreInstance(ctx context.Context, in *registryv1.Instance) error {
	defer s.lockInstance(in.Service, in.Id)()
	s.mu.Lock()
	o := s.owned[in.Service][in.Id]
	s.mu.Unlock()
	if o == nil || o.inst != in {
		return nil
	}
	if err := s.retry(ctx, func(ctx context.Context) error { return s.putBack(ctx, in) }); err != nil {
		if !refused(err) {
			return classify("re-register "+serviceID(in.Service, in.Id), err)
		}
		s.progress.failed.Add(1)
		s.progress.mu.Lock()
		s.progress.refused[serviceID(in.Service, in.Id)] = true
		s.progress.mu.Unlock()
		s.log.Warn("instance not restored: consul refused it; the next restore tries again", "service", in.Service, "id", in.Id, "err", err)
		return nil
	}
	s.progress.instances.Add(1)
	return nil
}

// restoreRecord puts back one record unless it exists again or was
// deleted through this store meanwhile.
func (s *Store) restoreRecord(ctx context.Context, key string, r *registryv1.Record) error {
	s.recMu.RLock()
	defer s.recMu.RUnlock()
	s.mu.Lock()
	cur := s.ownedRecs[key]
	s.mu.Unlock()
	if cur != r {
		return nil
	}
	v, err := proto.Marshal(r)
	if err != nil {
		return fmt.Errorf("record %s: %w", key, err)
	}
	var ok bool
	err = s.retry(ctx, func(ctx context.Context) (err error) {
		ok, _, err = s.c.KV().CAS(&api.KVPair{Key: key, Value: v, ModifyIndex: 0}, (&api.WriteOptions{}).WithContext(ctx))
		return err
	})
	switch {
	case err != nil && refused(err):
		s.progress.failed.Add(1)
		s.log.Warn("record not restored: consul refused it; the next restore tries again", "key", key, "err", err)
	case err != nil:
		return classify("restore record "+key, err)
	case ok:
		s.progress.records.Add(1)
	}
	return nil
}
