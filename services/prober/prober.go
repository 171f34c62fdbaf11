// Package prober is the prober service: it runs ping, traceroute, port-scan,
// health-check, bandwidth, socket-table, interface-counter and peer
// discovery jobs on demand (Run) or on a schedule (Schedule), keeps recent
// results, exports them as Prometheus metrics, and health-checks every
// registered instance that has a check, reporting to the registry with a
// rise/fall threshold. Every target — of a job or of the health loop —
// must pass one allowlist before any packet is sent to it.
package prober

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-net/switchboard/pkg/service"
	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/prober/allow"
	"github.com/switchboard-net/switchboard/services/prober/bandwidth"
	"github.com/switchboard-net/switchboard/services/prober/discovery"
)

// Config is the prober's configuration (its flags).
type Config struct {
	// DataDir holds scheduled jobs (jobs.json: with a registry, the
	// start-up cache of the registry's list); empty keeps them in memory.
	DataDir string
	// RegistryAddr is the registry's gRPC address; empty disables the
	// health loop and keeps the jobs this prober's own.
	RegistryAddr string
	// ID is this prober's id among the probers sharing the work (empty:
	// its name and gRPC port).
	ID string
	// MemberTTL is the TTL of this prober's registration: a prober that
	// stops heartbeating is taken for dead, and its share moves, after it.
	MemberTTL time.Duration
	// Allow is the allowlist rule list (see package allow).
	Allow string
	// Rise and Fall are the consecutive check results needed to mark an
	// instance passing or critical.
	Rise, Fall int
	// BandwidthAddr is where the bandwidth peer listens (TCP and UDP);
	// empty disables it.
	BandwidthAddr string
	// Discovery turns LAN peer discovery on; it needs a key.
	Discovery bool
	// DiscoveryKey is the shared secret discovery datagrams are
	// authenticated with; DiscoveryKeyFile names a file holding it
	// instead. Exactly one is needed with Discovery.
	DiscoveryKey, DiscoveryKeyFile string
	// DiscoveryGroup is the multicast group:port for peer discovery.
	DiscoveryGroup string
	// DiscoveryInterval is the announcement period.
	DiscoveryInterval time.Duration
	// DiscoveryInterfaces limits discovery to these interfaces (all when
	// empty), comma-separated.
	DiscoveryInterfaces string
	// Name is how this prober announces itself.
	Name string
	// ScanRate limits connects per second of one scan; ScanMaxPorts
	// bounds the ports of one scan.
	ScanRate     float64
	ScanMaxPorts int
	// MaxRunning bounds jobs running at once (Run and scheduled).
	MaxRunning int
	// History is how many results are kept per scheduled job.
	History int
	// HealthConcurrency bounds health checks in flight.
	HealthConcurrency int
	// ProcRoot is where /proc is mounted.
	ProcRoot string
	// ProbeModules is the /probe modules file ("" = the built-in modules).
	ProbeModules string
}

// RegisterFlags adds the prober's flags to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	host, _ := os.Hostname()
	fs.StringVar(&c.DataDir, "data-dir", "", "directory for jobs.json: the start-up cache of the registry's scheduled jobs (without a registry, the jobs themselves); empty keeps nothing on disk")
	fs.StringVar(&c.RegistryAddr, "registry-addr", "localhost:7100", "registry gRPC address: the health loop, the scheduled jobs and the probers sharing them; empty disables the health loop and keeps the jobs this prober's own")
	fs.StringVar(&c.ID, "id", "", "this prober's id among the probers sharing health checks and jobs ([A-Za-z0-9._-], unique; default: --name and the gRPC port)")
	fs.DurationVar(&c.MemberTTL, "member-ttl", 5*time.Second, "TTL of this prober's registration in the registry: when it stops heartbeating (three times per TTL), its health checks and jobs move to the other probers after this long")
	fs.StringVar(&c.Allow, "allow", "loopback,registered,peers", "allowed targets of jobs and of the health loop: CIDRs, addresses, host names (must resolve at start), *.suffix, and the keywords loopback, registered (registered instances' addresses, except loopback and link-local ones), peers (discovered probers, likewise), any")
	fs.IntVar(&c.Rise, "rise", 2, "consecutive passing checks before a critical instance is marked passing")
	fs.IntVar(&c.Fall, "fall", 3, "consecutive failing checks before a passing instance is marked critical")
	fs.StringVar(&c.BandwidthAddr, "bandwidth-addr", "127.0.0.1:7402", "bandwidth peer listen address (TCP and UDP); empty disables it")
	fs.BoolVar(&c.Discovery, "discovery", false, "find other probers on the LAN by multicast (needs --discovery-key or --discovery-key-file)")
	fs.StringVar(&c.DiscoveryKey, "discovery-key", "", "shared secret (at least 16 bytes) authenticating discovery datagrams; prefer --discovery-key-file or SWITCHBOARD_DISCOVERY_KEY, since arguments are visible to local users")
	fs.StringVar(&c.DiscoveryKeyFile, "discovery-key-file", "", "file holding the discovery shared secret (surrounding whitespace is ignored)")
	fs.StringVar(&c.DiscoveryGroup, "discovery-group", discovery.DefaultGroup, "peer discovery multicast group:port (with --discovery)")
	fs.DurationVar(&c.DiscoveryInterval, "discovery-interval", 30*time.Second, "peer announcement period")
	fs.StringVar(&c.DiscoveryInterfaces, "discovery-interfaces", "", "comma-separated interfaces to announce and query on (default: every up interface)")
	fs.StringVar(&c.Name, "name", host, "name this prober announces to peers")
	fs.Float64Var(&c.ScanRate, "scan-rate", 50000, "most connects per second of one scan (0: unlimited)")
	fs.IntVar(&c.ScanMaxPorts, "scan-max-ports", 65535, "most ports one scan may cover")
	fs.IntVar(&c.MaxRunning, "max-running", 8, "most jobs running at once; more wait")
	fs.IntVar(&c.History, "history", 50, "results kept per scheduled job")
	fs.IntVar(&c.HealthConcurrency, "health-concurrency", 64, "most instance health checks in flight")
	fs.StringVar(&c.ProcRoot, "proc", "/proc", "where procfs is mounted (socket table and interface counters)")
	fs.StringVar(&c.ProbeModules, "probe-modules", "", "YAML file of /probe modules (blackbox_exporter style: modules: {NAME: {kind: http, timeout: 5s, expect_status: 200}}); the built-in http_2xx, https_2xx, tcp_connect and grpc_health always exist")
}

func (c *Config) validate() error {
	switch {
	case c.Rise < 1 || c.Rise > 100:
		return errors.New("--rise must be 1-100")
	case c.Fall < 1 || c.Fall > 100:
		return errors.New("--fall must be 1-100")
	case c.ScanRate < 0:
		return errors.New("--scan-rate must not be negative")
	case c.ScanMaxPorts < 1 || c.ScanMaxPorts > 65535:
		return errors.New("--scan-max-ports must be 1-65535")
	case c.MaxRunning < 1:
		return errors.New("--max-running must be positive")
	case c.History < 1 || c.History > 10000:
		return errors.New("--history must be 1-10000")
	case c.HealthConcurrency < 1:
		return errors.New("--health-concurrency must be positive")
	case c.MemberTTL < time.Second || c.MemberTTL > time.Hour:
		return errors.New("--member-ttl must be 1s-1h")
	case c.ID != "" && validID(c.ID) != nil:
		return fmt.Errorf("--id: %v", validID(c.ID))
	case c.DiscoveryInterval < 100*time.Millisecond:
		return errors.New("--discovery-interval must be at least 100ms")
	case c.Discovery && c.DiscoveryGroup == "":
		return errors.New("--discovery needs --discovery-group")
	case c.Discovery && c.DiscoveryKey == "" && c.DiscoveryKeyFile == "":
		return errors.New("--discovery needs a shared key: --discovery-key-file (or --discovery-key); unauthenticated discovery is not offered")
	case c.DiscoveryKey != "" && c.DiscoveryKeyFile != "":
		return errors.New("--discovery-key and --discovery-key-file: give one")
	case !c.Discovery && (c.DiscoveryKey != "" || c.DiscoveryKeyFile != ""):
		return errors.New("a discovery key is set but discovery is off: pass --discovery to turn it on")
	}
	return nil
}

// discoveryKey returns the discovery key from its flag or file.
func (c *Config) discoveryKey() ([]byte, error) {
	key := []byte(c.DiscoveryKey)
	flagName := "--discovery-key"
	if c.DiscoveryKeyFile != "" {
		b, err := os.ReadFile(c.DiscoveryKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--discovery-key-file: %w", err)
		}
		key, flagName = bytes.TrimSpace(b), "--discovery-key-file"
	}
	if len(key) < discovery.MinKeyLen {
		return nil, fmt.Errorf("%s: the key has %d bytes; at least %d are needed", flagName, len(key), discovery.MinKeyLen)
	}
	return key, nil
}

// allowVerifyWait bounds the lookups of --allow's host names at start.
const allowVerifyWait = 10 * time.Second

// Spec returns the prober service, ready for service.Main or service.Run.
func Spec() service.Spec {
	cfg := &Config{}
	return service.Spec{
		Name:      "prober",
		GRPCAddr:  "127.0.0.1:7400",
		AdminAddr: "127.0.0.1:7401",
		Flags:     cfg.RegisterFlags,
		Methods:   Methods,
		Start:     func(ctx context.Context, rt *service.Runtime) error { return start(ctx, rt, cfg) },
	}
}

func start(ctx context.Context, rt *service.Runtime, cfg *Config) error {
	if err := cfg.validate(); err != nil {
		return &service.FlagError{Err: err}
	}
	var discoveryKey []byte
	if cfg.Discovery {
		k, err := cfg.discoveryKey()
		if err != nil {
			return &service.FlagError{Err: err}
		}
		discoveryKey = k
	}
	al, err := allow.Parse(cfg.Allow)
	if err != nil {
		return &service.FlagError{Err: fmt.Errorf("--allow: %w", err)}
	}
	vctx, cancel := context.WithTimeout(ctx, allowVerifyWait)
	err = al.Verify(vctx, nil)
	cancel()
	if err != nil {
		return &service.FlagError{Err: fmt.Errorf("--allow: %w", err)}
	}
	met := newMetrics(rt.Metrics)
	r := &runner{cfg: cfg, allow: al, met: met, sem: make(chan struct{}, cfg.MaxRunning), log: rt.Log}

	if cfg.BandwidthAddr != "" {
		ln, err := rt.Listen("bandwidth", cfg.BandwidthAddr)
		if err != nil {
			return err
		}
		host, _, _ := net.SplitHostPort(cfg.BandwidthAddr)
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := rt.ListenPacket("bandwidth-udp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		// Only allowed hosts may run tests against us: a test makes us
		// send as much as they ask for.
		srv := bandwidth.NewServer(ln, pc, rt.Log.With("component", "bandwidth"), al.AllowedAddr)
		rt.Go("bandwidth", srv.Serve)
		r.bandwidthAddr = ln.Addr().String()
	}
	if cfg.Discovery {
		var ifaces []string
		for _, name := range strings.Split(cfg.DiscoveryInterfaces, ",") {
			if name = strings.TrimSpace(name); name != "" {
				ifaces = append(ifaces, name)
			}
		}
		var node *discovery.Node
		onNew := func(discovery.Peer) {
			if node != nil {
				r.notePeers(node.Peers())
			}
		}
		onDrop := func(reason string) { met.discoveryDropped.WithLabelValues(reason).Inc() }
		node, err = discovery.Listen(discovery.Config{Key: discoveryKey, OnDrop: onDrop, Group: cfg.DiscoveryGroup,
			Announce: cfg.DiscoveryInterval, Interfaces: ifaces, OnNewPeer: onNew},
			discovery.Self{Name: cfg.Name, GRPCAddr: rt.Addr("grpc"), BandwidthAddr: r.bandwidthAddr})
		if err != nil {
			// Discovery is a convenience: without it, peers are named explicitly.
			rt.Log.Warn("peer discovery disabled", "err", err)
		} else {
			r.disc = node
			rt.Go("discovery", func(ctx context.Context) error {
				done := make(chan struct{})
				go func() { defer close(done); r.syncPeers(ctx) }()
				defer func() { <-done }()
				return node.Run(ctx)
			})
		}
	}

	id := cfg.ID
	if id == "" {
		id = defaultID(cfg.Name, rt.Addr("grpc"))
	}
	m := newMembers(id)
	var reg registryv1.RegistryClient
	if cfg.RegistryAddr != "" {
		cc, err := rt.Dial(cfg.RegistryAddr)
		if err != nil {
			return err
		}
		rt.OnShutdown(func(context.Context) error { return cc.Close() })
		reg = registryv1.NewRegistryClient(cc)
	}
	var jobs jobRegistry
	if reg != nil {
		jobs = reg
	}
	sched, err := newScheduler(cfg, r, rt.Log.With("component", "scheduler"), jobs, m)
	if err != nil {
		return err
	}
	rt.Go("scheduler", sched.run)
	if reg != nil {
		hl := newHealthLoop(reg, al, cfg, met, rt.Log.With("component", "health"), m)
		rt.Go("health", hl.run)
		ms := newMembership(reg, id, rt.Addr("grpc"), cfg.MemberTTL, rt.Log.With("component", "membership"))
		rt.Go("membership", ms.run)
		rt.OnShutdown(ms.leave)
	}

	mods, err := loadProbeModules(cfg.ProbeModules)
	if err != nil {
		return &service.FlagError{Err: fmt.Errorf("--probe-modules: %w", err)}
	}
	rt.Admin.Handle("/probe", r.probeHandler(mods))

	proberv1.RegisterProberServer(rt.GRPC, &server{r: r, sched: sched})
	return nil
}
