package resolver

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// rrlAction is what response rate limiting decides for one UDP response.
type rrlAction int

const (
	rrlSend rrlAction = iota // within the rate
	rrlSlip                  // over the rate: send an empty truncated reply
	rrlDrop                  // over the rate: send nothing
)

const (
	// defaultRRLRate is --rrl-rate's default: responses per second per
	// client prefix, BIND's usual responses-per-second (BIND counts per
	// prefix and answer, we per prefix). Loopback clients are exempt
	// (--rrl-exempt-loopback).
	defaultRRLRate = 20
	rrlShards      = 32
	// rrlMaxPerShard bounds the table; when a shard is full its idle
	// buckets are dropped, and if none are idle it is cleared.
	rrlMaxPerShard = 4096
	// rrlSlipEvery: every n-th limited response slips (TC=1) so a real
	// client behind a spoofed prefix can still get through over TCP.
	rrlSlipEvery = 2
)

type rrlBucket struct {
	tokens float64
	last   int64 // unix nanoseconds
	over   uint32
}

type rrlShard struct {
	mu sync.Mutex
	m  map[[16]byte]*rrlBucket
}

// limiter limits UDP responses per client prefix (IPv4 /24, IPv6 /56) to
// rate per second with a burst of one second's worth; with exemptLoopback,
// loopback clients are never limited (rrlExempt).
type limiter struct {
	rate           float64
	exemptLoopback bool
	shards         [rrlShards]rrlShard
	limited        atomic.Uint64
}

func newLimiter(rate float64, exemptLoopback bool) *limiter {
	l := &limiter{rate: rate, exemptLoopback: exemptLoopback}
	for i := range l.shards {
		l.shards[i].m = map[[16]byte]*rrlBucket{}
	}
	return l
}

// prefixKey masks a client address to its limiting prefix.
func prefixKey(a netip.Addr) [16]byte {
	a = a.Unmap()
	k := a.As16()
	if a.Is4() {
		k[15] = 0
	} else {
		clear(k[7:])
	}
	return k
}

// rrlExempt reports whether responses to client are exempt from rate
// limiting: loopback addresses (127.0.0.0/8, ::1, also IPv4-mapped), the
// host's own tools, health checks and benchmarks. They cannot be forged
// from outside the host (the kernel drops packets with a loopback source
// arriving on other interfaces), so a reflection attack cannot use them.
func rrlExempt(client netip.Addr) bool {
	return client.Unmap().IsLoopback()
}

// check accounts one response to client and says what to do with it.
func (l *limiter) check(client netip.Addr, now time.Time) rrlAction {
	if l.exemptLoopback && rrlExempt(client) {
		return rrlSend
	}
	k := prefixKey(client)
	s := &l.shards[(uint32(k[12])^uint32(k[13])<<8^uint32(k[14])<<16^uint32(k[5])<<3^uint32(k[6]))%rrlShards]
	ns := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.m[k]
	if b == nil {
		if len(s.m) >= rrlMaxPerShard {
			l.sweepLocked(s, ns)
		}
		b = &rrlBucket{tokens: l.rate, last: ns}
		s.m[k] = b
	}
	b.tokens = min(l.rate, b.tokens+float64(ns-b.last)/1e9*l.rate)
	b.last = ns
	if b.tokens >= 1 {
		b.tokens--
		return rrlSend
	}
	l.limited.Add(1)
	b.over++
	if b.over%rrlSlipEvery == 0 {
		return rrlSlip
	}
	return rrlDrop
}

func (l *limiter) sweepLocked(s *rrlShard, ns int64) {
	for k, b := range s.m {
		if b.tokens+float64(ns-b.last)/1e9*l.rate >= l.rate {
			delete(s.m, k)
		}
	}
	if len(s.m) >= rrlMaxPerShard {
		clear(s.m)
	}
}

// sweep drops idle buckets; the server calls it periodically.
func (l *limiter) sweep(now time.Time) {
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		l.sweepLocked(s, now.UnixNano())
		s.mu.Unlock()
	}
}
