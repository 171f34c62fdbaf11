package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/switchboard-net/switchboard/pkg/config"
	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/services/balancer"
	"github.com/switchboard-net/switchboard/services/edge"
	"github.com/switchboard-net/switchboard/services/prober"
	"github.com/switchboard-net/switchboard/services/registry"
	"github.com/switchboard-net/switchboard/services/resolver"
)

// devConfig is the dev command's flags.
type devConfig struct {
	host        string
	randomPorts bool
	dataDir     string
	logLevel    string
	logFormat   string
	demo        bool
}

// devStack is a running dev constellation: every service's listeners by
// service and listener name, and the demo app's instances.
type devStack struct {
	addrs map[string]map[string]string // service -> listener -> address
	demo  []demoApp
}

// runningService is one service of the stack and the way to stop it.
type runningService struct {
	name   string
	cancel context.CancelFunc
	done   chan error
}

// devReady, when set (by tests), is called with the stack once it serves.
var devReady func(*devStack)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c devConfig
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.host, "host", "127.0.0.1", "address every service listens on")
	fs.BoolVar(&c.randomPorts, "random-ports", false, "listen on free ports instead of the defaults (7100, 8053, 8080, ...)")
	fs.StringVar(&c.dataDir, "data-dir", defaultDevDir(), "where the embedded store and job files live")
	fs.StringVar(&c.logLevel, "log-level", "warn", "services' log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "services' log format: text or json")
	fs.BoolVar(&c.demo, "demo", true, "serve and register a demo app (two instances) behind the edge")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if err := os.MkdirAll(c.dataDir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}

	stack := &devStack{addrs: map[string]map[string]string{}}
	var running []*runningService
	stopAll := func() {
		for i := len(running) - 1; i >= 0; i-- {
			r := running[i]
			r.cancel()
			if err := <-r.done; err != nil {
				fmt.Fprintf(stderr, "%s: %v\n", r.name, err)
			}
		}
	}
	defer stopAll()

	addr := func(port int) string {
		if c.randomPorts {
			port = 0
		}
		return net.JoinHostPort(c.host, strconv.Itoa(port))
	}
	common := func(grpcPort, adminPort int) []string {
		return []string{
			"--grpc-addr=" + addr(grpcPort), "--admin-addr=" + addr(adminPort),
			"--log-level=" + c.logLevel, "--log-format=" + c.logFormat, "--shutdown-grace=5s",
		}
	}
	start := func(spec service.Spec, args []string) (map[string]string, error) {
		sctx, cancel := context.WithCancel(context.Background())
		r := &runningService{name: spec.Name, cancel: cancel, done: make(chan error, 1)}
		ready := make(chan map[string]string, 1)
		go func() {
			r.done <- service.Run(sctx, spec, args,
				service.WithEnv(config.NoEnv),
				service.WithLogOutput(stderr),
				service.WithReady(func(a map[string]string) { ready <- a }))
		}()
		select {
		case a := <-ready:
			running = append(running, r)
			stack.addrs[spec.Name] = a
			return a, nil
		case err := <-r.done:
			cancel()
			return nil, fmt.Errorf("%s: %w", spec.Name, err)
		case <-ctx.Done():
			cancel()
			<-r.done
			return nil, ctx.Err()
		}
	}

	reg, err := start(registry.Spec(), append(common(7100, 7101),
		"--store=embedded", "--data-dir="+filepath.Join(c.dataDir, "registry")))
	if err != nil {
		return err
	}
	bal, err := start(balancer.Spec(), append(common(7200, 7201),
		"--registry-addr="+reg["grpc"], "--data-dir="+filepath.Join(c.dataDir, "balancer")))
	if err != nil {
		return err
	}
	if _, err := start(resolver.Spec(), append(common(7300, 7301),
		"--registry-addr="+reg["grpc"], "--dns-addr="+addr(8053))); err != nil {
		return err
	}
	prb, err := start(prober.Spec(), append(common(7400, 7401),
		// No LAN discovery: dev stays on this machine.
		"--registry-addr="+reg["grpc"], "--bandwidth-addr="+addr(7402), "--discovery-group=",
		"--data-dir="+filepath.Join(c.dataDir, "prober")))
	if err != nil {
		return err
	}
	if _, err := start(edge.Spec(), append(common(7500, 7501),
		"--balancer-addr="+bal["grpc"], "--registry-addr="+reg["grpc"], "--prober-addr="+prb["grpc"],
		// The edge's own 0700 directory holds its runtime socket.
		"--data-dir="+filepath.Join(c.dataDir, "edge"),
		"--runtime-socket="+filepath.Join(c.dataDir, "edge", "edge.sock"),
		// The demo apps listen on loopback: let wire streams reach them.
		"--allow-loopback",
		"--http-addr="+addr(8080), "--wire-addr="+addr(7900))); err != nil {
		return err
	}

	if c.demo {
		apps, err := startDemo(ctx, c.host, reg["grpc"], 2)
		if err != nil {
			return err
		}
		defer func() {
			for _, a := range apps {
				a.close()
			}
		}()
		stack.demo = apps
		if err := scheduleDemoProbe(ctx, prb["grpc"], apps[0].addr); err != nil {
			return err
		}
	}
	printBanner(stdout, stack)
	if devReady != nil {
		devReady(stack)
	}
	<-ctx.Done()
	fmt.Fprintln(stdout, "\nstopping...")
	return nil
}

// defaultDevDir is where dev keeps its state between runs.
func defaultDevDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "switchboard", "dev")
	}
	return filepath.Join(os.TempDir(), "switchboard-dev")
}

func printBanner(w io.Writer, s *devStack) {
	a := s.addrs
	fmt.Fprintf(w, "Switchboard is running (embedded store). Ctrl-C stops it.\n")
	fmt.Fprintf(w, "Plaintext, no access control, loopback only: a development stack (docs/security.md locks one down).\n\n")
	fmt.Fprintf(w, "  %-9s %-22s %-22s %s\n", "service", "gRPC", "admin", "other")
	for _, name := range []string{"registry", "balancer", "resolver", "prober", "edge"} {
		other := ""
		for _, k := range []string{"dns", "http", "https", "wire", "bandwidth", "runtime"} {
			if v := a[name][k]; v != "" {
				other += k + " " + v + "  "
			}
		}
		fmt.Fprintf(w, "  %-9s %-22s %-22s %s\n", name, a[name]["grpc"], a[name]["admin"], other)
	}
	for _, d := range s.demo {
		fmt.Fprintf(w, "  %-9s %s (registered as service %q, id %s)\n", "demo", d.addr, demoService, d.id)
	}
	dnsHost, dnsPort, _ := net.SplitHostPort(a["resolver"]["dns"])
	fmt.Fprintf(w, "\nTry:\n")
	fmt.Fprintf(w, "  curl -s http://%s/                                   # the demo app through the edge\n", a["edge"]["http"])
	fmt.Fprintf(w, "  dig @%s -p %s %s.service.switchboard. A         # the demo app in DNS\n", dnsHost, dnsPort, demoService)
	fmt.Fprintf(w, "  grpcurl -plaintext %s list\n", a["registry"]["grpc"])
	fmt.Fprintf(w, "  grpcurl -plaintext -d '{\"service\":\"%s\"}' %s switchboard.registry.v1.Registry/GetService\n", demoService, a["registry"]["grpc"])
	fmt.Fprintf(w, "  grpcurl -plaintext -d '{\"service\":\"%s\"}' %s switchboard.balancer.v1.Balancer/Pick\n", demoService, a["balancer"]["grpc"])
	fmt.Fprintf(w, "  grpcurl -plaintext -d '{\"name\":\"%s.service.switchboard.\",\"type\":\"SRV\"}' %s switchboard.resolver.v1.Resolver/Lookup\n", demoService, a["resolver"]["grpc"])
	fmt.Fprintf(w, "  open http://%s/dashboard\n", a["edge"]["admin"])
}
