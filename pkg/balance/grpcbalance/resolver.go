package grpcbalance

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/switchboard-net/switchboard/pkg/balance"
	"github.com/switchboard-net/switchboard/pkg/watch"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
)

// Scheme is the resolver scheme for services balanced by the balancer
// service: "switchboard:///SERVICE", or "switchboard://HOST:PORT/SERVICE"
// to name the balancer in the target.
const Scheme = "switchboard"

// StreamPolicy is the gRPC balancer the "switchboard" resolver selects: it
// picks with the policy, effective weights, health and ejections that the
// balancer service streams, and reports outcomes to its local Set.
const StreamPolicy = Prefix + "stream"

// HashKeyHeader is the outgoing metadata key whose value is a call's
// consistent_hash key under StreamPolicy.
const HashKeyHeader = "x-switchboard-hash-key"

// ResolverOptions configures the "switchboard" resolver.
type ResolverOptions struct {
	// BalancerAddr is the balancer service's address when the target names
	// none. Default $SWITCHBOARD_BALANCER_ADDR, else localhost:7200.
	BalancerAddr string
	// DialOptions reach the balancer (default: plaintext). They come after
	// watch.DialOption, which keeps reconnects to a restarted balancer
	// within about a second; an option here may override it.
	DialOptions []grpc.DialOption
	// Logger hears when the endpoint stream goes stale and when it
	// resumes (default slog.Default()).
	Logger *slog.Logger
}

// RegisterResolver installs the "switchboard" resolver globally; call it
// once before dialing. NewResolverBuilder returns one for
// grpc.WithResolvers instead.
func RegisterResolver(opts ResolverOptions) { resolver.Register(NewResolverBuilder(opts)) }

// NewResolverBuilder returns the "switchboard" resolver: it follows the
// balancer's WatchEndpoints stream for the target's service and selects
// StreamPolicy.
func NewResolverBuilder(opts ResolverOptions) resolver.Builder {
	if opts.BalancerAddr == "" {
		opts.BalancerAddr = os.Getenv("SWITCHBOARD_BALANCER_ADDR")
	}
	if opts.BalancerAddr == "" {
		opts.BalancerAddr = "localhost:7200"
	}
	if len(opts.DialOptions) == 0 {
		opts.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return &resolverBuilder{opts: opts}
}

func init() { balancer.Register(streamBuilder{}) }

type resolverBuilder struct{ opts ResolverOptions }

func (b *resolverBuilder) Scheme() string { return Scheme }

func (b *resolverBuilder) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	svc := strings.TrimPrefix(t.URL.Path, "/")
	if svc == "" || strings.Contains(svc, "/") {
		return nil, fmt.Errorf("grpcbalance: target %q: want %s:///SERVICE", t.URL.String(), Scheme)
	}
	addr := b.opts.BalancerAddr
	if t.URL.Host != "" {
		addr = t.URL.Host
	}
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{watch.DialOption()}, b.opts.DialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("grpcbalance: balancer %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &watchResolver{cc: cc, conn: conn, cancel: cancel, done: make(chan struct{})}
	sc := cc.ParseServiceConfig(`{"loadBalancingConfig":[{"` + StreamPolicy + `":{}}]}`)
	go r.run(ctx, balancerv1.NewBalancerClient(conn), svc, sc, b.opts.Logger)
	return r, nil
}

// watchResolver feeds WatchEndpoints sets to the ClientConn, reconnecting
// with back-off; the ClientConn keeps the last set meanwhile.
type watchResolver struct {
	cc     resolver.ClientConn
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *watchResolver) ResolveNow(resolver.ResolveNowOptions) {}

func (r *watchResolver) Close() {
	r.cancel()
	<-r.done
	r.conn.Close()
}

func (r *watchResolver) run(ctx context.Context, c balancerv1.BalancerClient, svc string, sc *serviceconfig.ParseResult, log *slog.Logger) {
	defer close(r.done)
	watch.Follow(ctx, watch.Stream(func(ctx context.Context) (watch.Receiver[*balancerv1.WatchEndpointsResponse], error) {
		return c.WatchEndpoints(ctx, &balancerv1.WatchEndpointsRequest{Service: svc})
	}, func(resp *balancerv1.WatchEndpointsResponse) {
		_ = r.cc.UpdateState(stateOf(resp, sc))
	}), func(err error, _ time.Duration) {
		// The ClientConn keeps the last set meanwhile.
		r.cc.ReportError(fmt.Errorf("grpcbalance: watching %q: %w", svc, err))
	}, watch.WithLogger(log, "balancer endpoints "+svc))
}

// streamKey keys the streamed set in the resolver state's attributes.
type streamKey struct{}

// streamInfo is one streamed set: the policy and each address's endpoint.
type streamInfo struct {
	policy *balancerv1.Policy
	byAddr map[string]*balancerv1.Endpoint
}

// Equal compares by identity: every update is a new set.
func (s *streamInfo) Equal(o any) bool { return s == o }

// stateOf turns a WatchEndpoints message into resolver state. Endpoints
// that take no traffic are left out (no connection is kept to them),
// unless none takes traffic: then all are offered, as in panic mode.
func stateOf(resp *balancerv1.WatchEndpointsResponse, sc *serviceconfig.ParseResult) resolver.State {
	info := &streamInfo{policy: resp.Policy, byAddr: map[string]*balancerv1.Endpoint{}}
	eligible := func(e *balancerv1.Endpoint) bool { return e.Healthy && !e.Ejected && e.EffectiveWeight > 0 }
	someEligible := false
	for _, e := range resp.Endpoints {
		someEligible = someEligible || eligible(e)
	}
	var addrs []resolver.Address
	for _, e := range resp.Endpoints {
		if someEligible && !eligible(e) {
			continue
		}
		a := net.JoinHostPort(e.Address, strconv.Itoa(int(e.Port)))
		info.byAddr[a] = e
		addrs = append(addrs, resolver.Address{Addr: a})
	}
	return resolver.State{Addresses: addrs, ServiceConfig: sc, Attributes: attributes.New(streamKey{}, info)}
}

// streamBuilder builds StreamPolicy: the base balancer manages the
// subchannels, the picker builder takes the streamed policy and weights.
type streamBuilder struct{}

func (streamBuilder) Name() string { return StreamPolicy }

func (streamBuilder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	set, err := balance.New(streamConfig(nil))
	if err != nil { // the default configuration is valid
		panic(err)
	}
	sp := &streamPicker{pickerBuilder: pickerBuilder{set: set, header: HashKeyHeader}}
	return &streamBalancer{Balancer: base.NewBalancerBuilder(StreamPolicy, sp, base.Config{}).Build(cc, opts), sp: sp}
}

// streamBalancer hands each new streamed set to the picker builder before
// the base balancer rebuilds the picker: base keys subchannels by address
// alone, so weight and policy changes would not reach the picker otherwise.
type streamBalancer struct {
	balancer.Balancer
	sp *streamPicker
}

func (b *streamBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	if a := s.ResolverState.Attributes; a != nil {
		if info, ok := a.Value(streamKey{}).(*streamInfo); ok {
			b.sp.mu.Lock()
			b.sp.info = info
			b.sp.mu.Unlock()
		}
	}
	return b.Balancer.UpdateClientConnState(s)
}

// streamPicker is pickerBuilder with the streamed set applied: policy,
// effective weights and health per address.
type streamPicker struct {
	pickerBuilder
	mu     sync.Mutex
	info   *streamInfo
	policy string
}

// streamConfig is the local configuration for a streamed policy. The
// control plane already applies slow start and ejection to what it
// streams, so locally slow start is off and only passive failures count.
func streamConfig(p *balancerv1.Policy) balance.Config {
	cfg := balance.DefaultConfig()
	if p != nil && p.Name != "" {
		if _, ok := balance.Lookup(p.Name); ok {
			cfg.Policy = p.Name
		}
	}
	cfg.HashOn = "header:" + HashKeyHeader
	cfg.SlowStart = 0
	return cfg
}

func (sp *streamPicker) Build(bi base.PickerBuildInfo) balancer.Picker {
	sp.mu.Lock()
	info := sp.info
	sp.mu.Unlock()
	if info != nil {
		cfg := streamConfig(info.policy)
		if cfg.Policy != sp.policy {
			if err := sp.set.SetConfig(cfg); err == nil {
				sp.policy = cfg.Policy
			}
		}
	}
	sp.weigh = func(ep *balance.Endpoint) {
		if info == nil {
			return
		}
		e := info.byAddr[ep.Addr]
		if e == nil {
			return
		}
		// Effective weights are fractional during slow start: keep two
		// decimals of resolution.
		ep.Weight = uint32(max(1, math.Round(e.EffectiveWeight*100)))
		ep.Zone = e.Zone
		if !e.Healthy || e.Ejected {
			ep.Health = balance.HealthUnhealthy
		}
	}
	return sp.pickerBuilder.Build(bi)
}
