// Command registry-bench measures the registry against Consul in one run:
// registrations per second and register-to-watch propagation latency
// (p50/p99), through the registry (Consul and embedded stores) and directly
// against Consul's HTTP API (agent registration with a TTL check, blocking
// query on the health endpoint) — once alone and once while a blocking
// query follows the service, which is what the registry's own watch costs
// Consul. Every measured phase gets a fresh
// `consul agent -dev` on loopback ports.
//
//	go run . [-n 2000] [-c 16] [-samples 300]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/config"
	"github.com/switchboard-net/switchboard/pkg/service"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry"
)

var (
	total   = flag.Int("n", 2000, "registrations per throughput phase")
	conc    = flag.Int("c", 16, "concurrent clients in throughput phases")
	samples = flag.Int("samples", 300, "propagation samples per phase")
	consulB = flag.String("consul", "consul", "consul binary")
	minIvl  = flag.Duration("consul-min-interval", 100*time.Millisecond, "the registry's --consul-min-interval (and the watcher phase's interval)")
	rounds  = flag.Int("rounds", 3, "rounds of every phase (interleaved): the table shows the best rate and the median latencies")
	cpuProf = flag.String("cpuprofile", "", "write a CPU profile of the registry (consul store) phase to this file")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "registry-bench:", err)
		os.Exit(1)
	}
}

type result struct {
	name     string
	rate     float64
	p50, p99 time.Duration
}

func run() error {
	byName := map[string][]result{}
	var order []string
	for round := 1; round <= *rounds; round++ {
		rs, err := runRound()
		if err != nil {
			return err
		}
		for _, r := range rs {
			if round == 1 {
				order = append(order, r.name)
			}
			byName[r.name] = append(byName[r.name], r)
			fmt.Fprintf(os.Stderr, "round %d: %-28s %6.0f/s p50 %v p99 %v\n", round, r.name, r.rate, r.p50, r.p99)
		}
	}
	fmt.Printf("registrations: %d per phase, %d concurrent clients; propagation: %d sequential samples; %d rounds\n", *total, *conc, *samples, *rounds)
	fmt.Printf("(rate: best round; p50/p99: median of the rounds)\n\n")
	fmt.Printf("%-28s %14s %8s %10s %10s\n", "path", "registrations/s", "ratio", "p50", "p99")
	var base float64
	for i, name := range order {
		rs := byName[name]
		best := 0.0
		var p50s, p99s []time.Duration
		for _, r := range rs {
			best = max(best, r.rate)
			p50s = append(p50s, r.p50)
			p99s = append(p99s, r.p99)
		}
		slices.Sort(p50s)
		slices.Sort(p99s)
		if i == 0 {
			base = best
		}
		p50, p99 := "-", "-"
		if m := p50s[len(p50s)/2]; m > 0 {
			p50, p99 = m.Round(10*time.Microsecond).String(), p99s[len(p99s)/2].Round(10*time.Microsecond).String()
		}
		fmt.Printf("%-28s %14.0f %7.2fx %10s %10s\n", name, best, best/base, p50, p99)
	}
	return nil
}

// runRound measures every phase once.
func runRound() ([]result, error) {
	var results []result
	// Direct Consul.
	{
		c, stop, err := startConsul()
		if err != nil {
			return nil, err
		}
		rate, err := throughput(func(i int) error { return directRegister(c, "tput", i) })
		if err != nil {
			stop()
			return nil, err
		}
		p50, p99, err := directLatency(c)
		stop()
		if err != nil {
			return nil, err
		}
		results = append(results, result{"consul HTTP API (direct)", rate, p50, p99})
	}
	// Direct Consul while a blocking query follows the service, as the
	// registry's own watch does: the same work on Consul's side.
	{
		c, stop, err := startConsul()
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		go follow(ctx, c, "tput")
		rate, err := throughput(func(i int) error { return directRegister(c, "tput", i) })
		cancel()
		stop()
		if err != nil {
			return nil, err
		}
		results = append(results, result{name: "consul HTTP API + watcher", rate: rate})
	}
	// Registry, Consul store.
	{
		c, stop, err := startConsul()
		if err != nil {
			return nil, err
		}
		if *cpuProf != "" {
			f, err := os.Create(*cpuProf)
			if err != nil {
				stop()
				return nil, err
			}
			_ = pprof.StartCPUProfile(f)
		}
		r, err := benchRegistry("--store=consul", "--consul-addr="+c.addr, "--consul-min-interval="+minIvl.String())
		if *cpuProf != "" {
			pprof.StopCPUProfile()
		}
		stop()
		if err != nil {
			return nil, err
		}
		r.name = "registry, consul store"
		results = append(results, r)
	}
	// Registry, embedded store.
	{
		dir, err := os.MkdirTemp("", "registry-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		r, err := benchRegistry("--store=embedded", "--data-dir="+filepath.Join(dir, "data"))
		if err != nil {
			return nil, err
		}
		r.name = "registry, embedded store"
		results = append(results, r)
	}
	return results, nil
}

// throughput runs *total calls of fn over *conc goroutines.
func throughput(fn func(i int) error) (float64, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, *conc)
	start := time.Now()
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > *total {
					return
				}
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	select {
	case err := <-errs:
		return 0, err
	default:
	}
	return float64(*total) / took.Seconds(), nil
}

func percentiles(d []time.Duration) (time.Duration, time.Duration) {
	slices.Sort(d)
	return d[len(d)*50/100], d[min(len(d)-1, len(d)*99/100)]
}

// client is a Consul client and the agent's HTTP address.
type client struct {
	*api.Client
	addr string
}

func directRegister(c *client, svc string, i int) error {
	id := svc + "-" + strconv.Itoa(i)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Agent().ServiceRegisterOpts(&api.AgentServiceRegistration{
		ID: svc + ":" + id, Name: svc, Address: "127.0.0.1", Port: 1000 + i%50000,
		Tags: []string{"bench"}, Meta: map[string]string{"switchboard-id": id},
		Check: &api.AgentServiceCheck{CheckID: "service:" + svc + ":" + id, TTL: "30s", Status: api.HealthPassing},
	}, api.ServiceRegisterOpts{}.WithContext(ctx))
}

// follow runs blocking queries on a service's health until ctx ends, at
// most one per -consul-min-interval (as the registry's Consul store does).
func follow(ctx context.Context, c *client, svc string) {
	var index uint64
	for ctx.Err() == nil {
		start := time.Now()
		_, meta, err := c.Health().Service(svc, "", false, (&api.QueryOptions{WaitIndex: index, WaitTime: 10 * time.Second}).WithContext(ctx))
		if err == nil {
			index = meta.LastIndex
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(start.Add(*minIvl))):
		}
	}
}

// directLatency registers through the HTTP API and times until a blocking
// query on the health endpoint returns the new instance.
func directLatency(c *client) (time.Duration, time.Duration, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := make(chan int, 16)
	go func() {
		var index uint64
		have := map[string]bool{}
		for ctx.Err() == nil {
			entries, meta, err := c.Health().Service("lat", "", false, (&api.QueryOptions{WaitIndex: index, WaitTime: 10 * time.Second}).WithContext(ctx))
			if err != nil {
				continue
			}
			index = meta.LastIndex
			for _, e := range entries {
				id := e.Service.Meta["switchboard-id"]
				if !have[id] {
					have[id] = true
					n, _ := strconv.Atoi(id[len("lat-"):])
					seen <- n
				}
			}
		}
	}()
	var d []time.Duration
	for i := 1; i <= *samples; i++ {
		start := time.Now()
		if err := directRegister(c, "lat", i); err != nil {
			return 0, 0, err
		}
		if err := waitFor(seen, i); err != nil {
			return 0, 0, err
		}
		d = append(d, time.Since(start))
	}
	p50, p99 := percentiles(d)
	return p50, p99, nil
}

func waitFor(seen <-chan int, i int) error {
	timeout := time.After(10 * time.Second)
	for {
		select {
		case n := <-seen:
			if n == i {
				return nil
			}
		case <-timeout:
			return fmt.Errorf("instance %d not seen within 10s", i)
		}
	}
}

// benchRegistry starts the registry service with args and measures it.
func benchRegistry(args ...string) (result, error) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan map[string]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, registry.Spec(), append([]string{"--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--consul-wait=30s", "--backend-timeout=10s"}, args...),
			service.WithEnv(config.NoEnv), service.WithLogOutput(io.Discard), service.WithReady(func(a map[string]string) { ready <- a }))
	}()
	defer func() { cancel(); <-done }()
	var addrs map[string]string
	select {
	case addrs = <-ready:
	case err := <-done:
		return result{}, fmt.Errorf("registry: %w", err)
	case <-time.After(30 * time.Second):
		return result{}, fmt.Errorf("registry did not start")
	}
	cc, err := grpc.NewClient(addrs["grpc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return result{}, err
	}
	defer cc.Close()
	c := registryv1.NewRegistryClient(cc)
	reg := func(svc string, i int) error {
		id := svc + "-" + strconv.Itoa(i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
			Service: svc, Id: id, Address: "127.0.0.1", Port: uint32(1000 + i%50000), Tags: []string{"bench"},
			Check: &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_TTL, Interval: durationpb.New(30 * time.Second)},
		}})
		return err
	}
	rate, err := throughput(func(i int) error { return reg("tput", i) })
	if err != nil {
		return result{}, err
	}
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	stream, err := c.Watch(wctx, &registryv1.WatchRequest{Service: "lat", IncludeUnhealthy: true})
	if err != nil {
		return result{}, err
	}
	seen := make(chan int, 16)
	go func() {
		have := map[string]bool{}
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			for _, in := range m.Instances {
				if !have[in.Id] {
					have[in.Id] = true
					n, _ := strconv.Atoi(in.Id[len("lat-"):])
					seen <- n
				}
			}
		}
	}()
	var d []time.Duration
	for i := 1; i <= *samples; i++ {
		start := time.Now()
		if err := reg("lat", i); err != nil {
			return result{}, err
		}
		if err := waitFor(seen, i); err != nil {
			return result{}, err
		}
		d = append(d, time.Since(start))
	}
	p50, p99 := percentiles(d)
	return result{rate: rate, p50: p50, p99: p99}, nil
}

// startConsul starts `consul agent -dev` on free loopback ports.
func startConsul() (*client, func(), error) {
	var ports []int
	var lns []net.Listener
	for range 4 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	cmd := exec.Command(*consulB, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-node", "bench",
		"-http-port", strconv.Itoa(ports[0]), "-serf-lan-port", strconv.Itoa(ports[1]),
		"-serf-wan-port", strconv.Itoa(ports[2]), "-server-port", strconv.Itoa(ports[3]),
		"-dns-port", "-1", "-grpc-port", "-1", "-hcl", "ports { grpc_tls = -1 }", "-log-level", "error", "-disable-host-node-id")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start consul: %w", err)
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v1/status/leader")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if len(b) > 4 {
				break
			}
		}
		if time.Now().After(deadline) {
			stop()
			return nil, nil, fmt.Errorf("consul not ready at %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.Transport.MaxIdleConnsPerHost = *conc * 2
	ac, err := api.NewClient(cfg)
	if err != nil {
		stop()
		return nil, nil, err
	}
	return &client{Client: ac, addr: addr}, stop, nil
}
