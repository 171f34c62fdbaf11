package edge

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-net/switchboard/pkg/access"
	"github.com/switchboard-net/switchboard/pkg/balance"
	"github.com/switchboard-net/switchboard/pkg/netx"
	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/pkg/wire"
)

// wireServer accepts wire sessions; each stream a client opens names a
// service and is tunnelled to one of its endpoints. Flow control is end
// to end: the stream's window only opens as the backend takes the bytes.
//
// Who may open a session is decided once, at HELLO (see admit); which
// services a session may reach, at each OPEN (see permit).
type wireServer struct {
	e    *Edge
	rt   *service.Runtime
	log  *slog.Logger
	ln   net.Listener
	tls  *tls.Config
	auth wireAuth
	// guard dials endpoints beyond this host only; open dials any, for
	// services the loopback rule lets through (allowLocal).
	guard, open contextDialer
	allowAll    bool
	allowSvc    map[string]bool

	mu   sync.Mutex
	sess map[*wire.Session]struct{}
	done bool
	wg   sync.WaitGroup
}

// wireAuth is the wire listener's admission policy.
type wireAuth struct {
	rt       *service.Runtime
	token    []byte // --wire-token; nil when not set
	loopback bool   // the listener accepts connections from this host only
}

// wirePeer is what a session was admitted with. The caller is re-derived
// from the token and certificate when the ACL file changes, so a revoked
// token opens no more streams.
type wirePeer struct {
	token string
	cs    *tls.ConnectionState // nil without TLS
	id    atomic.Pointer[wireIdentity]
}

// wireIdentity is the caller a peer stands for under one version of the ACL.
type wireIdentity struct {
	acl    *access.ACL
	caller *access.Caller
}

// errUnauthenticated refuses a session that brings no credential where
// one is needed.
var errUnauthenticated = errors.New("no token or client certificate (needed beyond loopback)")

// errBadToken refuses a wire session whose HELLO token is wrong.
var errBadToken = errors.New("wrong token")

func (e *Edge) startWire(rt *service.Runtime) (*wireServer, error) {
	cfg := e.cfg
	var tc *tls.Config
	if cfg.WireTLS {
		if tc = rt.ServerTLS(false); tc == nil {
			return nil, &service.FlagError{Err: errors.New("--wire-tls needs the service certificate: --tls-cert and --tls-key")}
		}
		tc.NextProtos = []string{"switchboard-wire"}
	}
	if err := rt.RequireTLS("wire (--wire-addr)", cfg.WireAddr, tc != nil); err != nil {
		return nil, err
	}
	auth := wireAuth{rt: rt, loopback: service.IsLoopback(cfg.WireAddr)}
	if cfg.WireToken != "" {
		if rt.ACL() != nil {
			return nil, &service.FlagError{Err: errors.New("--wire-token and --acl-file: with an ACL file, wire clients present tokens from it; drop --wire-token")}
		}
		auth.token = []byte(cfg.WireToken)
	}
	clientCerts := tc != nil && tc.ClientAuth != tls.NoClientCert
	if !auth.loopback && rt.ACL() == nil && auth.token == nil && !clientCerts {
		return nil, &service.FlagError{Err: fmt.Errorf("refusing to serve wire (--wire-addr) on %s beyond loopback with no way to authenticate clients: pass --acl-file, --wire-token, or --wire-tls with --tls-ca", cfg.WireAddr)}
	}
	ln, err := rt.Listen("wire", cfg.WireAddr)
	if err != nil {
		return nil, err
	}
	w := &wireServer{e: e, rt: rt, log: rt.Log, ln: ln, tls: tc, auth: auth,
		guard: localGuard{d: e.ups.dialer}, open: e.ups.dialer,
		allowAll: cfg.AllowLoopback, allowSvc: map[string]bool{},
		sess: map[*wire.Session]struct{}{}}
	for _, s := range e.file.AllowLoopback {
		w.allowSvc[s] = true
	}
	rt.Go("wire", w.serve)
	return w, nil
}

func (w *wireServer) serve(ctx context.Context) error {
	for {
		c, err := w.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if w.tls != nil {
			c = tls.Server(c, w.tls)
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.session(c)
		}()
	}
}

func (w *wireServer) session(c net.Conn) {
	peer := &wirePeer{}
	// The handshake (TLS, then HELLO) runs inside wire.Server under its
	// HandshakeTimeout; Authenticate is called once HELLO is read, so the
	// TLS state is final by then.
	s, err := wire.Server(c, wire.Config{Authenticate: func(token []byte) error {
		peer.token, peer.cs = string(token), connState(c)
		return w.auth.admit(peer, c.RemoteAddr())
	}})
	if err != nil {
		c.Close()
		return
	}
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		s.Close()
		return
	}
	w.sess[s] = struct{}{}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.sess, s)
		w.mu.Unlock()
		s.Close()
	}()
	var streams sync.WaitGroup
	defer streams.Wait()
	for {
		st, err := s.Accept(context.Background())
		if err != nil {
			return
		}
		streams.Add(1)
		go func() {
			defer streams.Done()
			w.stream(peer, st)
		}()
	}
}

// connState returns the TLS state of a server connection, or nil.
func connState(c net.Conn) *tls.ConnectionState {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	cs := tc.ConnectionState()
	return &cs
}

// admit decides whether a session may start, from its HELLO token and TLS
// state (in peer):
//   - with an ACL file, the token (or else the client certificate) must be
//     known to it; beyond loopback an anonymous session is refused;
//   - without one, a token must match --wire-token; beyond loopback, or on
//     loopback with --wire-token set, the session needs that token or a
//     verified client certificate.
func (a *wireAuth) admit(p *wirePeer, remote net.Addr) error {
	err := a.check(p)
	if err != nil {
		a.rt.Log.Warn("wire session refused", "remote", remote.String(), "reason", err.Error())
	}
	return err
}

func (a *wireAuth) check(p *wirePeer) error {
	if src := a.rt.ACL(); src != nil {
		cur := src.ACL()
		c, err := a.rt.Identify(p.token, p.cs)
		if err != nil {
			return err
		}
		if c.Via == "none" && !a.loopback {
			return errUnauthenticated
		}
		p.id.Store(&wireIdentity{acl: cur, caller: c})
		return nil
	}
	if p.token != "" && a.token != nil {
		if subtle.ConstantTimeCompare([]byte(p.token), a.token) != 1 {
			return errBadToken
		}
		return nil
	}
	if p.cs != nil && len(p.cs.VerifiedChains) > 0 {
		return nil
	}
	if a.token != nil {
		return errors.New("missing token")
	}
	if !a.loopback {
		return errUnauthenticated
	}
	return nil
}

// permit checks that the session may reach service: with an ACL file, its
// caller needs service read on it.
func (a *wireAuth) permit(p *wirePeer, svc string) error {
	src := a.rt.ACL()
	if src == nil {
		return nil
	}
	id := p.id.Load()
	if cur := src.ACL(); id == nil || id.acl != cur {
		c, err := a.rt.Identify(p.token, p.cs)
		if err != nil {
			return fmt.Errorf("the session's token is no longer accepted: %w", err)
		}
		id = &wireIdentity{acl: cur, caller: c}
		p.id.Store(id)
	}
	need := access.Service(svc, access.Read)
	if !id.caller.Allows(need) {
		a.rt.Log.Warn("wire stream refused", "caller", id.caller.String(), "lacks", need.String())
		return fmt.Errorf("%s lacks %s", id.caller, need)
	}
	return nil
}

func (w *wireServer) stream(p *wirePeer, st *wire.Stream) {
	w.e.met.wireStreams.Inc()
	name := st.Service()
	// Permission first, so a caller learns nothing of services it may not read.
	if err := w.auth.permit(p, name); err != nil {
		st.ResetWithReason(wire.CodeUnauthorized, err.Error())
		return
	}
	svc := w.e.ups.lookup(name)
	if svc == nil {
		st.ResetWithReason(wire.CodeNoSuchService, "no service "+name)
		return
	}
	d := w.guard
	if w.allowAll || w.allowSvc[name] {
		d = w.open
	}
	up, sel, b, err := dialService(context.Background(), svc, balance.PickInfo{}, d, 1+w.e.cfg.HTTP.Retries, w.e.proxy.rep)
	if err != nil {
		if errors.Is(err, errLocalEndpoint) {
			w.log.Debug("wire stream refused", "service", name, "reason", err.Error())
			st.ResetWithReason(wire.CodeUnavailable, fmt.Sprintf("service %s: %v (the edge allows it with --allow-loopback or allow_loopback)", name, err))
			return
		}
		st.ResetWithReason(wire.CodeUnavailable, "no healthy backend for "+name)
		return
	}
	defer b.active.Add(-1)
	start := time.Now()
	netx.Join(context.Background(), st, up, netx.JoinOptions{IdleTimeout: time.Hour})
	sel.Done(balance.Success, time.Since(start))
}

// goAway begins the drain window: every session is told to open no more
// streams (GOAWAY), without waiting, so clients open their next ones on a
// new session; new sessions are still served until drain.
func (w *wireServer) goAway() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for s := range w.sess {
		go s.GoAway(wire.CodeNoError, "draining") // bounded by the session's write timeout; Close ends it
	}
}

// drain sends GOAWAY on every session and waits for their streams.
func (w *wireServer) drain(ctx context.Context) error {
	w.ln.Close()
	w.mu.Lock()
	w.done = true
	ss := make([]*wire.Session, 0, len(w.sess))
	for s := range w.sess {
		ss = append(ss, s)
	}
	w.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(ss))
	for i, s := range ss {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = s.Shutdown(ctx) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// contextDialer dials backends: a *netx.Dialer, or a localGuard around one.
type contextDialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// errLocalEndpoint refuses an endpoint on this host's loopback or
// link-local networks, which a wire client must not reach through the
// edge unless the operator allows it.
var errLocalEndpoint = errors.New("endpoint is a loopback or link-local address")

// localGuard dials only endpoints beyond this host: a wire client may
// name any service, and must not reach the edge host's own loopback
// services or the link-local network (cloud metadata at 169.254.169.254)
// through it.
type localGuard struct{ d *netx.Dialer }

// DialContext refuses a local address with errLocalEndpoint. A host name
// is resolved here and the addresses checked are the ones dialled, so the
// name cannot resolve elsewhere in between.
func (g localGuard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if isLocal(ip) {
			return nil, fmt.Errorf("%s: %w", addr, errLocalEndpoint)
		}
		return g.d.DialContext(ctx, network, addr)
	}
	timeout := g.d.Timeout
	if timeout <= 0 {
		timeout = netx.DefaultDialTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	ips, err := net.DefaultResolver.LookupNetIP(rctx, "ip", host)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	for _, ip := range ips {
		if isLocal(ip) {
			return nil, fmt.Errorf("%s (%s): %w", addr, ip, errLocalEndpoint)
		}
	}
	last := fmt.Errorf("resolve %s: no addresses", host)
	for _, ip := range ips {
		c, err := g.d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, last
}

// isLocal reports whether ip is on this host or its link: loopback
// (127.0.0.0/8, ::1), link-local (169.254.0.0/16, fe80::/10), unspecified
// (0.0.0.0, ::, which reach this host) or in 0.0.0.0/8.
func isLocal(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() ||
		(ip.Is4() && ip.As4()[0] == 0)
}
