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
// current (configLoop); this store's own writes show at once (each write
// reads the prefix back from Consul's leader), and what Consul lost is put
// back when it answers again. A response older than the one shown (by
// Consul's index) is not applied, so a slow blocking query never undoes a
// newer write.
type configState struct {
	mu    sync.Mutex
	kv    map[string]*registryv1.ConfigEntry // as Consul last reported, by kind/key
	owned map[string]*registryv1.ConfigEntry // to restore: a mirror of the prefix with our writes on top
	ix    uint64                             // Consul's index of the response shown
	down  bool                               // the last query failed
}

func newConfigState() *configState {
	return &configState{kv: map[string]*registryv1.ConfigEntry{}, owned: map[string]*registryv1.ConfigEntry{}}
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
		// After a failure or a restore (index 0) Consul's index may have
		// gone back: take its answer whatever its index.
		s.applyConfig(pairs, meta.LastIndex, index == 0)
		index = meta.LastIndex
	}
}

// applyConfig installs a response of the configuration prefix, unless it
// is older than the one shown (and not forced), and publishes it.
func (s *Store) applyConfig(pairs api.KVPairs, idx uint64, force bool) {
	c := s.cfg
	kv := make(map[string]*registryv1.ConfigEntry, len(pairs))
	for _, p := range pairs {
		e := &registryv1.ConfigEntry{}
		if proto.Unmarshal(p.Value, e) == nil && s.configKey(e.Kind, e.Key) == p.Key {
			kv[catalog.ConfigKey(e.Kind, e.Key)] = e
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if idx < c.ix && !force {
		return
	}
	c.kv, c.ix = kv, idx
	if !c.down {
		c.owned = maps.Clone(kv)
	}
	s.hub.Update(func(u *catalog.Update) {
		by := map[string][]*registryv1.ConfigEntry{}
		for _, e := range kv {
			by[e.Kind] = append(by[e.Kind], e)
		}
		for _, kind := range catalog.ConfigKinds {
			u.SetConfigAt(kind, by[kind], idx)
		}
	})
}

// readBack reads the configuration prefix from Consul's leader after a
// write of this store, so the write shows in the snapshot when the call
// returns. A failure only delays it to the next blocking query.
func (s *Store) readBack(ctx context.Context) {
	cctx, cancel := s.call(ctx)
	defer cancel()
	pairs, meta, err := s.c.KV().List(s.configPrefix(), (&api.QueryOptions{RequireConsistent: true}).WithContext(cctx))
	if err != nil {
		return
	}
	s.applyConfig(pairs, meta.LastIndex, false)
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
	s.cfg.mu.Lock()
	s.cfg.owned[catalog.ConfigKey(e.Kind, e.Key)] = e
	s.cfg.mu.Unlock()
	s.accepted()
	s.readBack(ctx)
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
	s.cfg.mu.Lock()
	delete(s.cfg.owned, catalog.ConfigKey(kind, key))
	s.cfg.mu.Unlock()
	s.accepted()
	s.readBack(ctx)
	return nil
}
