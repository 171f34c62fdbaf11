package consulstore

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
)

// configState is the store's view of the configuration entries (balancer
// policies, prober jobs) under <prefix>config/<kind>/<key>, one protobuf
// ConfigEntry per KV pair. One blocking query on that prefix keeps it
// current (configLoop); like the records, this store's own writes show at
// once, and what Consul lost is put back when it answers again.
type configState struct {
	mu      sync.Mutex
	kv      map[string]*registryv1.ConfigEntry // as Consul last reported, by kind/key
	pending map[string]*pendingConfig          // by kind/key: our writes Consul has not shown yet
	owned   map[string]*registryv1.ConfigEntry // to restore: a mirror of the prefix with our writes on top
	ix      uint64                             // Consul's index of the last response
	down    bool                               // the last query failed
}

// pendingConfig is a configuration write of this store that the query has
// not shown yet.
type pendingConfig struct {
	e     *registryv1.ConfigEntry // nil: deleted
	until time.Time
}

func newConfigState() *configState {
	return &configState{kv: map[string]*registryv1.ConfigEntry{}, pending: map[string]*pendingConfig{}, owned: map[string]*registryv1.ConfigEntry{}}
}

func (s *Store) configPrefix() string { return s.o.Prefix + "config/" }

func (s *Store) configKey(kind, key string) string {
	return s.configPrefix() + catalog.ConfigKey(kind, key)
}

// configLoop follows the configuration prefix with blocking queries until
// ctx ends. The first answer after a failure (or after Consul's index went
// back: a Consul that lost its data) first puts back the entries Consul
// lacks, each only where no entry exists, so an entry another registry
// wrote meanwhile wins.
func (s *Store) configLoop(ctx context.Context) {
	defer s.wg.Done()
	c := s.cfg
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
		pairs, meta, err := s.c.KV().List(s.configPrefix(), q)
		if err == nil {
			c.mu.Lock()
			lost := c.down || meta.LastIndex < index
			c.mu.Unlock()
			if lost {
				if err = s.restoreConfig(ctx, pairs); err == nil {
					index = 0
					continue // read again what the restore wrote
				}
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			c.down = true
			c.mu.Unlock()
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
		kv := make(map[string]*registryv1.ConfigEntry, len(pairs))
		for _, p := range pairs {
			e := &registryv1.ConfigEntry{}
			if proto.Unmarshal(p.Value, e) == nil && s.configKey(e.Kind, e.Key) == p.Key {
				kv[catalog.ConfigKey(e.Kind, e.Key)] = e
			}
		}
		c.mu.Lock()
		c.kv, c.ix = kv, meta.LastIndex
		now := time.Now()
		for k, p := range c.pending {
			got := kv[k]
			if now.After(p.until) || p.e == nil && got == nil || p.e != nil && got != nil && proto.Equal(got, p.e) {
				delete(c.pending, k)
			}
		}
		own := maps.Clone(kv)
		for k, p := range c.pending {
			if p.e != nil {
				own[k] = p.e
			} else {
				delete(own, k)
			}
		}
		c.owned = own
		c.mu.Unlock()
		s.publishConfig(meta.LastIndex)
		index = meta.LastIndex
	}
}

// restoreConfig puts back the accepted entries pairs (Consul's answer)
// lack, with a check-and-set that creates only.
func (s *Store) restoreConfig(ctx context.Context, pairs api.KVPairs) error {
	c := s.cfg
	have := make(map[string]bool, len(pairs))
	for _, p := range pairs {
		have[p.Key] = true
	}
	c.mu.Lock()
	var missing []*registryv1.ConfigEntry
	for _, e := range c.owned {
		if !have[s.configKey(e.Kind, e.Key)] {
			missing = append(missing, e)
		}
	}
	c.mu.Unlock()
	err := catalog.Parallel(ctx, s.o.RestoreConcurrency, missing, func(ctx context.Context, e *registryv1.ConfigEntry) error {
		v, err := proto.Marshal(e)
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, s.o.RestoreTimeout)
		defer cancel()
		if _, _, err := s.c.KV().CAS(&api.KVPair{Key: s.configKey(e.Kind, e.Key), Value: v, ModifyIndex: 0}, (&api.WriteOptions{}).WithContext(cctx)); err != nil {
			return classify("restore config", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		s.log.Info("consul configuration restored", "entries", len(missing))
	}
	c.mu.Lock()
	c.down = false
	c.mu.Unlock()
	return nil
}

// shownConfig is the configuration as the snapshot shows it: Consul's
// answer with this store's pending writes on top, by kind. c.mu is held.
func (c *configState) shownConfig() map[string][]*registryv1.ConfigEntry {
	now := time.Now()
	maps.DeleteFunc(c.pending, func(_ string, p *pendingConfig) bool { return now.After(p.until) })
	out := map[string][]*registryv1.ConfigEntry{}
	for k, e := range c.kv {
		if c.pending[k] == nil {
			out[e.Kind] = append(out[e.Kind], e)
		}
	}
	for _, p := range c.pending {
		if p.e != nil {
			out[p.e.Kind] = append(out[p.e.Kind], p.e)
		}
	}
	return out
}

// publishConfig pushes the configuration to the snapshot; idx is Consul's
// index of the answer it comes from (0 for a write of this store).
func (s *Store) publishConfig(idx uint64) {
	c := s.cfg
	c.mu.Lock()
	defer c.mu.Unlock()
	shown := c.shownConfig()
	s.hub.Update(func(u *catalog.Update) {
		for _, kind := range catalog.ConfigKinds {
			u.SetConfigAt(kind, shown[kind], idx)
		}
	})
}

// PutConfig stores a configuration entry in the KV store.
func (s *Store) PutConfig(ctx context.Context, e *registryv1.ConfigEntry) error {
	v, err := proto.Marshal(e)
	if err != nil {
		return err
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	if _, err := s.c.KV().Put(&api.KVPair{Key: s.configKey(e.Kind, e.Key), Value: v}, (&api.WriteOptions{}).WithContext(cctx)); err != nil {
		return classify("put config", err)
	}
	k := catalog.ConfigKey(e.Kind, e.Key)
	s.cfg.mu.Lock()
	s.cfg.owned[k] = e
	s.cfg.pending[k] = &pendingConfig{e: e, until: time.Now().Add(s.o.PendingTTL)}
	s.cfg.mu.Unlock()
	s.accepted()
	s.publishConfig(0)
	return nil
}

// DeleteConfig removes a configuration entry from the KV store.
func (s *Store) DeleteConfig(ctx context.Context, kind, key string) error {
	if s.hub.Snapshot().ConfigEntry(kind, key) == nil {
		return fmt.Errorf("%s %q: %w", kind, key, catalog.ErrNotFound)
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	if _, err := s.c.KV().Delete(s.configKey(kind, key), (&api.WriteOptions{}).WithContext(cctx)); err != nil {
		return classify("delete config", err)
	}
	k := catalog.ConfigKey(kind, key)
	s.cfg.mu.Lock()
	delete(s.cfg.owned, k)
	s.cfg.pending[k] = &pendingConfig{until: time.Now().Add(s.o.PendingTTL)}
	s.cfg.mu.Unlock()
	s.accepted()
	s.publishConfig(0)
	return nil
}
