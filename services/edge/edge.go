// Package edge is the Switchboard edge proxy: an HTTP reverse proxy with a
// hand-written HTTP/1.1 fast path (HTTP/2 over TLS and h2c through
// net/http), TCP and UDP proxies, a wire-protocol tunnel listener, and a
// runtime API on a Unix socket and over gRPC. Backends are picked locally
// with pkg/balance from the balancer's WatchEndpoints stream; outcomes go
// back to the balancer in batches.
package edge

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http/pprof"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-net/switchboard/pkg/netx"
	"github.com/switchboard-net/switchboard/pkg/service"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	edgev1 "github.com/switchboard-net/switchboard/proto/switchboard/edge/v1"
)

// Config is the edge's command-line configuration.
type Config struct {
	HTTPAddr      string
	HTTPSAddr     string
	HTTPSCerts    stringList
	HTTPSKeys     stringList
	WireAddr      string
	WireTLS       bool
	AllowLoopback bool
	ConfigFile    string
	ConfigPoll    time.Duration
	BalancerAddr  string
	RegistryAddr  string
	ProberAddr    string
	WireToken     string
	// Wire transports and compression (wire.go).
	WireQUICAddr    string
	WireWSPath      string
	WireCompression string
	DataDir         string
	RuntimeSocket   string
	RuntimeAddr     string
	AccessLog       string
	AccessQuery     bool
	RateLimit       float64
	RateBurst       int
	ReportEvery     time.Duration
	ReportBatch     int
	Pprof           bool
	HTTP            HTTPOptions

	// Stopping and restarting (restart.go).
	DrainDelay     time.Duration
	RestartTimeout time.Duration
	PIDFile        string
	restart        bool // SIGUSR2 starts a successor (Command, not Spec)
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// RegisterFlags registers the edge's flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address (empty disables)")
	fs.StringVar(&c.HTTPSAddr, "https-addr", "", "HTTPS listen address (HTTP/1.1 and HTTP/2; off by default)")
	fs.Var(&c.HTTPSCerts, "https-cert", "certificate file (PEM) of the HTTPS listener; repeat with --https-key for more names (chosen by SNI)")
	fs.Var(&c.HTTPSKeys, "https-key", "private key file (PEM), paired in order with --https-cert")
	fs.StringVar(&c.WireAddr, "wire-addr", "127.0.0.1:7900", "wire protocol listen address (empty disables)")
	fs.BoolVar(&c.WireTLS, "wire-tls", false, "serve the wire listener over TLS with the service certificate (--tls-cert); with --tls-ca, client certificates are verified when given")
	fs.StringVar(&c.WireQUICAddr, "wire-quic-addr", "", "wire protocol over QUIC: UDP listen address (TLS 1.3 with the service certificate, ALPN switchboard-wire/1; empty disables)")
	fs.StringVar(&c.WireWSPath, "wire-ws-path", "", "wire protocol over WebSocket: the path on the HTTP listeners where an Upgrade request becomes a wire session (for example /wire; empty disables). Served on --https-addr, and on --http-addr when it is loopback or with --insecure")
	fs.StringVar(&c.WireCompression, "wire-compression", "", "DATA compression the wire listeners accept, in preference order: zstd, s2 or both comma-separated (empty: none); a client asks for it in HELLO")
	fs.BoolVar(&c.AllowLoopback, "allow-loopback", false, "let endpoints from the registry on loopback and link-local addresses (127.0.0.0/8, ::1, 169.254.0.0/16, fe80::/10, unspecified) get traffic, on every protocol")
	fs.StringVar(&c.ConfigFile, "config", "", "static routes and TCP/UDP listeners (YAML or JSON file); reloaded on SIGHUP, the runtime API's reload, and when it changes on disk")
	fs.DurationVar(&c.ConfigPoll, "config-poll", 500*time.Millisecond, "how often --config and the --https-cert/--https-key files are checked for changes, which reload them (0: only SIGHUP and the runtime API's reload)")
	fs.StringVar(&c.BalancerAddr, "balancer-addr", "localhost:7200", "balancer gRPC address (empty: static routes only)")
	fs.StringVar(&c.RegistryAddr, "registry-addr", "localhost:7100", "registry gRPC address, for the dashboard's services and health (empty: none)")
	fs.StringVar(&c.ProberAddr, "prober-addr", "localhost:7400", "prober gRPC address, for the dashboard's probe RTTs (empty: none)")
	fs.StringVar(&c.WireToken, "wire-token", "", "token wire clients must present in HELLO when there is no --acl-file (empty: none on loopback; beyond loopback a client certificate is then needed)")
	fs.StringVar(&c.DataDir, "data-dir", defaultDataDir(), "the edge's own directory (mode 0700), where the runtime socket lives when XDG_RUNTIME_DIR is not set")
	fs.StringVar(&c.RuntimeSocket, "runtime-socket", autoSocket, "runtime API Unix socket path (mode 0600, in a directory only this user can write): auto is $XDG_RUNTIME_DIR/switchboard/edge.sock, or <--data-dir>/edge.sock without XDG_RUNTIME_DIR; empty disables")
	fs.StringVar(&c.RuntimeAddr, "runtime-addr", "", "runtime API on a TCP address too (opt-in): TLS with the service certificate when --tls-cert is set; beyond loopback it needs --tls-cert, --tls-key and --tls-ca (client certificates)")
	fs.StringVar(&c.AccessLog, "access-log", "", "access log: a file path (created with mode 0600), - for standard output (empty disables)")
	fs.BoolVar(&c.AccessQuery, "access-log-query", true, "keep the query string in the access log's target (false logs the path alone)")
	fs.Float64Var(&c.RateLimit, "rate-limit", 0, "requests per second allowed per client IP (0 disables)")
	fs.IntVar(&c.RateBurst, "rate-burst", 0, "burst allowed per client IP (default: the rate)")
	fs.DurationVar(&c.ReportEvery, "report-interval", time.Second, "how often load reports are flushed to the balancer")
	fs.IntVar(&c.ReportBatch, "report-batch", 512, "flush load reports when this many are queued")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve Go profiles under /debug/pprof/ on the admin port")
	fs.DurationVar(&c.DrainDelay, "drain-delay", 0, "on SIGTERM, keep accepting this long with /readyz at 503 and every response closing its connection (HTTP/1.1 Connection: close, HTTP/2 GOAWAY) before the listeners close and --shutdown-grace begins; after a restart (SIGUSR2), how long kept-alive connections get to move to the new process before idle ones are closed")
	fs.DurationVar(&c.RestartTimeout, "restart-timeout", 30*time.Second, "on SIGUSR2, how long the new process has to become ready before the restart is abandoned (this process keeps serving)")
	fs.StringVar(&c.PIDFile, "pid-file", "", "write the process id to this file once serving, and the new process writes its own after a restart (systemd's PIDFile=)")
	h := &c.HTTP
	fs.IntVar(&h.Retries, "retries", 2, "retries on another backend when safe (idempotent, or never reached the backend)")
	fs.IntVar(&h.RetryBudgetPercent, "retry-budget", 20, "retries allowed as a percentage of requests")
	fs.DurationVar(&h.TryTimeout, "try-timeout", 400*time.Millisecond, "time one try may wait for the backend's response headers before it counts as a timeout and an idempotent request without a body goes to another backend (0 disables; --response-timeout bounds every try together)")
	fs.BoolVar(&h.Hedge, "hedge", false, "on a try timeout, race a second try of an idempotent request on another backend instead of abandoning the first; the first answer wins (within --retries and --retry-budget)")
	fs.DurationVar(&h.ConnectTimeout, "connect-timeout", 2*time.Second, "backend connect timeout")
	fs.DurationVar(&h.ResponseHeaderTimeout, "response-timeout", 30*time.Second, "time allowed for a backend's response headers (then 504)")
	fs.DurationVar(&h.BackendIdleTimeout, "backend-idle-timeout", 60*time.Second, "silence allowed within a response body")
	fs.DurationVar(&h.IdleTimeout, "idle-timeout", 60*time.Second, "client keep-alive idle timeout")
	fs.DurationVar(&h.ReadHeaderTimeout, "read-header-timeout", 10*time.Second, "time allowed for a client's request header (slow clients get 408)")
	fs.DurationVar(&h.ClientTimeout, "client-timeout", 30*time.Second, "time allowed for each client body read and response write")
	fs.DurationVar(&h.TunnelIdleTimeout, "tunnel-idle-timeout", time.Hour, "idle timeout of upgraded (WebSocket) connections")
	fs.IntVar(&h.MaxHeaderBytes, "max-header-bytes", 32<<10, "largest request header section (then 431)")
	fs.IntVar(&h.MaxConns, "max-conns", 0, "most client connections open at once per HTTP listener (0: from the file descriptor limit, two per connection after 1024 kept back, shared by the HTTP listeners)")
}

// Spec returns the edge service, ready for service.Run (in a process
// that runs other things too, like `switchboard dev`).
func Spec() service.Spec { return spec(false) }

// Command returns the edge as a program of its own (cmd/edge), for
// service.Main: Spec, plus hitless restarts on SIGUSR2, where a new
// process of the same executable takes the listening sockets over
// (restart.go).
func Command() service.Spec { return spec(true) }

func spec(restart bool) service.Spec {
	cfg := &Config{restart: restart}
	return service.Spec{Name: "edge", GRPCAddr: "127.0.0.1:7500", AdminAddr: "127.0.0.1:7501",
		Flags:   cfg.RegisterFlags,
		Methods: Methods,
		Inherit: restart,
		Start:   func(ctx context.Context, rt *service.Runtime) error { return start(ctx, rt, cfg) }}
}

// Edge is a running edge.
type Edge struct {
	cfg    *Config
	file   *FileConfig
	ups    *upstreams
	proxy  *proxy
	met    *metrics
	tcp    []*tcpProxy
	udp    []*udpProxy
	wire   *wireServer
	watch  *watcher
	synced chan struct{} // closed at the balancer's first endpoint set
	mu     sync.Mutex    // serialises route rebuilds; guards file and static
	static []*route
	log    *slog.Logger

	// Reloads (reload.go).
	reloadMu    sync.Mutex // one reload at a time
	live        atomic.Pointer[configState]
	loadedPrint atomic.Pointer[[sha256.Size]byte]
	certs       atomic.Pointer[[]tls.Certificate] // the HTTPS listener's
	rmet        *reloadMetrics
}

var errNotFound = errors.New("not found")

func start(ctx context.Context, rt *service.Runtime, cfg *Config) error {
	if len(cfg.HTTPSCerts) != len(cfg.HTTPSKeys) {
		return &service.FlagError{Err: fmt.Errorf("--https-cert and --https-key: %d certificates but %d keys", len(cfg.HTTPSCerts), len(cfg.HTTPSKeys))}
	}
	e := &Edge{cfg: cfg, log: rt.Log}
	loaded, err := e.readFiles(nil)
	if err != nil {
		return err
	}
	file := loaded.file
	if cfg.Pprof {
		rt.Admin.HandleFunc("/debug/pprof/", pprof.Index)
		rt.Admin.HandleFunc("/debug/pprof/profile", pprof.Profile)
		rt.Admin.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		rt.Admin.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	met := newMetrics(rt.Metrics)
	dialer := &netx.Dialer{Timeout: cfg.HTTP.ConnectTimeout}
	ups := newUpstreams(dialer, 256, 30*time.Second, met)
	if rt.Metrics != nil {
		rt.Metrics.MustRegister(backendCollector{ups})
	}
	e.ups, e.met, e.rmet = ups, met, newReloadMetrics(rt.Metrics)

	var rep *reporter
	if cfg.BalancerAddr != "" {
		cc, err := rt.Dial(cfg.BalancerAddr)
		if err != nil {
			return err
		}
		rt.OnShutdown(func(context.Context) error { return cc.Close() })
		client := balancerv1.NewBalancerClient(cc)
		rep = &reporter{client: client, ch: make(chan report, 8192), batch: max(cfg.ReportBatch, 1),
			interval: cfg.ReportEvery, met: met, log: rt.Log}
		e.synced = make(chan struct{})
		var once sync.Once
		// The balancer sends one message per service, the whole set at
		// once on connect: the first set counts as arrived once the stream
		// has been quiet for firstSetSettle, so that a route learnt from
		// the third message is there too.
		settled := time.AfterFunc(time.Hour, func() { once.Do(func() { close(e.synced) }) })
		settled.Stop()
		allowed := map[string]bool{}
		for _, name := range file.AllowLoopback {
			allowed[name] = true
		}
		e.watch = &watcher{client: client, ups: ups, log: rt.Log, changed: func() {
			e.rebuildRoutes()
			select {
			case <-e.synced:
			default:
				settled.Reset(firstSetSettle)
			}
		}, allowLocal: func(svc string) bool { return cfg.AllowLoopback || allowed[svc] }}
	}
	if cfg.HTTP.MaxConns < 0 {
		return &service.FlagError{Err: fmt.Errorf("--max-conns must not be negative, got %d", cfg.HTTP.MaxConns)}
	}
	if cfg.HTTP.MaxConns == 0 {
		n := 0
		for _, a := range []string{cfg.HTTPAddr, cfg.HTTPSAddr} {
			if a != "" {
				n++
			}
		}
		cfg.HTTP.MaxConns = defaultMaxConns(fileLimit(), n)
		rt.Log.Debug("connection limit from the file limit", "max_conns", cfg.HTTP.MaxConns, "file_limit", fileLimit())
	}
	p := newProxy(cfg.HTTP, rt.Log, ups, rep, met)
	e.proxy = p
	if e.synced != nil {
		// A fresh process (a restarted container) has no routes from the
		// balancer until its first endpoint set: requests wait for it
		// rather than get 404, and /readyz says 503 meanwhile (both at
		// most warmUpLimit).
		p.firstSet, p.warmUntil = e.synced, time.Now().Add(warmUpLimit)
		rt.AddReadyCheck("endpoints", func(context.Context) error {
			select {
			case <-e.synced:
			default:
				if time.Now().Before(p.warmUntil) {
					return errors.New("no endpoint set from the balancer yet")
				}
			}
			return nil
		})
	}
	if rt.Tracing.Exporting {
		p.tracer = rt.Tracer()
	}
	if cfg.RateLimit > 0 {
		p.limiter = newRateLimiter(cfg.RateLimit, cfg.RateBurst, 100_000)
	}
	if cfg.AccessLog != "" {
		var out io.Writer = os.Stdout
		if cfg.AccessLog != "-" {
			f, err := os.OpenFile(cfg.AccessLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
			if err != nil {
				return fmt.Errorf("--access-log: %w", err)
			}
			rt.OnShutdown(func(context.Context) error { return f.Close() })
			out = f
		}
		p.access = newAccessLog(out, cfg.AccessQuery)
		rt.Go("access-log", p.access.run)
	}
	p.fallback = newFallback(p)

	e.applyFile(file)
	e.loadedPrint.Store(&loaded.print)
	e.publish(nil, &configState{version: 1, sum: loaded.sum, trigger: "start", loadedAt: time.Now(), ok: 0})
	e.rmet.success.Set(1)
	if e.watch != nil {
		rt.Go("balancer-watch", e.watch.run)
		rt.Go("balancer-reports", rep.run)
	}
	if err := e.warmUp(ctx, rt); err != nil {
		return err
	}

	// The wire server first: its WebSocket entrance rides on the HTTP
	// listeners.
	if cfg.wireEnabled() {
		ws, err := e.startWire(rt)
		if err != nil {
			return err
		}
		e.wire = ws
		p.wireWS = ws.ws
	}
	var closers []io.Closer
	if cfg.HTTPAddr != "" {
		ln, err := rt.Listen("http", cfg.HTTPAddr)
		if err != nil {
			return err
		}
		closers = append(closers, ln)
		p.listen(rt, "http", ln, nil)
	}
	var tlsConf *tls.Config
	if len(loaded.certs) > 0 {
		// Certificates come from the live set at each handshake, so a
		// reload swaps them (reload.go); with several, the client's SNI
		// name picks one, and the first is the fallback.
		e.certs.Store(&loaded.certs)
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: e.getCertificate}
	}
	if cfg.HTTPSAddr != "" {
		if tlsConf == nil {
			return &service.FlagError{Err: errors.New("--https-addr needs at least one --https-cert/--https-key pair")}
		}
		ln, err := rt.Listen("https", cfg.HTTPSAddr)
		if err != nil {
			return err
		}
		closers = append(closers, ln)
		c := tlsConf.Clone()
		c.NextProtos = []string{"h2", "http/1.1"}
		p.listen(rt, "https", ln, c)
	}
	for i, t := range file.TCP {
		tp, err := e.startTCP(rt, i, t)
		if err != nil {
			return err
		}
		e.tcp = append(e.tcp, tp)
	}
	for i, u := range file.UDP {
		up, err := e.startUDP(rt, i, u)
		if err != nil {
			return err
		}
		e.udp = append(e.udp, up)
	}
	if err := e.startRuntime(rt); err != nil {
		return err
	}
	if err := e.startDashboard(rt); err != nil {
		return err
	}
	edgev1.RegisterEdgeServer(rt.GRPC, &grpcAPI{e: e})

	rt.Every("refresh", 250*time.Millisecond, ups.refreshAll)
	// Shutdown: the drain window (--drain-delay) stops keep-alive while
	// the listeners still accept; then this hook closes them (a retiring
	// process has already) and drains requests, tunnels and streams.
	rt.DrainDelay(cfg.DrainDelay, func() {
		p.stopKeepAlive()
		if e.wire != nil && cfg.DrainDelay > 0 { // without a window, drain sends it
			e.wire.goAway()
		}
	})
	if err := e.startRestarts(rt); err != nil {
		return err
	}
	if err := e.startReloads(rt); err != nil {
		return err
	}
	rt.OnShutdown(func(ctx context.Context) error {
		for _, c := range closers {
			c.Close()
		}
		var wg sync.WaitGroup
		errs := make([]error, 3+len(e.tcp))
		wg.Add(1)
		go func() { defer wg.Done(); errs[0] = p.drain(ctx) }()
		if e.wire != nil {
			wg.Add(1)
			go func() { defer wg.Done(); errs[1] = e.wire.drain(ctx) }()
		}
		for i, t := range e.tcp {
			wg.Add(1)
			go func() { defer wg.Done(); errs[3+i] = t.drain(ctx) }()
		}
		for _, u := range e.udp {
			u.close()
		}
		wg.Wait()
		ups.closeAll()
		return errors.Join(errs...)
	})
	return nil
}

// rebuildRoutes publishes a new route table: config routes plus routes
// from registry tags.
func (e *Edge) rebuildRoutes() {
	e.mu.Lock()
	defer e.mu.Unlock()
	rs := append([]*route(nil), e.static...)
	taken := map[string]bool{}
	for _, r := range rs {
		taken[r.host+r.prefix] = true
	}
	for _, tr := range e.ups.tagRoutes() {
		name := tr.host + tr.prefix
		if taken[name] {
			continue // the config file wins
		}
		taken[name] = true
		r := &route{name: name, host: tr.host, prefix: tr.prefix, strip: tr.strip,
			service: tr.svc, source: "registry", svc: e.ups.service(tr.svc)}
		e.met.routeSeries(r)
		rs = append(rs, r)
	}
	e.proxy.routes.Store(newRouteTable(rs))
}

type tagRoute struct {
	svc, host, prefix string
	strip             bool
}

// tagRoutes lists the routes asked for by registry tags, by service.
func (u *upstreams) tagRoutes() []tagRoute {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []tagRoute
	for name, s := range u.svcs {
		if s.static {
			continue
		}
		for _, r := range routesFromTags(s.tags) {
			out = append(out, tagRoute{svc: name, host: r[0], prefix: r[1], strip: r[2] != ""})
		}
	}
	return out
}
