package edge

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-net/switchboard/pkg/access"
	"github.com/switchboard-net/switchboard/pkg/balance"
	"github.com/switchboard-net/switchboard/pkg/netx"
	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/pkg/wire"
	"github.com/switchboard-net/switchboard/pkg/wiretransport"
)

// wireServer accepts wire sessions on every transport it is given (TCP
// or TLS on --wire-addr, QUIC on --wire-quic-addr, WebSocket on the HTTP
// listeners at --wire-ws-path); each stream a client opens names a
// service and is tunnelled to one of its endpoints. Flow control is end
// to end: the stream's window only opens as the backend takes the bytes.
//
// Who may open a session is decided once, at HELLO (see admit), the same
// way on every transport; which services a session may reach, at each
// OPEN (see permit).
type wireServer struct {
	e    *Edge
	rt   *service.Runtime
	log  *slog.Logger
	ln   net.Listener // --wire-addr; nil when not set
	tls  *tls.Config
	auth wireAuth
	comp []wire.Compression // --wire-compression, in preference order
	// guard dials endpoints beyond this host only; open dials any, for
	// services the loopback rule lets through (allowLocal).
	guard, open contextDialer
	allowAll    bool
	allowSvc    map[string]bool

	quic     *wiretransport.QUICListener // --wire-quic-addr; nil when not set
	quicAuth wireAuth
	ws       *wireWS // --wire-ws-path; nil when not set

	mu   sync.Mutex
	sess map[wiretransport.Session]struct{}
	done bool
	wg   sync.WaitGroup
}

// wireWS is the WebSocket entrance on the HTTP listeners: the HTTP/1.1
// path hands an Upgrade request for path over (wsUpgrade), and a net/http
// server of its own runs the WebSocket handshake on it.
type wireWS struct {
	path  string
	plain bool // also on plaintext HTTP listeners (loopback, or --insecure)
	auth  wireAuth
	ln    *chanListener
	srv   *http.Server
}

// wireAuth is a wire listener's admission policy.
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

// wireALPN are the TLS application protocols of the wire listener: the
// spec's id, and the one older clients send.
var wireALPN = []string{wiretransport.ALPN, "switchboard-wire"}

// wireEnabled reports whether any wire transport is configured.
func (c *Config) wireEnabled() bool {
	return c.WireAddr != "" || c.WireQUICAddr != "" || c.WireWSPath != ""
}

func parseCompression(list string) ([]wire.Compression, error) {
	var out []wire.Compression
	for _, name := range strings.Split(list, ",") {
		switch a := wire.Compression(strings.TrimSpace(name)); a {
		case "", "none":
		case wire.CompressionZstd, wire.CompressionS2:
			out = append(out, a)
		default:
			return nil, &service.FlagError{Err: fmt.Errorf("--wire-compression: %q is none of zstd, s2", name)}
		}
	}
	return out, nil
}

func (e *Edge) startWire(rt *service.Runtime) (*wireServer, error) {
	cfg := e.cfg
	comp, err := parseCompression(cfg.WireCompression)
	if err != nil {
		return nil, err
	}
	auth := wireAuth{rt: rt}
	if cfg.WireToken != "" {
		if rt.ACL() != nil {
			return nil, &service.FlagError{Err: errors.New("--wire-token and --acl-file: with an ACL file, wire clients present tokens from it; drop --wire-token")}
		}
		auth.token = []byte(cfg.WireToken)
	}
	w := &wireServer{e: e, rt: rt, log: rt.Log, auth: auth, comp: comp,
		guard: localGuard{d: e.ups.dialer}, open: e.ups.dialer,
		allowAll: cfg.AllowLoopback, allowSvc: map[string]bool{},
		sess: map[wiretransport.Session]struct{}{}}
	for _, s := range e.file.AllowLoopback {
		w.allowSvc[s] = true
	}
	if cfg.WireAddr != "" {
		if cfg.WireTLS {
			tc := rt.ServerTLS(false)
			if tc == nil {
				return nil, &service.FlagError{Err: errors.New("--wire-tls needs the service certificate: --tls-cert and --tls-key")}
			}
			w.tls = wiretransport.WithALPN(tc, wireALPN...)
		}
		if err := rt.RequireTLS("wire (--wire-addr)", cfg.WireAddr, w.tls != nil); err != nil {
			return nil, err
		}
		w.auth.loopback = service.IsLoopback(cfg.WireAddr)
		if err := w.auth.canAuthenticate("--wire-addr", cfg.WireAddr, w.tls != nil && w.tls.ClientAuth != tls.NoClientCert, "--wire-tls with --tls-ca"); err != nil {
			return nil, err
		}
	}
	if cfg.WireQUICAddr != "" {
		tc := rt.ServerTLS(false)
		if tc == nil {
			return nil, &service.FlagError{Err: errors.New("--wire-quic-addr needs the service certificate (QUIC is always TLS 1.3): --tls-cert and --tls-key")}
		}
		w.quicAuth = auth
		w.quicAuth.loopback = service.IsLoopback(cfg.WireQUICAddr)
		if err := w.quicAuth.canAuthenticate("--wire-quic-addr", cfg.WireQUICAddr, tc.ClientAuth != tls.NoClientCert, "--tls-ca"); err != nil {
			return nil, err
		}
		pc, err := rt.ListenPacket("wire-quic", cfg.WireQUICAddr)
		if err != nil {
			return nil, err
		}
		if w.quic, err = wiretransport.ListenQUICConn(pc, tc, wire.Config{}); err != nil {
			pc.Close()
			return nil, fmt.Errorf("wire QUIC listener: %w", err)
		}
	}
	if cfg.WireWSPath != "" {
		if err := w.startWS(rt); err != nil {
			return nil, err
		}
	}
	if cfg.WireAddr != "" {
		if w.ln, err = rt.Listen("wire", cfg.WireAddr); err != nil {
			return nil, err
		}
		rt.Go("wire", w.serve)
	}
	if w.quic != nil {
		rt.Go("wire-quic", w.serveQUIC)
	}
	return w, nil
}

// canAuthenticate refuses a listener beyond loopback that has no way to
// tell clients apart.
func (a *wireAuth) canAuthenticate(flag, addr string, clientCerts bool, certFlags string) error {
	if !a.loopback && a.rt.ACL() == nil && a.token == nil && !clientCerts {
		return &service.FlagError{Err: fmt.Errorf("refusing to serve wire (%s) on %s beyond loopback with no way to authenticate clients: pass --acl-file, --wire-token, or %s", flag, addr, certFlags)}
	}
	return nil
}

// startWS sets up the WebSocket entrance. A plaintext HTTP listener beyond
// loopback carries it only with --insecure (behind a load balancer that
// terminates TLS); the HTTPS listener always does.
func (w *wireServer) startWS(rt *service.Runtime) error {
	cfg := w.e.cfg
	if !strings.HasPrefix(cfg.WireWSPath, "/") {
		return &service.FlagError{Err: fmt.Errorf("--wire-ws-path %q: a path starts with /", cfg.WireWSPath)}
	}
	ws := &wireWS{path: cfg.WireWSPath, auth: w.auth, ln: newChanListener()}
	ws.plain = cfg.HTTPAddr != "" && (rt.Insecure() || service.IsLoopback(cfg.HTTPAddr))
	tlsOn := cfg.HTTPSAddr != ""
	if !ws.plain && !tlsOn {
		return &service.FlagError{Err: fmt.Errorf("--wire-ws-path: no listener to serve it on: --http-addr %q is beyond loopback without TLS (pass --insecure if a load balancer terminates TLS in front of it) and there is no --https-addr", cfg.HTTPAddr)}
	}
	ws.auth.loopback = (cfg.HTTPAddr == "" || service.IsLoopback(cfg.HTTPAddr)) && (cfg.HTTPSAddr == "" || service.IsLoopback(cfg.HTTPSAddr))
	if err := ws.auth.canAuthenticate("--wire-ws-path", "the HTTP listeners", false, "serve the HTTP listeners on loopback"); err != nil {
		return err
	}
	ws.srv = &http.Server{
		Handler: wiretransport.WebSocketHandler(func(c net.Conn, r *http.Request) {
			hc, _ := r.Context().Value(wsConnKey{}).(net.Conn)
			w.session(wiretransport.WebSocket, c, connState(hc), ws.auth)
		}),
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		MaxHeaderBytes:    cfg.HTTP.MaxHeaderBytes,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, wsConnKey{}, c)
		},
		ErrorLog: slog.NewLogLogger(rt.Log.Handler(), slog.LevelDebug),
	}
	go ws.srv.Serve(ws.ln) //nolint:errcheck // returns when drain closes ln
	w.ws = ws
	return nil
}

// wsConnKey carries the handed-over connection into the WebSocket handler,
// for its TLS state.
type wsConnKey struct{}

// wsUpgrade reports whether a request for path (with query) on a
// connection (tls or not) belongs to the WebSocket entrance.
func (ws *wireWS) wsUpgrade(path []byte, isTLS bool) bool {
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	return string(path) == ws.path && (isTLS || ws.plain)
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
		kind := wiretransport.TCP
		if w.tls != nil {
			c = tls.Server(c, w.tls)
			kind = wiretransport.TLS
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.session(kind, c, nil, w.auth)
		}()
	}
}

// session runs the wire handshake on a byte-stream connection (TCP, TLS
// or WebSocket) and then serves the session. cs is the TLS state when c
// itself is not the *tls.Conn (a WebSocket on the HTTPS listener).
func (w *wireServer) session(kind wiretransport.Kind, c net.Conn, cs *tls.ConnectionState, auth wireAuth) {
	peer := &wirePeer{}
	// The handshake (TLS, then HELLO) runs inside wire.Server under its
	// HandshakeTimeout; Authenticate is called once HELLO is read, so the
	// TLS state is final by then.
	s, err := wire.Server(c, wire.Config{Compression: w.comp, Authenticate: func(token []byte) error {
		peer.token, peer.cs = string(token), cs
		if peer.cs == nil {
			peer.cs = connState(c)
		}
		return auth.admit(peer, kind, c.RemoteAddr())
	}})
	if err != nil {
		c.Close()
		return
	}
	w.serveSession(wiretransport.Wrap(s), peer)
}

// serveQUIC accepts QUIC connections; each runs the handshake on its
// control stream on a goroutine of its own.
func (w *wireServer) serveQUIC(ctx context.Context) error {
	for {
		c, err := w.quic.Accept(ctx)
		if err != nil {
			return nil // closed by drain, or ctx ended
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			peer := &wirePeer{}
			s, err := wiretransport.ServeQUIC(ctx, c, wire.Config{Authenticate: func(token []byte) error {
				cs := c.ConnectionState().TLS
				peer.token, peer.cs = string(token), &cs
				return w.quicAuth.admit(peer, wiretransport.QUIC, c.RemoteAddr())
			}})
			if err != nil {
				return
			}
			w.serveSession(s, peer)
		}()
	}
}

// serveSession tunnels the streams of an admitted session until it ends.
func (w *wireServer) serveSession(s wiretransport.Session, peer *wirePeer) {
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
	if rc, ok := c.(*replayConn); ok {
		c = rc.Conn
	}
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
func (a *wireAuth) admit(p *wirePeer, kind wiretransport.Kind, remote net.Addr) error {
	err := a.check(p)
	if err != nil {
		a.rt.Log.Warn("wire session refused", "transport", string(kind), "remote", remote.String(), "reason", err.Error())
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

func (w *wireServer) stream(p *wirePeer, st wiretransport.Stream) {
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
	sent, recv, _ := netx.Join(context.Background(), st, up, netx.JoinOptions{IdleTimeout: time.Hour})
	b.countJoined(sent, recv)
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
	if w.ln != nil {
		w.ln.Close()
	}
	if w.quic != nil {
		w.quic.Close()
	}
	if w.ws != nil {
		w.ws.ln.Close()
	}
	w.mu.Lock()
	w.done = true
	ss := make([]wiretransport.Session, 0, len(w.sess))
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
	if w.quic != nil {
		w.quic.CloseAll() // the QUIC sessions have drained: free the socket's reader
	}
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
