// Package service is the runtime every Switchboard service starts with: flags
// with SWITCHBOARD_* environment twins, log/slog, a gRPC server with
// reflection, grpc.health.v1, OpenTelemetry and Prometheus instrumentation,
// an admin HTTP port (/metrics, /healthz, /readyz), and a graceful shutdown
// that drains in-flight RPCs within a bounded grace period.
//
// A service is a Spec: its name, default addresses, its own flags and a Start
// function that registers its gRPC handlers and background work on the
// Runtime. Main runs a Spec as a program; Run runs it under a context, which
// is how `switchboard dev` runs five services in one process.
package service

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/switchboard-net/switchboard/pkg/access"
	"github.com/switchboard-net/switchboard/pkg/config"
	"github.com/switchboard-net/switchboard/pkg/netx"
	"github.com/switchboard-net/switchboard/pkg/telemetry"
)

// Spec describes one service.
type Spec struct {
	// Name is the short service name ("registry"); spans carry
	// "switchboard-<name>" as their service.name.
	Name string
	// GRPCAddr and AdminAddr are the default listen addresses.
	GRPCAddr, AdminAddr string
	// Flags registers the service's own flags (nil for none).
	Flags func(fs *flag.FlagSet)
	// Methods maps every gRPC method the service registers to the
	// permissions a call needs (health and reflection are public). A method
	// without an entry stops the service at start.
	Methods access.Methods
	// Start registers gRPC services on rt.GRPC, opens extra listeners and
	// starts background work with rt.Go. It returns once the service is set
	// up; the runtime then serves until its context ends.
	Start func(ctx context.Context, rt *Runtime) error
	// Inherit lets the service take its listening sockets from the process
	// that started it (netx.ListenFDsEnv) instead of binding them: Listen,
	// ListenPacket and Inherit return the inherited socket of the same name
	// and address, and the predecessor is told once the service serves. For
	// services that restart themselves without refusing a connection (the
	// edge); others ignore the variable.
	Inherit bool
}

// Option changes how Run runs a Spec.
type Option func(*options)

type options struct {
	lookup config.LookupFunc
	ready  func(addrs map[string]string)
	logOut io.Writer
}

// WithEnv sets where environment twins of flags and OTEL_* variables are
// read from (os.LookupEnv by default; config.NoEnv ignores the environment).
func WithEnv(lookup config.LookupFunc) Option { return func(o *options) { o.lookup = lookup } }

// WithReady calls fn once the service serves, with every listener's name
// ("grpc", "admin", and those opened by Start) and bound address.
func WithReady(fn func(addrs map[string]string)) Option {
	return func(o *options) { o.ready = fn }
}

// WithLogOutput sends logs to w instead of standard error.
func WithLogOutput(w io.Writer) Option { return func(o *options) { o.logOut = w } }

// Main runs spec as a program: it stops on SIGINT or SIGTERM (a second
// signal kills at once) and exits 2 on a flag error, 1 on any other error.
func Main(spec Spec) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() { <-ctx.Done(); stop() }()
	err := Run(ctx, spec, os.Args[1:])
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(err, new(*FlagError)):
		fmt.Fprintf(os.Stderr, "%s: %v\n", spec.Name, err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "%s: %v\n", spec.Name, err)
		os.Exit(1)
	}
}

// FlagError is a bad command line or environment value.
type FlagError struct{ Err error }

// Error returns the underlying error's message.
func (e *FlagError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *FlagError) Unwrap() error { return e.Err }

// Common flags every service takes.
type common struct {
	grpcAddr, adminAddr string
	logFormat, logLevel string
	grace               time.Duration
	trust               trustFlags
	limits              limits
}

// Run parses args, starts the service and serves until ctx ends, then drains
// and stops. It returns the first error that stopped the service, or nil on
// a clean shutdown.
func Run(ctx context.Context, spec Spec, args []string, opts ...Option) error {
	o := options{lookup: os.LookupEnv, logOut: os.Stderr}
	for _, opt := range opts {
		opt(&o)
	}
	fs := flag.NewFlagSet(spec.Name, flag.ContinueOnError)
	var c common
	fs.StringVar(&c.grpcAddr, "grpc-addr", spec.GRPCAddr, "gRPC listen address")
	fs.StringVar(&c.adminAddr, "admin-addr", spec.AdminAddr, "admin HTTP listen address (/metrics, /healthz, /readyz)")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&c.grace, "shutdown-grace", 10*time.Second, "how long shutdown waits for in-flight work")
	c.trust.register(fs)
	c.limits.register(fs)
	if spec.Flags != nil {
		spec.Flags(fs)
	}
	if err := config.Parse(fs, args, o.lookup); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &FlagError{Err: err}
	}
	if c.grace <= 0 {
		return &FlagError{Err: fmt.Errorf("--shutdown-grace must be positive, got %v", c.grace)}
	}
	if err := c.limits.check(); err != nil {
		return &FlagError{Err: err}
	}
	log, err := telemetry.NewLogger(o.logOut, c.logFormat, c.logLevel)
	if err != nil {
		return &FlagError{Err: err}
	}
	log = log.With("service", spec.Name)

	tr, err := newTrust(c.trust)
	if err != nil {
		return err
	}
	rt, err := newRuntime(ctx, spec.Name, log, o.lookup, tr, spec.Methods, c.limits)
	if err != nil {
		return err
	}
	if spec.Inherit {
		if rt.inherited, err = netx.Inherit(o.lookup); err != nil {
			return err
		}
		if rt.inherited != nil {
			log.Info("taking over listening sockets from the previous process", "sockets", rt.inherited.String())
		}
	}
	return rt.run(ctx, spec, c, o)
}

// Runtime is what a service's Start gets: the gRPC server to register on,
// telemetry, and owned background work.
type Runtime struct {
	// Log is the service's logger.
	Log *slog.Logger
	// GRPC is the service's gRPC server; register services on it in Start.
	GRPC *grpc.Server
	// Health is the grpc.health.v1 server; the runtime sets "" and every
	// registered service SERVING once started and NOT_SERVING on shutdown.
	Health *health.Server
	// Metrics is the service's Prometheus registry, served on /metrics.
	Metrics *prometheus.Registry
	// Admin is the admin HTTP mux; Start may add handlers.
	Admin *http.ServeMux
	// Tracing is the service's tracer provider.
	Tracing *telemetry.Tracing

	name     string
	lookup   config.LookupFunc
	trust    *trust
	methods  access.Methods
	grpcMet  *grpcprom.ServerMetrics
	stopping context.Context // cancelled when shutdown begins
	stop     context.CancelFunc

	inherited *netx.Inherited // sockets from a predecessor (Spec.Inherit)
	retire    chan struct{}   // closed by Retire
	retiring  atomic.Bool

	mu           sync.Mutex
	addrs        map[string]string
	closers      []io.Closer
	socks        []socket // every listening socket, for a successor
	hooks        []func(context.Context) error
	readyFns     []func()
	checks       map[string]func(context.Context) error
	ready        bool
	shuttingDown bool
	drainDelay   time.Duration
	drainEnter   func()
	workers      sync.WaitGroup
	workerErr    chan error
}

// socket is a listening socket the runtime holds, as a successor asks for it.
type socket struct {
	netx.Socket
	c io.Closer
}

func newRuntime(ctx context.Context, name string, log *slog.Logger, lookup config.LookupFunc, tr *trust, methods access.Methods, lim limits) (*Runtime, error) {
	trc, err := telemetry.NewTracing(ctx, "switchboard-"+name, lookup)
	if err != nil {
		return nil, err
	}
	reg := telemetry.NewRegistry()
	met := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets([]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}),
	))
	reg.MustRegister(met)
	stopping, stop := context.WithCancel(context.Background())
	rt := &Runtime{
		Log:       log,
		Health:    health.NewServer(),
		Metrics:   reg,
		Admin:     http.NewServeMux(),
		Tracing:   trc,
		name:      name,
		lookup:    lookup,
		trust:     tr,
		methods:   methods,
		grpcMet:   met,
		stopping:  stopping,
		stop:      stop,
		addrs:     map[string]string{},
		checks:    map[string]func(context.Context) error{},
		workerErr: make(chan error, 1),
		retire:    make(chan struct{}),
	}
	opts := []grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(trc.Provider),
			otelgrpc.WithPropagators(telemetry.Propagator()),
		)),
		grpc.ChainUnaryInterceptor(met.UnaryServerInterceptor(), rt.unaryAuth),
		grpc.ChainStreamInterceptor(met.StreamServerInterceptor(), rt.streamAuth, newStreamGate(lim).intercept, rt.endStreamsOnStop),
		grpc.MaxConcurrentStreams(uint32(lim.streamsPerConn)),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
	}
	if cfg := rt.ServerTLS(true); cfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	rt.GRPC = grpc.NewServer(opts...)
	reflection.Register(rt.GRPC)
	healthpb.RegisterHealthServer(rt.GRPC, rt.Health)
	rt.Health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return rt, nil
}

// Name returns the service's short name.
func (rt *Runtime) Name() string { return rt.name }

// Tracer returns a tracer of the service's provider.
func (rt *Runtime) Tracer() trace.Tracer {
	return rt.Tracing.Provider.Tracer("github.com/switchboard-net/switchboard/" + rt.name)
}

// Stopping returns a context that ends when shutdown begins: long-lived work
// (watch streams, loops) ends with it, while in-flight unary RPCs drain.
func (rt *Runtime) Stopping() context.Context { return rt.stopping }

// Lookup reads an environment variable the way this runtime was told to.
func (rt *Runtime) Lookup(key string) (string, bool) { return rt.lookup(key) }

// Listen opens a TCP listener for the named role ("dns", "http", ...); the
// runtime records and logs its bound address and closes it on shutdown.
// With Spec.Inherit, the socket a predecessor handed over for the same
// name and address is used instead of binding a new one.
func (rt *Runtime) Listen(name, addr string) (net.Listener, error) {
	if ln, err := rt.Inherit(name, "tcp", addr); ln != nil || err != nil {
		return ln, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener on %s: %w", name, addr, err)
	}
	rt.record(netx.Socket{Name: name, Network: "tcp", Addr: addr}, ln.Addr().String(), ln, false)
	return ln, nil
}

// ListenPacket opens a UDP socket for the named role, like Listen.
func (rt *Runtime) ListenPacket(name, addr string) (net.PacketConn, error) {
	if rt.inherited != nil {
		pc, err := rt.inherited.PacketConn(name, "udp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s socket on %s: %w", name, addr, err)
		}
		if pc != nil {
			rt.record(netx.Socket{Name: name, Network: "udp", Addr: addr}, pc.LocalAddr().String(), pc, true)
			return pc, nil
		}
	}
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s socket on %s: %w", name, addr, err)
	}
	rt.record(netx.Socket{Name: name, Network: "udp", Addr: addr}, pc.LocalAddr().String(), pc, false)
	return pc, nil
}

// Inherit returns the stream listener (network "tcp" or "unix") a
// predecessor handed over for this name and address, recorded like
// Listen's, or nil when there is none (no predecessor, or a new address):
// the caller then opens one itself, for example a Unix socket with its own
// permissions, and records it with AddListener.
func (rt *Runtime) Inherit(name, network, addr string) (net.Listener, error) {
	if rt.inherited == nil {
		return nil, nil
	}
	ln, err := rt.inherited.Listener(name, network, addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener on %s: %w", name, addr, err)
	}
	if ln != nil {
		bound := ln.Addr().String()
		if network == "unix" {
			bound = addr // the socket may have been bound under a temporary name
		}
		rt.record(netx.Socket{Name: name, Network: network, Addr: addr}, bound, ln, true)
	}
	return ln, nil
}

// Inherited reports whether this process took its listening sockets over
// from a predecessor that is still draining.
func (rt *Runtime) Inherited() bool { return rt.inherited != nil }

// AddListener records a listener opened elsewhere (for example on a port
// another socket of the service already holds).
func (rt *Runtime) AddListener(name string, addr net.Addr, c io.Closer) {
	rt.record(netx.Socket{Name: name, Network: addr.Network(), Addr: addr.String()}, addr.String(), c, false)
}

func (rt *Runtime) record(s netx.Socket, bound string, c io.Closer, inherited bool) {
	rt.mu.Lock()
	rt.addrs[s.Name] = bound
	rt.closers = append(rt.closers, c)
	rt.socks = append(rt.socks, socket{Socket: s, c: c})
	rt.mu.Unlock()
	if inherited {
		rt.Log.Info("listening", "listener", s.Name, "addr", bound, "inherited", true)
		return
	}
	rt.Log.Info("listening", "listener", s.Name, "addr", bound)
}

// HandOver prepares every listening socket the runtime holds for a
// successor process (netx.Handoff.Start starts it). Once the successor
// serves, Retire stops this process without refusing a connection.
func (rt *Runtime) HandOver() (*netx.Handoff, error) {
	rt.mu.Lock()
	socks := append([]socket(nil), rt.socks...)
	rt.mu.Unlock()
	h := &netx.Handoff{}
	for _, s := range socks {
		sc, ok := s.c.(syscall.Conn)
		if !ok {
			h.Close()
			return nil, fmt.Errorf("listener %s (%T) cannot be handed over", s.Name, s.c)
		}
		if err := h.Add(s.Socket, sc); err != nil {
			h.Close()
			return nil, err
		}
	}
	return h, nil
}

// Retire stops the service because a successor process has taken over its
// listening sockets (HandOver) and serves on them: shutdown closes this
// process's copies at once (connections keep queueing on the shared
// sockets, for the successor), leaves readiness as it is (the addresses
// still serve), tells clients of long-lived connections to move (gRPC
// GOAWAY, no more keep-alive on the admin port), and drains as on SIGTERM.
// Run then returns nil. Retire reports false, and does nothing, when
// shutdown has already begun for another reason (SIGTERM during the
// restart): the caller should then stop the successor.
func (rt *Runtime) Retire() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.shuttingDown {
		return false
	}
	if rt.retiring.CompareAndSwap(false, true) {
		close(rt.retire)
	}
	return true
}

// Retiring reports whether Retire was called: drain hooks use it to leave
// what the successor now uses (a Unix socket's path, say) in place.
func (rt *Runtime) Retiring() bool { return rt.retiring.Load() }

// OnReady adds fn, called once the service serves: every listener accepts
// and readiness is on (and, with a predecessor, before it is told so).
func (rt *Runtime) OnReady(fn func()) {
	rt.mu.Lock()
	rt.readyFns = append(rt.readyFns, fn)
	rt.mu.Unlock()
}

// DrainDelay makes shutdown keep serving for d once it begins, so that
// load balancers and clients move away before any connection is refused:
// readiness (/readyz, grpc.health.v1) reports not serving and enter is
// called at once (a service stops keeping connections alive there), but
// listeners keep accepting and Stopping() does not end until d has passed.
// The grace period (--shutdown-grace) starts after d. On Retire, the
// listeners close first and d is how long kept-alive connections get to
// move over on their own before drain hooks close the idle ones.
func (rt *Runtime) DrainDelay(d time.Duration, enter func()) {
	rt.mu.Lock()
	rt.drainDelay, rt.drainEnter = d, enter
	rt.mu.Unlock()
}

// Addr returns the bound address of the named listener, or "".
func (rt *Runtime) Addr(name string) string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.addrs[name]
}

// Addrs returns every listener's bound address by name.
func (rt *Runtime) Addrs() map[string]string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	m := make(map[string]string, len(rt.addrs))
	for k, v := range rt.addrs {
		m[k] = v
	}
	return m
}

// Go runs fn in the background until the runtime stops (its context is
// Stopping()). An error other than context.Canceled stops the service.
func (rt *Runtime) Go(name string, fn func(ctx context.Context) error) {
	rt.workers.Add(1)
	go func() {
		defer rt.workers.Done()
		err := fn(rt.stopping)
		if err != nil && !errors.Is(err, context.Canceled) && rt.stopping.Err() == nil {
			select {
			case rt.workerErr <- fmt.Errorf("%s: %w", name, err):
			default:
			}
		}
	}()
}

// Every calls fn every interval in the background until the runtime stops
// (a periodic refresh, sweep or flush).
func (rt *Runtime) Every(name string, interval time.Duration, fn func()) {
	rt.Go(name, func(ctx context.Context) error {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				fn()
			}
		}
	})
}

// OnShutdown adds a drain hook, called when shutdown begins (after Stopping
// is cancelled, before the gRPC server drains) with the grace-period
// context. Hooks run in reverse order of registration.
func (rt *Runtime) OnShutdown(fn func(ctx context.Context) error) {
	rt.mu.Lock()
	rt.hooks = append(rt.hooks, fn)
	rt.mu.Unlock()
}

// AddReadyCheck makes /readyz also depend on fn (for example, "the backend
// is reachable"). fn gets a context with a short deadline.
func (rt *Runtime) AddReadyCheck(name string, fn func(ctx context.Context) error) {
	rt.mu.Lock()
	rt.checks[name] = fn
	rt.mu.Unlock()
}

// endStreamsOnStop ends streaming RPCs when shutdown begins, so that long
// watches do not hold GracefulStop for the whole grace period.
func (rt *Runtime) endStreamsOnStop(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	stopAfter := context.AfterFunc(rt.stopping, cancel)
	defer stopAfter()
	return h(srv, &ctxStream{ServerStream: ss, ctx: ctx})
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

func (rt *Runtime) run(ctx context.Context, spec Spec, c common, o options) (err error) {
	defer rt.stop()
	if err := rt.RequireTLS("gRPC (--grpc-addr)", c.grpcAddr, rt.trust.serving()); err != nil {
		return err
	}
	grpcLn, err := rt.Listen("grpc", c.grpcAddr)
	if err != nil {
		return err
	}
	adminLn, err := rt.Listen("admin", c.adminAddr)
	if err != nil {
		rt.closeListeners()
		return err
	}
	adminTLS := rt.ServerTLS(false)
	adminLoopback := IsLoopback(adminLn.Addr().String())
	if adminTLS != nil {
		adminLn = tls.NewListener(adminLn, adminTLS)
	}
	if spec.Start != nil {
		if err := spec.Start(rt.stopping, rt); err != nil {
			rt.stop()
			rt.closeListeners()
			rt.waitWorkers(c.grace)
			_ = rt.Tracing.Shutdown(context.Background())
			return fmt.Errorf("start %s: %w", spec.Name, err)
		}
	}
	if err := rt.checkMethods(); err != nil {
		rt.stop()
		rt.closeListeners()
		rt.waitWorkers(c.grace)
		_ = rt.Tracing.Shutdown(context.Background())
		return fmt.Errorf("start %s: %w", spec.Name, err)
	}
	rt.grpcMet.InitializeMetrics(rt.GRPC)
	rt.installAdmin()
	if rt.trust.acl != nil {
		rt.Every("acl-reload", time.Second, rt.reloadACL)
	}

	// Ready before serving: the first request answered (possibly queued
	// while a predecessor still served this socket) sees it so.
	for name := range rt.GRPC.GetServiceInfo() {
		rt.Health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	rt.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	rt.mu.Lock()
	rt.ready = true
	rt.mu.Unlock()
	serveErr := make(chan error, 2)
	go func() { serveErr <- rt.GRPC.Serve(grpcLn) }()
	admin := &http.Server{
		Handler:           rt.guardAdmin(rt.Admin, adminLoopback, adminTLS != nil),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	go func() {
		if err := admin.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("admin server: %w", err)
		}
	}()

	addrs := rt.Addrs()
	rt.Log.Info("serving", "grpc", addrs["grpc"], "admin", addrs["admin"],
		"tls", rt.trust.serving(), "client_certs", rt.trust.hasCA, "acl", rt.trust.acl != nil)
	go rt.logReady(ctx, addrs)
	if o.ready != nil {
		o.ready(addrs)
	}

	rt.mu.Lock()
	readyFns := rt.readyFns
	rt.mu.Unlock()
	for _, fn := range readyFns {
		fn()
	}
	if rt.inherited != nil {
		for _, s := range rt.inherited.CloseUnused() {
			rt.Log.Info("closed an inherited socket no listener asked for", "listener", s.Name, "addr", s.Addr)
		}
		if err := rt.inherited.Ready(); err != nil {
			rt.Log.Warn("previous process not told we serve", "err", err)
		}
	}

	select {
	case <-ctx.Done():
		rt.Log.Info("shutting down", "grace", c.grace)
	case <-rt.retire:
		rt.Log.Info("retiring: a new process serves on our listening sockets", "grace", c.grace)
	case err = <-rt.workerErr:
		rt.Log.Error("stopping after a failure", "err", err)
	case err = <-serveErr:
		rt.Log.Error("stopping after a failure", "err", err)
	}
	rt.shutdown(c.grace, admin)
	return err
}

// logReady logs "ready" once /readyz would answer 200, and before that,
// once, why it would not (a registry whose Consul is unreachable serves,
// but is not ready). It polls until the first success or ctx ends.
func (rt *Runtime) logReady(ctx context.Context, addrs map[string]string) {
	const every = 250 * time.Millisecond
	var said string
	for {
		err := rt.readiness(ctx)
		if err == nil {
			rt.Log.Info("ready", "grpc", addrs["grpc"], "admin", addrs["admin"])
			return
		}
		if said == "" && ctx.Err() == nil {
			said = err.Error()
			rt.Log.Warn("serving but not ready yet: /readyz answers 503", "reason", said)
		}
		select {
		case <-ctx.Done():
			return
		case <-rt.stopping.Done():
			return
		case <-time.After(every):
		}
	}
}

// reloadACL re-reads the ACL file when it changed; a bad file is logged and
// the old rules stay in force.
func (rt *Runtime) reloadACL() {
	changed, err := rt.trust.acl.Reload()
	switch {
	case err != nil:
		rt.Log.Error("ACL file not reloaded; the previous rules stay in force", "err", err)
	case changed:
		rt.Log.Info("ACL file reloaded", "file", rt.trust.acl.Path())
	}
}

func (rt *Runtime) installAdmin() {
	rt.Admin.Handle("GET /metrics", promhttp.HandlerFor(rt.Metrics, promhttp.HandlerOpts{}))
	rt.Admin.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	rt.Admin.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := rt.readiness(r.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
}

func (rt *Runtime) readiness(ctx context.Context) error {
	rt.mu.Lock()
	ready := rt.ready
	names := make([]string, 0, len(rt.checks))
	for n := range rt.checks {
		names = append(names, n)
	}
	checks := make([]func(context.Context) error, 0, len(names))
	sort.Strings(names)
	for _, n := range names {
		checks = append(checks, rt.checks[n])
	}
	rt.mu.Unlock()
	if !ready {
		return errors.New("starting or stopping")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for i, check := range checks {
		if err := check(ctx); err != nil {
			return fmt.Errorf("%s: %w", names[i], err)
		}
	}
	return nil
}

// shutdown drains: readiness off, the drain delay (DrainDelay) if any,
// streams and workers told to stop, drain hooks, then gRPC GracefulStop
// bounded by grace, then telemetry flush. A retiring runtime (Retire)
// closes its listeners first and keeps readiness on.
func (rt *Runtime) shutdown(grace time.Duration, admin *http.Server) {
	rt.mu.Lock()
	rt.shuttingDown = true
	retiring := rt.Retiring()
	if !retiring {
		rt.ready = false
	}
	hooks := append([]func(context.Context) error(nil), rt.hooks...)
	delay, enter := rt.drainDelay, rt.drainEnter
	rt.mu.Unlock()
	stopped := make(chan struct{})
	if retiring {
		rt.closeListeners()
		admin.SetKeepAlivesEnabled(false)
		go func() { rt.GRPC.GracefulStop(); close(stopped) }()
	} else {
		rt.Health.Shutdown()
	}
	if enter != nil {
		enter()
	}
	switch {
	case delay > 0 && retiring:
		rt.Log.Info("draining: connections are not kept alive; idle ones close after the drain delay", "drain_delay", delay)
		time.Sleep(delay)
	case delay > 0:
		rt.Log.Info("draining: not ready and connections are not kept alive; listeners close after the drain delay", "drain_delay", delay)
		time.Sleep(delay)
	}
	rt.stop()

	graceCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	for i := len(hooks) - 1; i >= 0; i-- {
		if err := hooks[i](graceCtx); err != nil {
			rt.Log.Warn("drain hook", "err", err)
		}
	}
	if !retiring {
		go func() { rt.GRPC.GracefulStop(); close(stopped) }()
	}
	select {
	case <-stopped:
	case <-graceCtx.Done():
		rt.Log.Warn("grace period over; cancelling in-flight RPCs")
		rt.GRPC.Stop()
		<-stopped
	}
	rt.waitWorkers(time.Until(deadlineOf(graceCtx)))
	_ = admin.Shutdown(graceCtx)
	_ = admin.Close()
	rt.closeListeners()
	flushCtx, cancelFlush := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelFlush()
	if err := rt.Tracing.Shutdown(flushCtx); err != nil {
		rt.Log.Warn("flushing traces", "err", err)
	}
	rt.Log.Info("stopped")
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

func (rt *Runtime) waitWorkers(max time.Duration) {
	done := make(chan struct{})
	go func() { rt.workers.Wait(); close(done) }()
	if max < time.Second {
		max = time.Second
	}
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		rt.Log.Warn("background work did not stop in time")
	}
}

func (rt *Runtime) closeListeners() {
	rt.mu.Lock()
	closers := rt.closers
	rt.closers = nil
	rt.mu.Unlock()
	for _, c := range closers {
		_ = c.Close()
	}
}
