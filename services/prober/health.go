package prober

import (
	"context"
	"errors"
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
//
// Every check goes through the allowlist jobs use, before any packet: the
// instance's address is resolved and checked first, and the check dials
// through the list too. A refused instance is not checked and its health
// is not judged: the refusal is counted, logged once, and written once to
// the instance's check output with its status unchanged.
type healthLoop struct {
	reg      registryClient
	allow    *allow.List
	dial     check.DialFunc
	resolver allow.Resolver // nil: the system resolver
	rise     int
	fall     int
	met      *metrics
	log      *slog.Logger
	sem      chan struct{}
	members  *members // the live probers: each checks only its share

	mu       sync.Mutex
	checkers map[string]*checker
	wg       sync.WaitGroup
}

func newHealthLoop(reg registryClient, al *allow.List, cfg *Config, met *metrics, log *slog.Logger, m *members) *healthLoop {
	return &healthLoop{reg: reg, allow: al, dial: al.DialContext(&net.Dialer{}), rise: cfg.Rise, fall: cfg.Fall, met: met, log: log,
		sem: make(chan struct{}, cfg.HealthConcurrency), checkers: map[string]*checker{}, members: m}
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
	watch.Follow(ctx, watch.Instances(h.reg.Watch, &registryv1.WatchRequest{IncludeUnhealthy: true}, apply), func(err error, wait time.Duration) {
		h.log.Debug("registry watch ended; retrying", "err", err, "in", wait)
	}, watch.WithLogger(h.log, "registry"))
	return nil
}

// apply refreshes the allowlist's registered addresses and the live
// probers, then reconciles checkers with a snapshot (so a new checker is
// judged against the current set): this prober checks the instances whose
// key it owns, and stops checking those that moved to another prober.
func (h *healthLoop) apply(ctx context.Context, insts []*registryv1.Instance) {
	addrs := make([]string, 0, len(insts))
	for _, in := range insts {
		addrs = append(addrs, in.GetAddress())
	}
	h.allow.SetRegistered(addrs)
	h.members.set(liveProbers(insts))
	seen := make(map[string]bool, len(insts))
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, in := range insts {
		spec, ok := checkOf(in)
		if !ok || !h.members.owns(healthKey(in.GetService(), in.GetId())) {
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
}

// checkSpec is what a checker runs, comparable to spot changes.
type checkSpec struct {
	kind, target, grpcService string
	host                      string // the instance's address: what the allowlist judges
	every, timeout            time.Duration
	tls                       bool
}

func checkOf(in *registryv1.Instance) (checkSpec, bool) {
	c := in.GetCheck()
	hostPort := net.JoinHostPort(in.GetAddress(), strconv.Itoa(int(in.GetPort())))
	s := checkSpec{host: in.GetAddress(), every: c.GetInterval().AsDuration(), timeout: c.GetTimeout().AsDuration(), grpcService: c.GetGrpcService(), tls: c.GetTls()}
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
	refused  bool                    // the allowlist refused the last attempt
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
		if err := c.permitted(ctx); err != nil {
			<-c.h.sem
			c.refuse(ctx, err)
		} else {
			r := check.Run(ctx, check.Spec{Kind: c.spec.kind, Target: c.spec.target, Timeout: c.spec.timeout,
				GRPCService: c.spec.grpcService, InsecureSkipVerify: c.spec.tls}, c.h.dial)
			<-c.h.sem
			if ctx.Err() != nil {
				return
			}
			c.record(ctx, r)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// permitted checks the instance's address against the allowlist before
// anything is sent to it; only a refusal is an error (wrapping
// allow.ErrDenied). A name that does not resolve is left to the check,
// which then fails like any unreachable instance.
func (c *checker) permitted(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, c.spec.timeout)
	defer cancel()
	_, err := c.h.allow.Resolve(rctx, c.h.resolver, "ip", c.spec.host)
	if errors.Is(err, allow.ErrDenied) {
		return err
	}
	if c.unrefuse() {
		c.h.log.Info("instance's address is permitted by the allowlist again; checking it", "service", c.service, "id", c.id)
	}
	return nil
}

// unrefuse clears the refused state, reporting whether it was set.
func (c *checker) unrefuse() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	was := c.refused
	c.refused = false
	return was
}

// refusedOutput is the check output written to the registry for an
// instance whose address the allowlist refuses.
func refusedOutput(kind, self, host string) string {
	return fmt.Sprintf("%s check by prober %s: not run: target %s not permitted by the prober's allowlist", kind, self, host)
}

// refuse records a check the allowlist refused: counted every time;
// logged, and written to the instance's check output (keeping the status
// the registry holds), only when the refusal starts. The instance is
// neither passed nor failed: the refusal is the prober's, not the
// instance's.
func (c *checker) refuse(ctx context.Context, err error) {
	c.h.met.refused.WithLabelValues(c.service).Inc()
	c.mu.Lock()
	first := !c.refused
	c.refused = true
	c.passes, c.failures = 0, 0
	cur := c.status
	c.mu.Unlock()
	if !first {
		return
	}
	c.h.met.instanceUp.DeleteLabelValues(c.service, c.id)
	c.h.log.Warn("instance not health-checked: its address is not permitted by --allow (the registered keyword never permits loopback, link-local or unspecified addresses; name such an address in --allow to check it)",
		"service", c.service, "id", c.id, "address", c.spec.host, "err", err)
	if cur == registryv1.HealthStatus_HEALTH_STATUS_UNSPECIFIED {
		return // SetHealth needs a status, and judging it is not ours to do
	}
	sctx, cancel := context.WithTimeout(ctx, setHealthWait)
	defer cancel()
	if _, err := c.h.reg.SetHealth(sctx, &registryv1.SetHealthRequest{Service: c.service, Id: c.id, Status: cur,
		Output: refusedOutput(c.spec.kind, c.h.members.self, c.spec.host)}); err != nil {
		c.h.log.Warn("set health output", "service", c.service, "id", c.id, "err", err)
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
	// The registry shows the output to whoever may read the service: the
	// summary carries nothing the target sent; the detail goes to the log.
	output := fmt.Sprintf("%s check by prober %s: %s", c.spec.kind, c.h.members.self, r.Summary())
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
	c.h.log.Info("instance health changed", "service", c.service, "id", c.id, "status", to, "output", output, "detail", r.Detail)
}
