// Package balancer is Switchboard's load-balancing control plane. It follows
// the registry's Watch stream, keeps a pkg/balance Set per service with its
// policy (stored in the registry and followed with WatchConfig, so every
// replica applies the same; --data-dir keeps a start-up cache), feeds data planes' load reports into
// latency estimates and outlier ejection, and streams each service's
// endpoint set with effective weights to data planes (WatchEndpoints). Pick
// answers clients that want one endpoint per call.
package balancer

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"

	"github.com/switchboard-net/switchboard/pkg/service"
)

// Config is the balancer's own flags.
type Config struct {
	// RegistryAddr is the registry's gRPC address.
	RegistryAddr string
	// DataDir holds policies.json, the start-up cache of the registry's
	// policies.
	DataDir string
	// RefreshInterval is how often time-based state (ejection ends, slow
	// start steps) is re-evaluated and pushed to watchers.
	RefreshInterval time.Duration
}

// RegisterFlags adds the balancer's flags to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.RegistryAddr, "registry-addr", "localhost:7100", "registry gRPC address")
	fs.StringVar(&c.DataDir, "data-dir", "", "where the start-up cache of the registry's policies is kept (default $XDG_STATE_HOME/switchboard/balancer, else ./data/balancer)")
	fs.DurationVar(&c.RefreshInterval, "refresh-interval", time.Second, "how often ejection ends and slow-start steps are applied and streamed")
}

// Spec returns the balancer service, ready for service.Main or service.Run.
func Spec() service.Spec {
	cfg := &Config{}
	return service.Spec{
		Name:      "balancer",
		GRPCAddr:  "127.0.0.1:7200",
		AdminAddr: "127.0.0.1:7201",
		Flags:     cfg.RegisterFlags,
		Methods:   Methods,
		Start:     func(ctx context.Context, rt *service.Runtime) error { return start(ctx, rt, cfg) },
	}
}

// DefaultDataDir is the policy directory when --data-dir is not given.
func DefaultDataDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "switchboard", "balancer")
	}
	return filepath.Join("data", "balancer")
}

func start(_ context.Context, rt *service.Runtime, cfg *Config) error {
	if cfg.RefreshInterval <= 0 {
		return &service.FlagError{Err: fmt.Errorf("--refresh-interval must be positive, got %v", cfg.RefreshInterval)}
	}
	dir := cfg.DataDir
	if dir == "" {
		dir = DefaultDataDir()
	}
	policies, err := openPolicyStore(filepath.Join(dir, "policies.json"))
	if err != nil {
		return err
	}
	cc, err := rt.Dial(cfg.RegistryAddr)
	if err != nil {
		return err
	}
	rt.OnShutdown(func(context.Context) error { return cc.Close() })

	reg := registryv1.NewRegistryClient(cc)
	b := newBalancer(rt.Log, policies, newMetrics(rt.Metrics))
	rt.Metrics.MustRegister(serviceCollector{b})
	b.reg = reg
	balancerv1.RegisterBalancerServer(rt.GRPC, &server{b: b})
	rt.AddReadyCheck("registry", b.ready)
	rt.Go("registry-watch", func(ctx context.Context) error {
		return b.followRegistry(ctx, reg)
	})
	rt.Go("policy-watch", b.followPolicies)
	rt.Every("refresh", cfg.RefreshInterval, b.refresh)
	return nil
}
