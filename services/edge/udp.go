package edge

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/switchboard-net/switchboard/pkg/balance"
	"github.com/switchboard-net/switchboard/pkg/service"
)

// udpProxy forwards datagrams per client flow: each client address gets a
// connected socket to one backend, and replies on it go back to that
// client. The flow table is bounded; idle flows expire.
type udpProxy struct {
	name   string
	pc     net.PacketConn
	svc    *upService
	e      *Edge
	max    int
	idle   time.Duration
	mu     sync.Mutex
	flows  map[netip.AddrPort]*udpFlow
	closed bool
	wg     sync.WaitGroup
}

type udpFlow struct {
	client netip.AddrPort
	up     *net.UDPConn
	b      *backend
	sel    balance.Selection
	last   time.Time // guarded by udpProxy.mu
}

func (e *Edge) startUDP(rt *service.Runtime, i int, cfg UDPConfig) (*udpProxy, error) {
	svc, err := e.targetService("udp", i, cfg.Service, cfg.Addresses)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("udp%d", i)
	pc, err := rt.ListenPacket(name, cfg.Listen)
	if err != nil {
		return nil, err
	}
	u := &udpProxy{name: name, pc: pc, svc: svc, e: e, max: cfg.MaxFlows, idle: time.Duration(cfg.IdleTimeout),
		flows: map[netip.AddrPort]*udpFlow{}}
	if u.max == 0 {
		u.max = 1024
	}
	if u.idle == 0 {
		u.idle = 60 * time.Second
	}
	rt.Go(name, u.run)
	rt.Go(name+"-sweep", u.sweep)
	return u, nil
}

func (u *udpProxy) run(ctx context.Context) error {
	buf := make([]byte, 64<<10)
	for {
		n, addr, err := u.pc.(*net.UDPConn).ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || isClosed(err) {
				return nil
			}
			continue
		}
		f := u.flow(addr)
		if f == nil {
			continue // table full or no backend: dropped
		}
		if n, err := f.up.Write(buf[:n]); err == nil {
			f.b.mSent.Add(float64(n))
		}
	}
}

func isClosed(err error) bool {
	return err != nil && (err == net.ErrClosed || containsClosed(err.Error()))
}

func containsClosed(s string) bool {
	const c = "use of closed network connection"
	for i := 0; i+len(c) <= len(s); i++ {
		if s[i:i+len(c)] == c {
			return true
		}
	}
	return false
}

// flow returns the client's flow, creating it (and its reply reader).
func (u *udpProxy) flow(client netip.AddrPort) *udpFlow {
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil
	}
	if f := u.flows[client]; f != nil {
		f.last = now
		return f
	}
	if len(u.flows) >= u.max {
		// Evict the longest-idle flow to make room.
		var oldest *udpFlow
		for _, f := range u.flows {
			if oldest == nil || f.last.Before(oldest.last) {
				oldest = f
			}
		}
		if oldest == nil || now.Sub(oldest.last) < time.Second {
			return nil // all busy: drop rather than thrash
		}
		u.endLocked(oldest)
	}
	sel, err := u.svc.set.Load().Pick(balance.PickInfo{Hash: balance.HashAddr(client.Addr()), HasHash: true})
	if err != nil {
		return nil
	}
	b := u.svc.backendFor(sel.Endpoint)
	if b == nil {
		sel.Done(balance.Ignore, 0)
		return nil
	}
	raddr, err := net.ResolveUDPAddr("udp", b.addr)
	if err != nil {
		sel.Done(balance.Failure, 0)
		return nil
	}
	up, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		sel.Done(balance.Failure, 0)
		return nil
	}
	b.total.Add(1)
	b.mReq.Inc()
	f := &udpFlow{client: client, up: up, b: b, sel: sel, last: now}
	u.flows[client] = f
	u.e.met.udpFlows.WithLabelValues(u.name).Inc()
	u.wg.Add(1)
	go u.replies(f)
	return f
}

// replies copies the backend's datagrams back to the flow's client.
func (u *udpProxy) replies(f *udpFlow) {
	defer u.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		f.up.SetReadDeadline(time.Now().Add(u.idle))
		n, err := f.up.Read(buf)
		if err != nil {
			u.mu.Lock()
			if u.flows[f.client] == f {
				if isTimeout(err) && time.Since(f.last) < u.idle {
					u.mu.Unlock()
					continue
				}
				u.endLocked(f)
			}
			u.mu.Unlock()
			return
		}
		f.b.mRecv.Add(float64(n))
		u.mu.Lock()
		f.last = time.Now()
		u.mu.Unlock()
		u.pc.(*net.UDPConn).WriteToUDPAddrPort(buf[:n], f.client)
	}
}

func (u *udpProxy) endLocked(f *udpFlow) {
	delete(u.flows, f.client)
	f.up.Close()
	f.sel.Done(balance.Success, 0)
}

func (u *udpProxy) sweep(ctx context.Context) error {
	t := time.NewTicker(max(u.idle/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			u.mu.Lock()
			for _, f := range u.flows {
				if now.Sub(f.last) > u.idle {
					u.endLocked(f)
				}
			}
			u.mu.Unlock()
		}
	}
}

func (u *udpProxy) close() {
	u.mu.Lock()
	u.closed = true
	for _, f := range u.flows {
		u.endLocked(f)
	}
	u.mu.Unlock()
	u.pc.Close()
	u.wg.Wait()
}
