// Package resolver is Switchboard's DNS front (on github.com/miekg/dns):
// authoritative for the service zone (<service>.service.switchboard. A,
// AAAA and SRV, live from the registry's Watch) and for static zones read
// from RFC 1035 master files plus records managed over gRPC, and a caching
// forwarder for every other name, for allowed client networks.
//
// Answers for our zones are packed once per zone change into an immutable
// snapshot and patched per query (ID, flags, the query's case, rotation,
// OPT, truncation), so the answer path stays allocation-light.
package resolver

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/switchboard-net/switchboard/pkg/service"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	resolverv1 "github.com/switchboard-net/switchboard/proto/switchboard/resolver/v1"
)

// Config is the resolver's configuration, from flags.
type Config struct {
	// DNSAddr is where DNS is served, UDP and TCP on the same port.
	DNSAddr string
	// Zone is the service zone's origin.
	Zone string
	// ZoneFiles are RFC 1035 master files, each defining a static zone:
	// "path", or "path=origin" for a file without $ORIGIN.
	ZoneFiles listFlag
	// NSName is the service zone's name server (NS and SOA MNAME);
	// default ns.<zone>.
	NSName string
	// AdvertiseAddrs are the addresses of NSName when it lies in the
	// service zone; default: the --dns-addr host (see advertiseAddrs).
	AdvertiseAddrs listFlag
	// Upstreams are resolvers (host:port) for names outside our zones.
	Upstreams listFlag
	// AllowRecursion lists the client networks that may use forwarding.
	AllowRecursion listFlag
	// CacheSize bounds the forwarding cache (entries; 0 disables it).
	CacheSize int
	// RRLRate limits UDP responses per second per client /24 or /56 (0: off).
	RRLRate float64
	// RRLExemptLoopback exempts loopback clients from rate limiting.
	RRLExemptLoopback bool
	// UpstreamRandomizeCase sends forwarded names in random case (0x20)
	// and accepts only replies that echo it exactly.
	UpstreamRandomizeCase bool
	// RegistryAddr is the registry's gRPC address.
	RegistryAddr string
	// ServiceTTL is the TTL of service-zone records and its negative TTL.
	ServiceTTL time.Duration
	// UpstreamTimeout bounds each upstream attempt.
	UpstreamTimeout time.Duration
	// UDPSockets is how many UDP sockets share the DNS port (Linux).
	UDPSockets int
	// Transfer configures zone transfers and NOTIFY (transfer.go).
	Transfer TransferConfig
}

// listFlag is a repeatable flag; each value may also be a comma-separated list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// defaultAllow is where recursion is allowed unless --allow-recursion says otherwise.
var defaultAllow = []string{"127.0.0.0/8", "::1/128"}

// RegisterFlags adds the resolver's flags to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DNSAddr, "dns-addr", "127.0.0.1:8053", "DNS listen address (UDP and TCP on the same port)")
	fs.StringVar(&c.Zone, "zone", "switchboard.", "service zone: <service>.service.<zone>")
	fs.Var(&c.ZoneFiles, "zone-file", "RFC 1035 master file of a static zone, path or path=origin (repeatable; its SOA defines the zone; reloaded on change and SIGHUP)")
	fs.StringVar(&c.NSName, "ns-name", "", "name server of the service zone, in its NS record and SOA (default ns.<zone>)")
	fs.Var(&c.AdvertiseAddrs, "advertise-addr", "IP address(es) clients reach this resolver on, the address records of --ns-name (default: the --dns-addr host; for 0.0.0.0 or ::, the host's first private address)")
	fs.Var(&c.Upstreams, "upstream", "upstream resolver host:port for other names (repeatable; none: no forwarding)")
	fs.Var(&c.AllowRecursion, "allow-recursion", "client networks allowed to use forwarding (CIDR list; default 127.0.0.0/8,::1/128)")
	fs.IntVar(&c.CacheSize, "cache-size", 10000, "forwarding cache entries (0 disables the cache)")
	fs.Float64Var(&c.RRLRate, "rrl-rate", defaultRRLRate, "UDP responses per second per client /24 (IPv4) or /56 (IPv6); 0 disables rate limiting")
	fs.BoolVar(&c.RRLExemptLoopback, "rrl-exempt-loopback", true, "never rate-limit loopback clients (127.0.0.0/8, ::1)")
	fs.StringVar(&c.RegistryAddr, "registry-addr", "localhost:7100", "registry gRPC address")
	fs.DurationVar(&c.ServiceTTL, "service-ttl", 5*time.Second, "TTL of service-zone records (and their negative TTL)")
	fs.DurationVar(&c.UpstreamTimeout, "upstream-timeout", 2*time.Second, "timeout of each upstream attempt")
	fs.BoolVar(&c.UpstreamRandomizeCase, "upstream-randomize-case", false, "send forwarded names in random letter case (0x20) and accept only replies echoing it exactly; needs upstreams that keep the question's case")
	fs.IntVar(&c.UDPSockets, "udp-sockets", runtime.GOMAXPROCS(0), "UDP sockets sharing the DNS port with SO_REUSEPORT, one reader each (Linux)")
	c.Transfer.registerTransferFlags(fs)
}

// Spec returns the resolver service, ready for service.Main or service.Run.
func Spec() service.Spec {
	cfg := &Config{}
	return service.Spec{
		Name:      "resolver",
		GRPCAddr:  "127.0.0.1:7300",
		AdminAddr: "127.0.0.1:7301",
		Flags:     cfg.RegisterFlags,
		Methods:   Methods,
		Start:     func(ctx context.Context, rt *service.Runtime) error { return start(ctx, rt, cfg) },
	}
}

// validate checks the configuration and returns the parsed allow list.
func (c *Config) validate() ([]netip.Prefix, error) {
	if _, ok := dns.IsDomainName(c.Zone); !ok || c.Zone == "" || c.Zone == "." {
		return nil, fmt.Errorf("--zone: %q is not a domain name", c.Zone)
	}
	if _, ok := dns.IsDomainName(c.NSName); c.NSName != "" && (!ok || c.NSName == ".") {
		return nil, fmt.Errorf("--ns-name: %q is not a domain name", c.NSName)
	}
	for _, a := range c.AdvertiseAddrs {
		if _, err := netip.ParseAddr(a); err != nil {
			return nil, fmt.Errorf("--advertise-addr: %q is not an IP address", a)
		}
	}
	for _, v := range c.ZoneFiles {
		if _, err := parseZoneSource(v); err != nil {
			return nil, fmt.Errorf("--zone-file: %w", err)
		}
	}
	if c.CacheSize < 0 {
		return nil, fmt.Errorf("--cache-size: must not be negative, got %d", c.CacheSize)
	}
	if c.RRLRate < 0 {
		return nil, fmt.Errorf("--rrl-rate: must not be negative, got %v", c.RRLRate)
	}
	if c.ServiceTTL < time.Second {
		return nil, fmt.Errorf("--service-ttl: must be at least 1s, got %v", c.ServiceTTL)
	}
	if c.UDPSockets < 1 || c.UDPSockets > 64 {
		return nil, fmt.Errorf("--udp-sockets: must be 1-64, got %d", c.UDPSockets)
	}
	if c.UpstreamTimeout <= 0 {
		return nil, fmt.Errorf("--upstream-timeout: must be positive, got %v", c.UpstreamTimeout)
	}
	for _, u := range c.Upstreams {
		if _, _, err := net.SplitHostPort(u); err != nil {
			return nil, fmt.Errorf("--upstream: %q: %w", u, err)
		}
	}
	allow := c.AllowRecursion
	if len(allow) == 0 {
		allow = defaultAllow
	}
	var prefixes []netip.Prefix
	for _, a := range allow {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return nil, fmt.Errorf("--allow-recursion: %w", err)
		}
		prefixes = append(prefixes, p.Masked())
	}
	return prefixes, nil
}

func start(ctx context.Context, rt *service.Runtime, cfg *Config) error {
	allow, err := cfg.validate()
	if err != nil {
		return &service.FlagError{Err: err}
	}
	xfr, err := cfg.Transfer.validate()
	if err != nil {
		return &service.FlagError{Err: err}
	}
	var static []*staticZone
	for _, v := range cfg.ZoneFiles {
		src, _ := parseZoneSource(v) // validated
		z, err := loadZoneFile(src)
		if err != nil {
			return err
		}
		static = append(static, z)
	}
	advertise, warn := advertiseAddrs(cfg)
	if warn != "" {
		rt.Log.Warn(warn)
	}
	s := newServer(ctx, rt.Log, cfg, static, allow, advertise)
	s.xfrAllow, s.xfrKey = xfr.allow, xfr.key
	if len(xfr.allow) > 0 || len(xfr.notify) > 0 {
		// Only secondaries see serials move with content and need the
		// changes: without them the rebuild skips the journal's work.
		s.journal = newJournal(cfg.Transfer.Journal, defaultJournalBytes)
	}
	if len(xfr.notify) > 0 {
		s.notifier = newNotifier(rt.Log, xfr.notify, xfr.key)
		s.notifier.count = s.met.notify
		rt.Go("notify", s.notifier.run)
	}
	s.mu.Lock()
	err = s.rebuildLocked()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	// SIGHUP reloads the zone files (and is harmless without any).
	hup := subscribeHUP()
	rt.Go("zone-files", func(ctx context.Context) error { return s.watchZoneFiles(ctx, hup) })
	rt.Metrics.MustRegister(s.collectors()...)

	cc, err := rt.Dial(cfg.RegistryAddr)
	if err != nil {
		return err
	}
	rt.OnShutdown(func(context.Context) error { return cc.Close() })
	reg := registryv1.NewRegistryClient(cc)
	rt.Go("watch-services", func(ctx context.Context) error { return s.watchServices(ctx, reg) })
	rt.Go("watch-records", func(ctx context.Context) error { return s.watchRecords(ctx, reg) })
	if s.rrl != nil {
		rt.Go("rrl-sweep", func(ctx context.Context) error {
			t := time.NewTicker(10 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case now := <-t.C:
					s.rrl.sweep(now)
				}
			}
		})
	}
	rt.AddReadyCheck("registry", func(context.Context) error {
		if !s.synced.Load() {
			return errors.New("no service snapshot from the registry yet")
		}
		return nil
	})

	resolverv1.RegisterResolverServer(rt.GRPC, &api{s: s, reg: reg})

	pcs, ln, err := listenDNS(cfg.DNSAddr, cfg.UDPSockets)
	if err != nil {
		return err
	}
	servers := map[string]*dns.Server{}
	for i, pc := range pcs {
		name := "dns"
		if i > 0 {
			name = "dns-udp-" + strconv.Itoa(i)
		}
		rt.AddListener(name, pc.LocalAddr(), pc)
		u := newUDPServer(s, pc.(*net.UDPConn))
		rt.Go(name, u.serve)
	}
	rt.AddListener("dns-tcp", ln.Addr(), ln)
	servers["dns-tcp"] = &dns.Server{Listener: ln, Handler: s, MsgAcceptFunc: s.acceptTCP,
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		IdleTimeout: func() time.Duration { return 10 * time.Second }, MaxTCPQueries: 1000}
	if xfr.key != nil {
		servers["dns-tcp"].TsigProvider = xfr.key // verified here, signed by serveSpecial
	}
	for name, srv := range servers {
		rt.Go(name, func(context.Context) error { return srv.ActivateAndServe() })
		rt.OnShutdown(func(ctx context.Context) error { return srv.ShutdownContext(ctx) })
	}
	return nil
}

// listenDNS binds UDP and TCP on the same port, with n UDP sockets sharing
// it where the system allows (SO_REUSEPORT). With port 0 the TCP listener
// picks the port (TCP ports are the scarcer ones on a busy host) and it
// retries until the UDP port is free too.
func listenDNS(addr string, n int) ([]net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, &service.FlagError{Err: fmt.Errorf("--dns-addr: %w", err)}
	}
	if !reusePortSupported {
		n = 1
	}
	var lc net.ListenConfig
	ulc := net.ListenConfig{}
	if n > 1 {
		ulc.Control = reusePort
	}
	for attempt := 0; ; attempt++ {
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dns tcp listener on %s: %w", addr, err)
		}
		bound := net.JoinHostPort(host, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		var pcs []net.PacketConn
		for range n {
			pc, perr := ulc.ListenPacket(context.Background(), "udp", bound)
			if perr != nil {
				err = perr
				break
			}
			pcs = append(pcs, pc)
		}
		if err == nil {
			return pcs, ln, nil
		}
		for _, pc := range pcs {
			pc.Close()
		}
		ln.Close()
		if port != "0" || attempt >= 20 {
			return nil, nil, fmt.Errorf("dns udp socket on %s: %w", bound, err)
		}
	}
}

// advertiseAddrs returns the addresses of the service zone's name server:
// --advertise-addr, else the --dns-addr host when it is one address, else
// (0.0.0.0 or ::) the host's first private address, as Consul picks its
// advertise address. warn says when the choice is a guess.
func advertiseAddrs(cfg *Config) (addrs []netip.Addr, warn string) {
	for _, a := range cfg.AdvertiseAddrs {
		addrs = append(addrs, netip.MustParseAddr(a).Unmap()) // validated
	}
	if len(addrs) > 0 {
		return addrs, ""
	}
	host, _, _ := net.SplitHostPort(cfg.DNSAddr)
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err == nil && !ip.IsUnspecified() {
		return []netip.Addr{ip.Unmap()}, ""
	}
	only4 := ip.Is4() // 0.0.0.0 listens on IPv4 only
	ifaddrs, _ := net.InterfaceAddrs()
	var best netip.Addr
	for _, ia := range ifaddrs {
		p, perr := netip.ParsePrefix(ia.String())
		if perr != nil {
			continue
		}
		a := p.Addr().Unmap()
		if !a.IsGlobalUnicast() || only4 && !a.Is4() {
			continue
		}
		if a.IsPrivate() {
			best = a
			break
		}
		if !best.IsValid() {
			best = a
		}
	}
	if !best.IsValid() {
		best = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	return []netip.Addr{best}, "--advertise-addr not set and --dns-addr " + cfg.DNSAddr +
		" is not one address: the service zone's name server is advertised at " + best.String() + " (set --advertise-addr)"
}
