package resolver

import (
	"strings"
	"sync"
)

// Answers lookup builds for names without a precomputed one — names that
// do not exist (NXDOMAIN), names a wildcard covers, names below a zone
// cut, types at a CNAME other than those precomputed — are kept per
// authority snapshot, so a name asked again is answered on the fast path
// like a precomputed one. The snapshot is immutable, so a kept answer is
// exactly what lookup would build again; a new snapshot starts empty.
const (
	synthShards   = 16
	synthPerShard = 512 // 8192 answers per snapshot at most
)

// synthCache is the bounded store of one snapshot's built answers. When
// a shard is full, an arbitrary entry (Go's map iteration order) makes
// room: a flood of distinct names (a random-subdomain attack) costs a
// lookup each, as without the store, and cannot grow it.
type synthCache struct {
	shards [synthShards]synthShard
}

type synthShard struct {
	mu sync.RWMutex
	m  map[cacheKey]*prepared
}

func newSynthCache() *synthCache {
	c := &synthCache{}
	for i := range c.shards {
		c.shards[i].m = make(map[cacheKey]*prepared)
	}
	return c
}

func (c *synthCache) shard(name string) *synthShard {
	var h uint32 = 2166136261
	for i := 0; i < len(name); i++ {
		h = (h ^ uint32(name[i])) * 16777619
	}
	return &c.shards[h%synthShards]
}

// synthesized returns the answer for (name, qtype), name lower case and
// in one of a's zones: kept from an earlier query, or built by lookup and
// kept. name may alias a buffer the caller reuses: it is copied before it
// is kept.
func (a *authority) synthesized(name string, qtype uint16) (*prepared, error) {
	s := a.synth.shard(name)
	s.mu.RLock()
	p := s.m[cacheKey{name, qtype}]
	s.mu.RUnlock()
	if p != nil {
		return p, nil
	}
	name = strings.Clone(name)
	p, err := a.prepareLookup(name, qtype)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if len(s.m) >= synthPerShard {
		for k := range s.m {
			delete(s.m, k)
			break
		}
	}
	s.m[cacheKey{name, qtype}] = p
	s.mu.Unlock()
	return p, nil
}
