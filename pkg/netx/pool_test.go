package netx

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// backend is a loopback server that keeps every connection it accepts.
type backend struct {
	addr  string
	mu    sync.Mutex
	conns map[string]net.Conn // by the client's address
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	l := listenLoopback(t)
	b := &backend{addr: l.Addr().String(), conns: make(map[string]net.Conn)}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns[c.RemoteAddr().String()] = c
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, c := range b.conns {
			c.Close()
		}
	})
	return b
}

// peer returns the server side of the pooled connection c.
func (b *backend) peer(t *testing.T, c net.Conn) net.Conn {
	t.Helper()
	var s net.Conn
	waitFor(t, "backend to accept", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		s = b.conns[c.LocalAddr().String()]
		return s != nil
	})
	return s
}

// closedByPool reports whether the pool closed the client side: the
// server then reads end of stream.
func closedByPool(t *testing.T, server net.Conn) bool {
	t.Helper()
	server.SetReadDeadline(time.Now().Add(testTimeout))
	_, err := server.Read(make([]byte, 1))
	return err == io.EOF
}

func newTestPool(t *testing.T, opts PoolOptions) *Pool {
	t.Helper()
	p := NewPool(opts)
	t.Cleanup(func() { p.Close() })
	return p
}

func mustGet(t *testing.T, p *Pool, key string) *PoolConn {
	t.Helper()
	c, err := p.Get(testContext(t), key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fakeClock replaces the pool's clock.
type fakeClock struct{ ns atomic.Int64 }

func useFakeClock(p *Pool) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	p.now = func() time.Time { return time.Unix(0, c.ns.Load()) }
	return c
}

func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func TestPoolReuseIsLIFO(t *testing.T) {
	be := newBackend(t)
	p := newTestPool(t, PoolOptions{})
	c1, c2 := mustGet(t, p, be.addr), mustGet(t, p, be.addr)
	if c1.Key() != be.addr || Unwrap(c1) != c1.NetConn() {
		t.Fatalf("Key, NetConn = %q, %T", c1.Key(), c1.NetConn())
	}
	if c1.Reused() || c2.Reused() {
		t.Fatal("fresh connections report Reused")
	}
	p.Put(c1)
	p.Put(c2)
	if got := mustGet(t, p, be.addr); got != c2 || !got.Reused() {
		t.Fatalf("first Get = %p (reused %v), want the last put %p", got, got.Reused(), c2)
	}
	if got := mustGet(t, p, be.addr); got != c1 {
		t.Fatalf("second Get = %p, want %p", got, c1)
	}
	s := p.Stats()
	if s.Dials != 2 || s.Hits != 2 || s.Idle != 0 {
		t.Fatalf("stats = %+v, want 2 dials, 2 hits, 0 idle", s)
	}
	// The reused connection still works end to end.
	if _, err := c2.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(be.peer(t, c2), make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
}

func TestPoolIdleBounds(t *testing.T) {
	tests := []struct {
		name         string
		opts         PoolOptions
		keys         int // backends, one key each
		perKey       int // connections put per key
		wantIdle     int
		wantOverflow uint64
		closedFirst  bool // the first connection put is the one closed
	}{
		{"per key keeps the newest", PoolOptions{MaxIdlePerKey: 2}, 1, 3, 2, 1, true},
		{"per key under the bound", PoolOptions{MaxIdlePerKey: 4}, 1, 3, 3, 0, false},
		{"across keys closes the extra", PoolOptions{MaxIdlePerKey: 4, MaxIdle: 3}, 2, 2, 3, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestPool(t, tt.opts)
			var conns []*PoolConn
			var backends []*backend
			for range tt.keys {
				be := newBackend(t)
				backends = append(backends, be)
				for range tt.perKey {
					conns = append(conns, mustGet(t, p, be.addr))
				}
			}
			for _, c := range conns {
				p.Put(c)
			}
			s := p.Stats()
			if s.Idle != tt.wantIdle || s.Overflow != tt.wantOverflow {
				t.Fatalf("stats = %+v, want %d idle, %d overflow", s, tt.wantIdle, tt.wantOverflow)
			}
			if tt.closedFirst && !closedByPool(t, backends[0].peer(t, conns[0])) {
				t.Fatal("the longest-idle connection was not closed")
			}
		})
	}
}

func TestPoolExpiry(t *testing.T) {
	tests := []struct {
		name    string
		opts    PoolOptions
		advance time.Duration
		reused  bool
	}{
		{"within idle timeout", PoolOptions{IdleTimeout: time.Hour}, 59 * time.Minute, true},
		{"idle timeout", PoolOptions{IdleTimeout: time.Hour}, time.Hour, false},
		{"max lifetime while idle", PoolOptions{IdleTimeout: -1, MaxLifetime: time.Hour}, time.Hour, false},
		{"no limits", PoolOptions{IdleTimeout: -1}, 1000 * time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newBackend(t)
			p := newTestPool(t, tt.opts)
			clock := useFakeClock(p)
			c := mustGet(t, p, be.addr)
			p.Put(c)
			clock.advance(tt.advance)
			got := mustGet(t, p, be.addr)
			if (got == c) != tt.reused {
				t.Fatalf("reused = %v, want %v (stats %+v)", got == c, tt.reused, p.Stats())
			}
			if !tt.reused {
				if p.Stats().Expired != 1 {
					t.Fatalf("stats = %+v, want 1 expired", p.Stats())
				}
				if !closedByPool(t, be.peer(t, c)) {
					t.Fatal("expired connection was not closed")
				}
			}
		})
	}
}

func TestPoolPutAfterMaxLifetime(t *testing.T) {
	be := newBackend(t)
	p := newTestPool(t, PoolOptions{MaxLifetime: time.Hour})
	clock := useFakeClock(p)
	c := mustGet(t, p, be.addr)
	clock.advance(time.Hour)
	p.Put(c)
	if s := p.Stats(); s.Idle != 0 || s.Expired != 1 {
		t.Fatalf("stats = %+v, want 0 idle, 1 expired", s)
	}
	if !closedByPool(t, be.peer(t, c)) {
		t.Fatal("connection past its lifetime was not closed")
	}
}

// TestPoolSweeper: idle connections are closed in the background, without
// a Get to notice them.
func TestPoolSweeper(t *testing.T) {
	be := newBackend(t)
	p := newTestPool(t, PoolOptions{IdleTimeout: 30 * time.Millisecond})
	c := mustGet(t, p, be.addr)
	p.Put(c)
	waitFor(t, "sweeper to close the idle connection", func() bool { return p.Stats().Idle == 0 })
	if !closedByPool(t, be.peer(t, c)) {
		t.Fatal("swept connection was not closed")
	}
	if p.Stats().Expired != 1 {
		t.Fatalf("stats = %+v, want 1 expired", p.Stats())
	}
}

// TestPoolDeadConnection: an idle connection the peer has closed, reset or
// written to unasked is discarded, and Get dials a fresh one.
func TestPoolDeadConnection(t *testing.T) {
	tests := []struct {
		name string
		peer func(s net.Conn)
	}{
		{"peer closed", func(s net.Conn) { s.Close() }},
		{"peer reset", func(s net.Conn) { s.(*net.TCPConn).SetLinger(0); s.Close() }},
		{"unexpected bytes", func(s net.Conn) { s.Write([]byte("HTTP/1.1 408 Request Timeout\r\n\r\n")) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newBackend(t)
			p := newTestPool(t, PoolOptions{IdleTimeout: -1}) // no sweeper
			c := mustGet(t, p, be.addr)
			if !c.alive() {
				t.Fatal("healthy connection reported dead")
			}
			tt.peer(be.peer(t, c))
			waitFor(t, "the peer's action to arrive", func() bool { return !c.alive() })
			p.Put(c)
			got := mustGet(t, p, be.addr)
			if got == c {
				t.Fatal("Get reused a dead connection")
			}
			if s := p.Stats(); s.Dead != 1 || s.Dials != 2 || s.Hits != 0 {
				t.Fatalf("stats = %+v, want 1 dead, 2 dials, 0 hits", s)
			}
			if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("dead connection not closed: write = %v", err)
			}
		})
	}
}

func TestPoolPutClearsDeadlines(t *testing.T) {
	be := newBackend(t)
	p := newTestPool(t, PoolOptions{})
	c := mustGet(t, p, be.addr)
	c.SetDeadline(time.Now().Add(-time.Second))
	p.Put(c)
	got := mustGet(t, p, be.addr)
	if got != c {
		t.Fatal("connection not reused")
	}
	if _, err := got.Write([]byte("x")); err != nil {
		t.Fatalf("write on reused connection: %v", err)
	}
}

func TestPoolPutTwiceOrClosed(t *testing.T) {
	be := newBackend(t)
	p := newTestPool(t, PoolOptions{})
	c := mustGet(t, p, be.addr)
	p.Put(c)
	p.Put(c)
	closed := mustGet(t, p, be.addr)
	if closed != c {
		t.Fatal("connection not reused")
	}
	closed.Close()
	p.Put(closed)
	p.Put(nil)
	if s := p.Stats(); s.Idle != 0 {
		t.Fatalf("stats = %+v, want nothing idle", s)
	}
}

func TestPoolClose(t *testing.T) {
	be := newBackend(t)
	p := NewPool(PoolOptions{})
	idle, out := mustGet(t, p, be.addr), mustGet(t, p, be.addr)
	idle.Release()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !closedByPool(t, be.peer(t, idle)) {
		t.Fatal("Close left an idle connection open")
	}
	if _, err := p.Get(testContext(t), be.addr); !errors.Is(err, ErrPoolClosed) {
		t.Fatalf("Get after Close: %v, want ErrPoolClosed", err)
	}
	p.Put(out)
	if !closedByPool(t, be.peer(t, out)) {
		t.Fatal("Put after Close kept the connection open")
	}
	p.Close()
}

func TestPoolDialError(t *testing.T) {
	l := listenLoopback(t)
	addr := l.Addr().String()
	l.Close()
	p := newTestPool(t, PoolOptions{})
	if _, err := p.Get(testContext(t), addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Get = %v, want ECONNREFUSED", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Get(ctx, addr); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with cancelled context = %v, want context.Canceled", err)
	}
	if s := p.Stats(); s.DialErrors != 1 {
		t.Fatalf("stats = %+v, want 1 dial error", s)
	}
}

func TestPoolConcurrent(t *testing.T) {
	backends := []*backend{newBackend(t), newBackend(t)}
	p := newTestPool(t, PoolOptions{MaxIdlePerKey: 3, IdleTimeout: 5 * time.Millisecond})
	const workers, rounds = 8, 200
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				c, err := p.Get(testContext(t), backends[(w+i)%2].addr)
				if err != nil {
					errs <- err
					return
				}
				if i%7 == 0 {
					c.Close()
					continue
				}
				p.Put(c)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s := p.Stats()
	if s.Idle > 6 {
		t.Fatalf("%d idle connections, bound is 6", s.Idle)
	}
	if s.Hits+s.Dials != workers*rounds {
		t.Fatalf("hits %d + dials %d != %d gets", s.Hits, s.Dials, workers*rounds)
	}
	t.Logf("stats %+v", s)
}
