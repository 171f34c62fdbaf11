package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-net/switchboard/pkg/service"
)

// The HTTP listeners' accept loops and how the proxy stops, in two steps:
//
//  1. stopKeepAlive (the drain window, and a retiring process): listeners
//     still accept and every connection is served, but every response
//     closes its connection — "Connection: close" on HTTP/1.1, GOAWAY on
//     HTTP/2 once a connection's streams are done — so clients reconnect,
//     to another edge or to the process that took the sockets over.
//  2. drain (the listeners are closed): idle connections close now; a
//     connection accepted before the listeners closed still gets its first
//     request served (it has up to freshGrace to send it); requests in
//     flight finish; at the grace period's end everything left is closed.
//
// A connection the kernel handed over is never closed unanswered: a client
// retries a request on a kept-alive connection the server closed (RFC 9110
// §9.2.2, for idempotent requests), but not one on a fresh connection.

// freshGrace bounds how long a connection accepted before the listeners
// closed may take to send its first request once the proxy drains; a
// client sends it at once, a pre-connected idle socket gets no longer.
const freshGrace = time.Second

// acceptState is the proxy's accounting of its accept loops.
type acceptState struct {
	stopped    atomic.Bool    // drain began: the listeners are closed
	loops      sync.WaitGroup // accept loops still running
	live       sync.WaitGroup // accepted connections not yet finished or handed to net/http
	handshakes sync.WaitGroup // TLS handshakes in progress (their result may go to net/http)
}

// listen serves HTTP (tlsConf nil) or HTTPS on ln until ln closes.
func (p *proxy) listen(rt *service.Runtime, name string, ln net.Listener, tlsConf *tls.Config) {
	p.acc.loops.Add(1)
	rt.Go(name, func(context.Context) error {
		defer p.acc.loops.Done()
		return p.serve(ln, tlsConf)
	})
}

// serve accepts connections until ln closes. Every accepted connection is
// counted (live) before the loop accepts the next, so that once the loop
// has returned, drain knows every connection it has to wait for.
func (p *proxy) serve(ln net.Listener, tlsConf *tls.Config) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				delay = min(max(delay*2, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if p.sem != nil {
			select {
			case p.sem <- struct{}{}:
			default:
				c.Close() // over the connection limit
				continue
			}
		}
		p.acc.live.Add(1)
		if tlsConf != nil {
			p.acc.handshakes.Add(1)
		}
		go func() {
			defer p.acc.live.Done()
			if p.sem != nil {
				defer func() { <-p.sem }()
			}
			if tlsConf == nil {
				p.serveConn(c, false)
				return
			}
			tc := tls.Server(c, tlsConf)
			ctx, cancel := context.WithTimeout(p.hardStop, p.opt.ReadHeaderTimeout)
			err := tc.HandshakeContext(ctx)
			cancel()
			if err != nil {
				p.acc.handshakes.Done()
				c.Close()
				return
			}
			if tc.ConnectionState().NegotiatedProtocol == "h2" && p.fallback != nil {
				p.fallback.serve(tc)
				p.acc.handshakes.Done()
				return
			}
			p.acc.handshakes.Done()
			p.serveConn(tc, true)
		}()
	}
}

func isTemporary(err error) bool {
	type temp interface{ Temporary() bool }
	var t temp
	return errors.As(err, &t) && t.Temporary()
}

func (p *proxy) track(h *h1conn) {
	p.mu.Lock()
	p.conns[h] = struct{}{}
	p.mu.Unlock()
}

func (p *proxy) untrack(h *h1conn) {
	p.mu.Lock()
	delete(p.conns, h)
	p.mu.Unlock()
}

// stopKeepAlive begins the drain: from now on every response closes its
// connection, while new connections are still served.
func (p *proxy) stopKeepAlive() {
	p.draining.Store(true)
	if p.fallback != nil {
		p.fallback.srv.SetKeepAlivesEnabled(false)
	}
}

// drain stops the proxy once its listeners are closed: idle connections
// close now, fresh ones after their first request (within freshGrace),
// active ones after their current request; it waits for them, for
// tunnels and for HTTP/2 streams up to ctx's end, when everything left is
// closed.
func (p *proxy) drain(ctx context.Context) error {
	p.stopKeepAlive()
	// The listeners are closed, so the loops return promptly; after that
	// no connection can start that live does not count.
	p.acc.loops.Wait()
	p.acc.stopped.Store(true)
	now := time.Now()
	p.mu.Lock()
	for h := range p.conns {
		switch {
		case h.state.CompareAndSwap(stIdle, stClosed):
			h.c.SetReadDeadline(now) // wakes the idle wait
		case h.state.Load() == stNew:
			h.c.SetReadDeadline(now.Add(freshGrace))
		}
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.acc.live.Wait(); p.streams.Wait(); close(done) }()
	var err error
	if p.fallback != nil {
		// Connections still in their TLS handshake may yet go to net/http:
		// it stops after them (the handshake is bounded by the header
		// timeout and ends at the hard stop).
		hs := make(chan struct{})
		go func() { p.acc.handshakes.Wait(); close(hs) }()
		select {
		case <-hs:
		case <-ctx.Done():
		}
		err = p.fallback.shutdown(ctx)
	}
	select {
	case <-done:
	case <-ctx.Done():
		p.cancel()
		p.mu.Lock()
		for h := range p.conns {
			h.c.SetDeadline(time.Now())
		}
		p.mu.Unlock()
		<-done
		err = ctx.Err()
	}
	p.cancel()
	return err
}
