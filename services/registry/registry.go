// Package registry is Switchboard's service catalog: the
// switchboard.registry.v1.Registry gRPC service over a Store, which is the
// embedded file store (the default), Consul or etcd.
package registry

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/switchboard-net/switchboard/pkg/service"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
	"github.com/switchboard-net/switchboard/services/registry/consulstore"
	"github.com/switchboard-net/switchboard/services/registry/embedded"
	"github.com/switchboard-net/switchboard/services/registry/etcdstore"
)

// Config is the registry's configuration (its flags).
type Config struct {
	// Store is the backend: embedded, consul or etcd.
	Store string
	// DataDir is the embedded store's directory ("" = $XDG_STATE_HOME/
	// switchboard/registry, else ./data/registry).
	DataDir string
	// ConsulAddr is Consul's HTTP address ("" = CONSUL_HTTP_ADDR, else
	// 127.0.0.1:8500).
	ConsulAddr string
	// ConsulDatacenter is the Consul datacenter ("" = the agent's).
	ConsulDatacenter string
	// ConsulPrefix is the Consul KV prefix of DNS records.
	ConsulPrefix string
	// ConsulWait is the longest wait of one Consul blocking query.
	ConsulWait time.Duration
	// ConsulMinInterval is the least time between two blocking queries of
	// one watch loop.
	ConsulMinInterval time.Duration
	// EtcdEndpoints is a comma-separated list of etcd endpoints.
	EtcdEndpoints string
	// EtcdPrefix is the key prefix in etcd.
	EtcdPrefix string
	// Timeout bounds each backend call.
	Timeout time.Duration
}

// RegisterFlags adds the registry's flags to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Store, "store", "embedded", "catalog backend: embedded, consul or etcd")
	fs.StringVar(&c.DataDir, "data-dir", "", "embedded store directory (default $XDG_STATE_HOME/switchboard/registry, else ./data/registry)")
	fs.StringVar(&c.ConsulAddr, "consul-addr", "", "Consul HTTP address (default CONSUL_HTTP_ADDR, else 127.0.0.1:8500); ACL token and TLS come from CONSUL_HTTP_TOKEN, CONSUL_HTTP_SSL, CONSUL_CACERT and the other standard variables")
	fs.StringVar(&c.ConsulDatacenter, "consul-datacenter", "", "Consul datacenter (default: the agent's)")
	fs.StringVar(&c.ConsulPrefix, "consul-prefix", consulstore.DefaultPrefix, "Consul KV prefix of the DNS records")
	fs.DurationVar(&c.ConsulWait, "consul-wait", 5*time.Minute, "longest wait of one Consul blocking query")
	fs.DurationVar(&c.ConsulMinInterval, "consul-min-interval", 100*time.Millisecond, "least time between two blocking queries of one watch (coalesces a busy service's changes; this registry's own writes show at once)")
	fs.StringVar(&c.EtcdEndpoints, "etcd-endpoints", "127.0.0.1:2379", "comma-separated etcd endpoints")
	fs.StringVar(&c.EtcdPrefix, "etcd-prefix", etcdstore.DefaultPrefix, "etcd key prefix")
	fs.DurationVar(&c.Timeout, "backend-timeout", time.Second, "deadline of each backend call (writes fail with Unavailable after it)")
}

// Spec returns the registry service, ready for service.Main or service.Run.
func Spec() service.Spec {
	cfg := &Config{}
	return service.Spec{
		Name: "registry", GRPCAddr: "127.0.0.1:7100", AdminAddr: "127.0.0.1:7101",
		Flags:   cfg.RegisterFlags,
		Methods: Methods,
		Start:   func(ctx context.Context, rt *service.Runtime) error { return start(ctx, rt, cfg) },
	}
}

// OpenStore opens the backend cfg names. lookup reads environment variables
// (for the default data directory); log receives the store's reports of
// backend outages and restores, and obs (the registry's Metrics) is told
// of them.
func OpenStore(ctx context.Context, cfg *Config, lookup func(string) (string, bool), log *slog.Logger, obs catalog.Observer) (Store, error) {
	if cfg.Timeout <= 0 {
		return nil, &service.FlagError{Err: fmt.Errorf("--backend-timeout must be positive, got %v", cfg.Timeout)}
	}
	switch cfg.Store {
	case "embedded", "":
		dir := cfg.DataDir
		if dir == "" {
			dir = DefaultDataDir(lookup)
		}
		s, err := embedded.Open(dir)
		if err == nil {
			obs.BackendUp(true) // a local file: up while the store is open
		}
		return s, err
	case "consul":
		return consulstore.Open(ctx, consulstore.Options{
			Address: cfg.ConsulAddr, Datacenter: cfg.ConsulDatacenter, Prefix: cfg.ConsulPrefix, Wait: cfg.ConsulWait, MinInterval: cfg.ConsulMinInterval, Timeout: cfg.Timeout,
			Logger: log, Observer: obs,
		})
	case "etcd":
		var eps []string
		for _, e := range strings.Split(cfg.EtcdEndpoints, ",") {
			if e = strings.TrimSpace(e); e != "" {
				eps = append(eps, e)
			}
		}
		if len(eps) == 0 {
			return nil, &service.FlagError{Err: errors.New("--etcd-endpoints is empty")}
		}
		return etcdstore.Open(ctx, etcdstore.Options{Endpoints: eps, Prefix: cfg.EtcdPrefix, Timeout: cfg.Timeout, Logger: log, Observer: obs})
	default:
		return nil, &service.FlagError{Err: fmt.Errorf("--store must be embedded, consul or etcd, got %q", cfg.Store)}
	}
}

// DefaultDataDir is the embedded store's directory when --data-dir is not
// set: $XDG_STATE_HOME/switchboard/registry, else data/registry under the
// working directory.
func DefaultDataDir(lookup func(string) (string, bool)) string {
	if v, ok := lookup("XDG_STATE_HOME"); ok && v != "" {
		return filepath.Join(v, "switchboard", "registry")
	}
	return filepath.Join("data", "registry")
}

func start(ctx context.Context, rt *service.Runtime, cfg *Config) error {
	m := NewMetrics(rt.Metrics, cfg.Store)
	store, err := OpenStore(ctx, cfg, rt.Lookup, rt.Log.With("store", cfg.Store), m)
	if err != nil {
		return err
	}
	m.SetStore(store)
	srv := NewServer(store, m)
	registryv1.RegisterRegistryServer(rt.GRPC, srv)
	rt.AddReadyCheck("store", store.Ping)
	// Close the store only once in-flight RPCs have drained.
	rt.OnShutdown(func(ctx context.Context) error {
		stopped := make(chan struct{})
		go func() { rt.GRPC.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-ctx.Done():
		}
		return store.Close()
	})
	rt.Log.Info("catalog store open", "store", cfg.Store, "index", store.Snapshot().Index())
	return nil
}

// Every backend is a Store.
var (
	_ Store = (*embedded.Store)(nil)
	_ Store = (*consulstore.Store)(nil)
	_ Store = (*etcdstore.Store)(nil)
)
