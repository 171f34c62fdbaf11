package netx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Pool defaults, used when the matching PoolOptions field is zero.
const (
	DefaultMaxIdlePerKey   = 16
	DefaultPoolIdleTimeout = 90 * time.Second
)

// ErrPoolClosed is returned by Get after Close.
var ErrPoolClosed = errors.New("netx: pool closed")

// PoolOptions configure a Pool.
type PoolOptions struct {
	// Dial opens a new connection for key; it should bound its own time, as
	// Dialer does. Nil means dialing key as a TCP address with a zero
	// Dialer.
	Dial func(ctx context.Context, key string) (net.Conn, error)
	// MaxIdlePerKey bounds the idle connections kept for one key; putting
	// one more closes the longest-idle one. Zero means DefaultMaxIdlePerKey.
	MaxIdlePerKey int
	// MaxIdle bounds the idle connections kept across all keys; a Put
	// beyond it closes the connection put. Zero means no bound beyond the
	// per-key one.
	MaxIdle int
	// IdleTimeout closes connections left idle this long. Zero means
	// DefaultPoolIdleTimeout; negative means no limit.
	IdleTimeout time.Duration
	// MaxLifetime stops connections older than this from being reused.
	// Zero means no limit.
	MaxLifetime time.Duration
}

// Pool keeps idle connections per key (typically a backend address) for
// reuse. Get hands out the most recently used idle connection that is
// still healthy, or dials a new one; Put returns it for reuse. Idle
// connections whose peer has closed them, or which hold unexpected unread
// bytes, are found with a non-blocking peek and discarded. A background
// sweeper, stopped by Close, closes connections that outstay IdleTimeout
// or MaxLifetime.
type Pool struct {
	dial        func(ctx context.Context, key string) (net.Conn, error)
	maxPerKey   int
	maxIdle     int
	idleTimeout time.Duration
	maxLifetime time.Duration
	now         func() time.Time // replaced in tests

	mu     sync.Mutex
	idle   map[string][]*PoolConn // oldest first
	nidle  int
	closed bool

	stop      chan struct{}
	swept     sync.WaitGroup
	closeOnce sync.Once

	hits, dials, dialErrors, dead, expired, overflow atomic.Uint64
}

// PoolStats is a snapshot of a Pool's counters.
type PoolStats struct {
	Idle       int    // connections idle in the pool now
	Hits       uint64 // Gets served from an idle connection
	Dials      uint64 // connections dialed
	DialErrors uint64 // dials that failed
	Dead       uint64 // idle connections found closed by the peer or holding unread bytes
	Expired    uint64 // connections closed for IdleTimeout or MaxLifetime
	Overflow   uint64 // connections closed because the idle bounds were reached
}

// NewPool returns a pool configured by opts. Close it to stop its sweeper
// and close its idle connections.
func NewPool(opts PoolOptions) *Pool {
	p := &Pool{
		dial:        opts.Dial,
		maxPerKey:   opts.MaxIdlePerKey,
		maxIdle:     opts.MaxIdle,
		idleTimeout: opts.IdleTimeout,
		maxLifetime: opts.MaxLifetime,
		now:         time.Now,
		idle:        make(map[string][]*PoolConn),
		stop:        make(chan struct{}),
	}
	if p.dial == nil {
		d := &Dialer{}
		p.dial = func(ctx context.Context, key string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", key)
		}
	}
	if p.maxPerKey <= 0 {
		p.maxPerKey = DefaultMaxIdlePerKey
	}
	if p.idleTimeout == 0 {
		p.idleTimeout = DefaultPoolIdleTimeout
	}
	interval := time.Duration(0)
	for _, d := range []time.Duration{p.idleTimeout, p.maxLifetime} {
		if d > 0 && (interval == 0 || d/2 < interval) {
			interval = d / 2
		}
	}
	if interval > 0 {
		p.swept.Add(1)
		go p.sweeper(max(interval, time.Millisecond))
	}
	return p
}

// Get returns an idle connection for key, or dials a new one. The caller
// owns the connection until it hands it back with Put, or closes it when
// it is no longer usable (after an error, or a response that cannot be
// followed by another request).
func (p *Pool) Get(ctx context.Context, key string) (*PoolConn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrPoolClosed
		}
		list := p.idle[key]
		if len(list) == 0 {
			p.mu.Unlock()
			break
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		p.idle[key] = list[:len(list)-1]
		p.nidle--
		c.idle = false
		p.mu.Unlock()

		if p.expiredAt(c, p.now()) {
			p.expired.Add(1)
			c.Conn.Close()
			continue
		}
		if !c.alive() {
			p.dead.Add(1)
			c.Conn.Close()
			continue
		}
		c.reused = true
		p.hits.Add(1)
		return c, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("netx: pool get %s: %w", key, err)
	}
	nc, err := p.dial(ctx, key)
	if err != nil {
		p.dialErrors.Add(1)
		return nil, fmt.Errorf("netx: pool dial %s: %w", key, err)
	}
	p.dials.Add(1)
	c := &PoolConn{Conn: nc, pool: p, key: key, created: p.now()}
	c.initPeek()
	return c, nil
}

// Put returns c to the pool for reuse. It clears c's deadlines. The
// connection is closed instead when the pool is closed, c has outlived
// MaxLifetime or the idle bounds are reached (the longest-idle connection
// for the key makes room). Putting a closed connection, or one already in
// the pool, does nothing.
func (p *Pool) Put(c *PoolConn) {
	if c == nil || c.pool != p || c.closed.Load() {
		return
	}
	if err := c.Conn.SetDeadline(time.Time{}); err != nil {
		c.Close()
		return
	}
	now := p.now()
	p.mu.Lock()
	if c.idle {
		p.mu.Unlock()
		return
	}
	if p.closed {
		p.mu.Unlock()
		c.Close()
		return
	}
	if p.maxLifetime > 0 && now.Sub(c.created) >= p.maxLifetime {
		p.mu.Unlock()
		p.expired.Add(1)
		c.Close()
		return
	}
	list := p.idle[c.key]
	var evict *PoolConn
	switch {
	case len(list) >= p.maxPerKey:
		evict = list[0]
		copy(list, list[1:])
		list = list[:len(list)-1]
		evict.idle = false
		p.nidle--
	case p.maxIdle > 0 && p.nidle >= p.maxIdle:
		p.mu.Unlock()
		p.overflow.Add(1)
		c.Close()
		return
	}
	c.idle = true
	c.idleAt = now
	p.idle[c.key] = append(list, c)
	p.nidle++
	p.mu.Unlock()
	if evict != nil {
		p.overflow.Add(1)
		evict.Close()
	}
}

// Close closes every idle connection, stops the sweeper and makes later
// Gets fail with ErrPoolClosed; connections handed out are closed when
// they are put back. It always returns nil.
func (p *Pool) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		var drop []*PoolConn
		for _, list := range p.idle {
			for _, c := range list {
				c.idle = false
				drop = append(drop, c)
			}
		}
		p.idle = nil
		p.nidle = 0
		p.mu.Unlock()
		close(p.stop)
		p.swept.Wait()
		for _, c := range drop {
			c.Close()
		}
	})
	return nil
}

// Stats returns a snapshot of the pool's counters.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	n := p.nidle
	p.mu.Unlock()
	return PoolStats{
		Idle:       n,
		Hits:       p.hits.Load(),
		Dials:      p.dials.Load(),
		DialErrors: p.dialErrors.Load(),
		Dead:       p.dead.Load(),
		Expired:    p.expired.Load(),
		Overflow:   p.overflow.Load(),
	}
}

func (p *Pool) expiredAt(c *PoolConn, now time.Time) bool {
	return (p.idleTimeout > 0 && now.Sub(c.idleAt) >= p.idleTimeout) ||
		(p.maxLifetime > 0 && now.Sub(c.created) >= p.maxLifetime)
}

func (p *Pool) sweeper(every time.Duration) {
	defer p.swept.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.sweep()
		}
	}
}

// sweep closes idle connections that have expired or that the peer has
// closed. The liveness peeks are non-blocking system calls.
func (p *Pool) sweep() {
	now := p.now()
	var drop []*PoolConn
	var nexpired, ndead uint64
	p.mu.Lock()
	for key, list := range p.idle {
		kept := list[:0]
		for _, c := range list {
			switch {
			case p.expiredAt(c, now):
				nexpired++
			case !c.alive():
				ndead++
			default:
				kept = append(kept, c)
				continue
			}
			c.idle = false
			drop = append(drop, c)
		}
		clear(list[len(kept):])
		if len(kept) == 0 {
			delete(p.idle, key)
		} else {
			p.idle[key] = kept
		}
	}
	p.nidle -= len(drop)
	p.mu.Unlock()
	p.expired.Add(nexpired)
	p.dead.Add(ndead)
	for _, c := range drop {
		c.Close()
	}
}

// PoolConn is a connection handed out by a Pool. Return it with Put (or
// Release) to reuse it; Close closes it for good.
type PoolConn struct {
	net.Conn
	pool    *Pool
	key     string
	created time.Time
	idleAt  time.Time // guarded by pool.mu
	idle    bool      // in the pool; guarded by pool.mu
	reused  bool
	closed  atomic.Bool

	// Liveness peek, set up once per connection so checks do not allocate.
	rc       syscall.RawConn
	peekFn   func(fd uintptr) bool
	peekBuf  [1]byte
	peekLive bool
}

func (c *PoolConn) netxInner() net.Conn { return c.Conn }

// NetConn returns the underlying connection.
func (c *PoolConn) NetConn() net.Conn { return c.Conn }

// Key returns the key the connection was dialed for.
func (c *PoolConn) Key() string { return c.key }

// Reused reports whether the connection came from the idle list rather
// than a fresh dial; a request that fails on a reused connection before
// any reply may be retried on a new one.
func (c *PoolConn) Reused() bool { return c.reused }

// Release returns the connection to its pool; it is c's pool's Put.
func (c *PoolConn) Release() { c.pool.Put(c) }

// Close closes the connection; it will not be reused.
func (c *PoolConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// CloseWrite shuts down the sending side when the connection supports it.
func (c *PoolConn) CloseWrite() error { return closeWrite(c.Conn) }

// ReadFrom lets io.Copy reach the underlying connection's zero-copy path.
func (c *PoolConn) ReadFrom(r io.Reader) (int64, error) { return readFrom(c.Conn, r) }

// WriteTo lets io.Copy reach the underlying connection's zero-copy path.
func (c *PoolConn) WriteTo(w io.Writer) (int64, error) { return writeTo(c.Conn, w) }

// alive reports whether an idle connection can be reused: the peer has not
// closed it and it holds no unread bytes (a response nobody asked for).
// Connections whose socket cannot be reached (such as *tls.Conn) are
// assumed alive.
func (c *PoolConn) alive() bool {
	if c.rc == nil {
		return true
	}
	c.peekLive = false
	if err := c.rc.Read(c.peekFn); err != nil {
		return false
	}
	return c.peekLive
}
