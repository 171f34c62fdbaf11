package prober

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/switchboard-net/switchboard/pkg/watch"
	"github.com/switchboard-net/switchboard/services/prober/allow"
	"github.com/switchboard-net/switchboard/services/prober/check"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// Bounds of the health loop.
const (
	minCheckEvery = 100 * time.Millisecond
	maxCheckers   = 10000
	setHealthWait = 5 * time.Second
)

// registryClient is the part of the registry the health loop uses.
type registryClient interface {
	Watch(ctx context.Context, in *registryv1.WatchRequest, opts ...grpc.CallOption) (registryv1.Registry_WatchClient, error)
	SetHealth(ctx context.Context, in *registryv1.SetHealthRequest, opts ...grpc.CallOption) (*registryv1.SetHealthResponse, error)
}

// healthLoop checks every registered instance that has an HTTP, TCP or
// gRPC check (TTL checks are heartbeat-driven and skipped) on its
// interval, and reports changes to the registry with SetHealth once Rise
// consecutive passes or Fall consecutive failures agree, so one blip does
// not flap an instance.
type healthLoop struct {
	reg   registryClient
	allow *allow.List
	rise  int
	fall  int
	met   *metrics
	log   *slog.Logger
	sem   chan struct{}

	mu       sync.Mutex
	checkers map[string]*checker
	wg       sync.WaitGroup
}

func newHealthLoop(reg registryClient, al *allow.List, cfg *Config, met *metrics, log *slog.Logger) *healthLoop {
	return &healthLoop{reg: reg, allow: al, rise: cfg.Rise, fall: cfg.Fall, met: met, log: log,
		sem: make(chan struct{}, cfg.HealthConcurrency), checkers: map[string]*checker{}}
}

// run watches the registry until ctx ends, reconnecting with backoff.
func (h *healthLoop) run(ctx context.Context) error {
	defer func() {
		h.mu.Lock()
		for k, c := range h.checkers {
			c.cancel()
			delete(h.checkers, k)
		}
		h.mu.Unlock()
		h.wg.Wait()
	}()
	// Checkers live on ctx, beyond each stream.
	apply := func(snap *registryv1.WatchResponse) { h.apply(ctx, snap.GetInstances()) }
	watch.Follow(ctx, watch.Stream(h.open, apply), func(err error, wait time.Duration) {
		h.log.Warn("registry watch ended; retrying", "err", err, "in", wait)
	})
	return nil
}

// open opens the registry's Watch of every instance.
func (h *healthLoop) open(ctx context.Context) (watch.Receiver[*registryv1.WatchResponse], error) {
	return h.reg.Watch(ctx, &registryv1.WatchRequest{IncludeUnhealthy: true})
}

// apply reconciles checkers with a snapshot and refreshes the allowlist's
// registered addresses.
func (h *healthLoop) apply(ctx context.Context, insts []*registryv1.Instance) {
	addrs := make([]string, 0, len(insts))
	seen := make(map[string]bool, len(insts))
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, in := range insts {
		addrs = append(addrs, in.GetAddress())
		spec, ok := checkOf(in)
		if !ok {
			continue
		}
		key := in.GetService() + "/" + in.GetId()
		seen[key] = true
		c := h.checkers[key]
		if c != nil && c.spec != spec {
			c.cancel()
			delete(h.checkers, key)
			c = nil
		}
		if c == nil {
			if len(h.checkers) >= maxCheckers {
				continue
			}
			cctx, cancel := context.WithCancel(ctx)
			c = &checker{h: h, service: in.GetService(), id: in.GetId(), spec: spec, cancel: cancel}
			h.checkers[key] = c
			h.wg.Add(1)
			go func() { defer h.wg.Done(); c.loop(cctx) }()
		}
		c.observe(in.GetHealth())
	}
	for key, c := range h.checkers {
		if !seen[key] {
			c.cancel()
			delete(h.checkers, key)
			h.met.instanceUp.DeleteLabelValues(c.service, c.id)
		}
	}
	h.allow.SetRegistered(addrs)
}

// checkSpec is what a checker runs, comparable to spot changes.
type checkSpec struct {
	kind, target, grpcService string
	every, timeout            time.Duration
	tls                       bool
}

func checkOf(in *registryv1.Instance) (checkSpec, bool) {
	c := in.GetCheck()
	hostPort := net.JoinHostPort(in.GetAddress(), strconv.Itoa(int(in.GetPort())))
	s := checkSpec{every: c.GetInterval().AsDuration(), timeout: c.GetTimeout().AsDuration(), grpcService: c.GetGrpcService(), tls: c.GetTls()}
	switch c.GetKind() {
	case registryv1.CheckKind_CHECK_KIND_HTTP:
		s.kind = check.HTTP
		if c.GetTls() {
			s.kind = check.HTTPS
		}
		path := c.GetHttpPath()
		if path == "" || path[0] != '/' {
			path = "/" + path
		}
		s.target = s.kind + "://" + hostPort + path
	case registryv1.CheckKind_CHECK_KIND_TCP:
		s.kind, s.target = check.TCP, hostPort
	case registryv1.CheckKind_CHECK_KIND_GRPC:
		s.kind, s.target = check.GRPC, hostPort
	default: // none, or TTL (heartbeat-driven)
		return s, false
	}
	if s.every <= 0 {
		s.every = 10 * time.Second
	}
	s.every = max(s.every, minCheckEvery)
	if s.timeout <= 0 {
		s.timeout = 2 * time.Second
	}
	s.timeout = min(s.timeout, s.every, maxTimeout)
	return s, true
}

// checker runs one instance's check and keeps its rise/fall state.
type checker struct {
	h           *healthLoop
	service, id string
	spec        checkSpec
	cancel      context.CancelFunc

	mu       sync.Mutex
	status   registryv1.HealthStatus // as the registry last said
	passes   int                     // consecutive
	failures int                     // consecutive
}

func (c *checker) observe(s registryv1.HealthStatus) {
	c.mu.Lock()
	c.status = s
	c.mu.Unlock()
}

func (c *checker) loop(ctx context.Context) {
	t := time.NewTicker(c.spec.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case c.h.sem <- struct{}{}:
		}
		r := check.Run(ctx, check.Spec{Kind: c.spec.kind, Target: c.spec.target, Timeout: c.spec.timeout,
			GRPCService: c.spec.grpcService, InsecureSkipVerify: c.spec.tls}, nil)
		<-c.h.sem
		if ctx.Err() != nil {
			return
		}
		c.record(ctx, r)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// next decides, from the registry's status and the streaks, the status to
// report (UNSPECIFIED: none). An instance the registry has not judged
// takes the first result at once.
func next(cur registryv1.HealthStatus, ok bool, passes, failures, rise, fall int) registryv1.HealthStatus {
	const (
		passing  = registryv1.HealthStatus_HEALTH_STATUS_PASSING
		critical = registryv1.HealthStatus_HEALTH_STATUS_CRITICAL
		unknown  = registryv1.HealthStatus_HEALTH_STATUS_UNSPECIFIED
	)
	switch {
	case ok && cur == critical && passes >= rise, ok && cur == unknown:
		return passing
	case !ok && cur != critical && (failures >= fall || cur == unknown):
		return critical
	}
	return unknown
}

func (c *checker) record(ctx context.Context, r check.Result) {
	result := "pass"
	if !r.OK {
		result = "fail"
	}
	c.h.met.checks.WithLabelValues(result).Inc()
	c.mu.Lock()
	if r.OK {
		c.passes, c.failures = c.passes+1, 0
	} else {
		c.passes, c.failures = 0, c.failures+1
	}
	cur := c.status
	to := next(cur, r.OK, c.passes, c.failures, c.h.rise, c.h.fall)
	c.mu.Unlock()
	if to == registryv1.HealthStatus_HEALTH_STATUS_UNSPECIFIED {
		if cur != registryv1.HealthStatus_HEALTH_STATUS_UNSPECIFIED {
			c.h.met.instanceUp.WithLabelValues(c.service, c.id).Set(b2f(cur != registryv1.HealthStatus_HEALTH_STATUS_CRITICAL))
		}
		return
	}
	output := fmt.Sprintf("%s check by prober: %s", c.spec.kind, r.Detail)
	sctx, cancel := context.WithTimeout(ctx, setHealthWait)
	defer cancel()
	if _, err := c.h.reg.SetHealth(sctx, &registryv1.SetHealthRequest{Service: c.service, Id: c.id, Status: to, Output: output}); err != nil {
		c.h.log.Warn("set health", "service", c.service, "id", c.id, "status", to, "err", err)
		return
	}
	c.mu.Lock()
	c.status = to // the next snapshot will say so too
	c.mu.Unlock()
	c.h.met.transitions.WithLabelValues(to.String()).Inc()
	c.h.met.instanceUp.WithLabelValues(c.service, c.id).Set(b2f(to == registryv1.HealthStatus_HEALTH_STATUS_PASSING))
	c.h.log.Info("instance health changed", "service", c.service, "id", c.id, "status", to, "output", output)
}
