package edge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/switchboard-net/switchboard/pkg/balance"
	"github.com/switchboard-net/switchboard/pkg/netx"
	"github.com/switchboard-net/switchboard/pkg/service"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
)

// tcpProxy forwards each accepted connection to one backend of a service.
type tcpProxy struct {
	name string
	cfg  TCPConfig
	svc  *upService
	ln   *netx.Listener
	e    *Edge
	dial *netx.Dialer
}

func (e *Edge) targetService(kind string, i int, service string, addrs []string) (*upService, error) {
	if len(addrs) > 0 {
		name := fmt.Sprintf("static:%s%d", kind, i)
		if err := e.ups.setStatic(name, "", addrs); err != nil {
			return nil, err
		}
		return e.ups.service(name), nil
	}
	return e.ups.service(service), nil
}

func (e *Edge) startTCP(rt *service.Runtime, i int, cfg TCPConfig) (*tcpProxy, error) {
	svc, err := e.targetService("tcp", i, cfg.Service, cfg.Addresses)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("tcp%d", i)
	inner, err := rt.Listen(name, cfg.Listen)
	if err != nil {
		return nil, err
	}
	so := netx.SocketOptions{ReadBuffer: cfg.SocketBuffer, WriteBuffer: cfg.SocketBuffer}
	t := &tcpProxy{name: name, cfg: cfg, svc: svc, e: e,
		ln:   netx.NewListener(inner, netx.ListenOptions{Socket: so}),
		dial: &netx.Dialer{Timeout: e.cfg.HTTP.ConnectTimeout, Socket: so}}
	if t.cfg.IdleTimeout == 0 {
		t.cfg.IdleTimeout = Duration(time.Hour)
	}
	rt.Go(name, func(context.Context) error { return t.ln.Serve(t.handle) })
	return t, nil
}

func (t *tcpProxy) drain(ctx context.Context) error { return t.ln.Shutdown(ctx) }

func (t *tcpProxy) handle(ctx context.Context, c net.Conn) {
	p := t.e.proxy
	p.met.tcpConns.WithLabelValues(t.name).Inc()
	var info balance.PickInfo
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		info = balance.PickInfo{Hash: balance.HashAddr(ap.Addr()), HasHash: true} // used by consistent_hash only
	}
	// The connection's tries follow the HTTP path's rules for a request
	// that never reached a backend (try.go: tries.connect).
	p.budget.deposit()
	var tr tries
	tr.init(p, t.svc, t.svc.set.Load(), info, tryRules{retries: min(max(t.e.cfg.HTTP.Retries, 0), maxTries-1), conn: true}, time.Now())
	var a attempt
	up, err := tr.connect(ctx, t.dial, &a)
	if err != nil {
		c.Close()
		return
	}
	b := a.b
	if t.cfg.ProxyProtocol {
		n, err := up.Write(proxyV2Header(c.RemoteAddr(), c.LocalAddr()))
		b.countJoined(int64(n), 0)
		if err != nil {
			up.Close()
			c.Close()
			tr.end(&a, endFailed)
			return
		}
	}
	sent, recv, err := netx.Join(ctx, c, up, netx.JoinOptions{IdleTimeout: time.Duration(t.cfg.IdleTimeout)})
	b.countJoined(sent, recv)
	e := endAnswered
	if err != nil && !errors.Is(err, netx.ErrIdleTimeout) && !errors.Is(err, context.Canceled) && !errors.Is(err, net.ErrClosed) {
		e = endIgnored // a reset mid-stream may be either side's doing
	}
	tr.end(&a, e)
}

// maxLocalSkips bounds the picks that land on an endpoint the dialer
// refuses by policy (errLocalEndpoint), beyond the tries: they are not the
// backend's failure and cost no try, but a service whose every endpoint is
// refused must still give up.
const maxLocalSkips = 4

// dialService picks and dials a backend of svc, trying others on connect
// failure. The caller owns the returned selection and must call Done.
func dialService(ctx context.Context, svc *upService, info balance.PickInfo, d contextDialer, tries int, rep *reporter) (net.Conn, balance.Selection, *backend, error) {
	var last error = errors.New("no backend")
	skips := 0
	for i := 0; i < max(tries, 1); i++ {
		sel, err := svc.set.Load().Pick(info)
		if err != nil {
			return nil, sel, nil, err
		}
		b := svc.backendFor(sel.Endpoint)
		if b == nil {
			sel.Done(balance.Ignore, 0)
			continue
		}
		t0 := time.Now()
		c, err := d.DialContext(ctx, "tcp", b.addr)
		if errors.Is(err, errLocalEndpoint) {
			sel.Done(balance.Ignore, 0)
			last = err
			if skips < maxLocalSkips {
				skips++
				i--
			}
			continue
		}
		b.total.Add(1)
		b.mReq.Inc()
		if err != nil {
			b.failures.Add(1)
			b.mFail.Inc()
			sel.Done(balance.Failure, time.Since(t0))
			if !svc.static {
				rep.add(report{svc: svc.name, id: b.id, outcome: balancerv1.Outcome_OUTCOME_FAILURE, latency: time.Since(t0)})
			}
			last = err
			continue
		}
		if !svc.static {
			rep.add(report{svc: svc.name, id: b.id, outcome: balancerv1.Outcome_OUTCOME_SUCCESS, latency: time.Since(t0)})
		}
		b.active.Add(1)
		return c, sel, b, nil
	}
	return nil, balance.Selection{}, nil, last
}

// proxyV2Header builds a PROXY protocol v2 header (PROXY command, TCP over
// IPv4 or IPv6) carrying the client's and the listener's addresses.
func proxyV2Header(src, dst net.Addr) []byte {
	sig := []byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}
	s, _ := netip.ParseAddrPort(addrString(src))
	d, _ := netip.ParseAddrPort(addrString(dst))
	sa, da := s.Addr().Unmap(), d.Addr().Unmap()
	b := append([]byte(nil), sig...)
	b = append(b, 0x21) // version 2, PROXY
	switch {
	case sa.Is4() && da.Is4():
		b = append(b, 0x11) // AF_INET, STREAM
		b = binary.BigEndian.AppendUint16(b, 12)
		s4, d4 := sa.As4(), da.As4()
		b = append(b, s4[:]...)
		b = append(b, d4[:]...)
	case sa.IsValid() && da.IsValid():
		b = append(b, 0x21) // AF_INET6, STREAM
		b = binary.BigEndian.AppendUint16(b, 36)
		s16, d16 := s.Addr().As16(), d.Addr().As16()
		b = append(b, s16[:]...)
		b = append(b, d16[:]...)
	default:
		b[12] = 0x20 // LOCAL command, no addresses
		return append(b, 0x00, 0x00, 0x00)
	}
	b = binary.BigEndian.AppendUint16(b, s.Port())
	b = binary.BigEndian.AppendUint16(b, d.Port())
	return b
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
