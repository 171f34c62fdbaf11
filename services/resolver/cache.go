package resolver

import (
	"container/list"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Cache TTL bounds: positive answers are kept at most maxCacheTTL, negative
// ones (RFC 2308) at most maxNegativeTTL.
const (
	maxCacheTTL    = 3600
	maxNegativeTTL = 900
	cacheShards    = 16
)

type cacheKey struct {
	name  string // lower case
	qtype uint16
}

type cacheEntry struct {
	key      cacheKey
	p        *prepared
	stored   int64 // unix nanoseconds
	expires  int64
	negative bool
	elem     *list.Element
	used     atomic.Bool // hit since it last moved to the front
}

type cacheShard struct {
	mu  sync.RWMutex
	m   map[cacheKey]*cacheEntry
	lru list.List // front: newest or most recently given a second chance
}

// cache holds forwarded responses, packed, until their smallest TTL runs
// out; TTLs served from it count down. It is bounded and sharded; hits
// take only a read lock and mark the entry used, and eviction gives used
// entries a second chance (CLOCK), which approximates least recently used.
type cache struct {
	perShard  int
	shards    [cacheShards]cacheShard
	hits      atomic.Uint64
	misses    atomic.Uint64
	evictions atomic.Uint64
	negative  atomic.Int64
	entries   atomic.Int64
}

// newCache returns a cache of at most size entries (0 disables it).
func newCache(size int) *cache {
	c := &cache{perShard: (size + cacheShards - 1) / cacheShards}
	for i := range c.shards {
		c.shards[i].m = map[cacheKey]*cacheEntry{}
	}
	return c
}

func (c *cache) capacity() int { return c.perShard * cacheShards }

func (c *cache) shard(name string) *cacheShard {
	var h uint32 = 2166136261
	for i := 0; i < len(name); i++ {
		h = (h ^ uint32(name[i])) * 16777619
	}
	return &c.shards[h%cacheShards]
}

// get returns the entry for (name, qtype) and the whole seconds since it
// was stored, or nil. It counts hits; the caller counts a miss (miss) when
// it goes upstream, so a query that misses on the UDP fast path and again
// on the full path is one miss.
func (c *cache) get(name string, qtype uint16, now time.Time) (*prepared, uint32) {
	if c.perShard == 0 {
		return nil, 0
	}
	k := cacheKey{name, qtype}
	s := c.shard(name)
	ns := now.UnixNano()
	s.mu.RLock()
	e := s.m[k]
	if e == nil || ns >= e.expires {
		s.mu.RUnlock()
		if e != nil {
			s.mu.Lock()
			if s.m[k] == e {
				c.removeLocked(s, e)
			}
			s.mu.Unlock()
		}
		return nil, 0
	}
	if !e.used.Load() {
		e.used.Store(true)
	}
	p, stored := e.p, e.stored
	s.mu.RUnlock()
	c.hits.Add(1)
	return p, uint32((ns - stored) / int64(time.Second))
}

// miss counts a name asked upstream for want of a cache entry.
func (c *cache) miss() { c.misses.Add(1) }

func (c *cache) removeLocked(s *cacheShard, e *cacheEntry) {
	delete(s.m, e.key)
	s.lru.Remove(e.elem)
	c.entries.Add(-1)
	if e.negative {
		c.negative.Add(-1)
	}
}

// cacheTTL returns how long m may be cached and whether it is a negative
// answer; ok is false when it must not be cached.
func cacheTTL(m *dns.Msg) (ttl uint32, negative, ok bool) {
	switch m.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		return 0, false, false
	}
	if m.Truncated {
		return 0, false, false
	}
	if m.Rcode == dns.RcodeNameError || len(m.Answer) == 0 {
		// RFC 2308: the negative TTL is min(SOA TTL, SOA MINIMUM); no SOA,
		// no caching.
		for _, rr := range m.Ns {
			if soa, isSOA := rr.(*dns.SOA); isSOA {
				t := min(soa.Hdr.Ttl, soa.Minttl, maxNegativeTTL)
				return t, true, t > 0
			}
		}
		return 0, true, false
	}
	ttl = maxCacheTTL
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			ttl = min(ttl, rr.Header().Ttl)
		}
	}
	return ttl, false, ttl > 0
}

// put stores p for ttl seconds.
func (c *cache) put(name string, qtype uint16, p *prepared, ttl uint32, negative bool, now time.Time) {
	if c.perShard == 0 || ttl == 0 {
		return
	}
	k := cacheKey{name, qtype}
	s := c.shard(name)
	e := &cacheEntry{key: k, p: p, stored: now.UnixNano(), expires: now.Add(time.Duration(ttl) * time.Second).UnixNano(), negative: negative}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.m[k]; old != nil {
		c.removeLocked(s, old)
	}
	for len(s.m) >= c.perShard {
		oldest := s.lru.Back().Value.(*cacheEntry)
		if oldest.used.Swap(false) && oldest.expires > e.stored {
			s.lru.MoveToFront(oldest.elem) // second chance
			continue
		}
		c.removeLocked(s, oldest)
		c.evictions.Add(1)
	}
	e.elem = s.lru.PushFront(e)
	s.m[k] = e
	c.entries.Add(1)
	if negative {
		c.negative.Add(1)
	}
}

// flush removes every entry of name (any type), or everything when name
// is empty, and returns how many went.
func (c *cache) flush(name string) uint64 {
	var n uint64
	shards := c.shards[:]
	if name != "" {
		name = lowerASCII(dns.Fqdn(name))
	}
	for i := range shards {
		s := &shards[i]
		if name != "" && s != c.shard(name) {
			continue
		}
		s.mu.Lock()
		for k, e := range s.m {
			if name == "" || k.name == name {
				c.removeLocked(s, e)
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}
