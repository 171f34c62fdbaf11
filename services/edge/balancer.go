package edge

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/balance"
	"github.com/switchboard-net/switchboard/pkg/watch"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
)

// watcher follows the balancer's WatchEndpoints stream and feeds the
// upstreams; when the balancer is unreachable the last sets stay in use.
type watcher struct {
	client  balancerv1.BalancerClient
	ups     *upstreams
	log     *slog.Logger
	changed func() // rebuild routes
	updates atomic.Uint64
	// allowLocal reports whether a service's endpoints may be on loopback
	// or link-local addresses (--allow-loopback, allow_loopback).
	allowLocal func(service string) bool
	refused    map[string]bool // endpoints already logged as refused

	// applyMu serialises apply (the stream's and replay's, reload.go);
	// last is each service's last set, replayed when the config file
	// stops defining a service of that name.
	applyMu sync.Mutex
	last    map[string]*balancerv1.WatchEndpointsResponse

	// An outage, seen from Follow's goroutine: since when, and the
	// dropped-reports count then.
	lostAt      time.Time
	droppedThen uint64
}

// run follows the stream until ctx ends. Follow logs once (WARN) when
// the stream is lost and retries quietly; the watcher logs once (WARN)
// when the balancer is back, with how long it was away and how many load
// reports were dropped meanwhile.
func (w *watcher) run(ctx context.Context) error {
	watch.Follow(ctx, watch.Stream(w.open, w.update), func(error, time.Duration) {
		if w.lostAt.IsZero() {
			w.lostAt, w.droppedThen = time.Now(), w.ups.met.reportsDropped.Load()
		}
	}, watch.WithLogger(w.log, "balancer"))
	return nil
}

// open opens the balancer's stream of every service's endpoint set.
func (w *watcher) open(ctx context.Context) (watch.Receiver[*balancerv1.WatchEndpointsResponse], error) {
	return w.client.WatchEndpoints(ctx, &balancerv1.WatchEndpointsRequest{})
}

// update applies one streamed endpoint set.
func (w *watcher) update(resp *balancerv1.WatchEndpointsResponse) {
	if !w.lostAt.IsZero() {
		w.log.Warn("balancer stream resumed; endpoint sets are live again",
			"down_for", time.Since(w.lostAt).Round(time.Millisecond),
			"reports_dropped", w.ups.met.reportsDropped.Load()-w.droppedThen)
		w.lostAt = time.Time{}
	}
	w.applyMu.Lock()
	if w.last == nil {
		w.last = map[string]*balancerv1.WatchEndpointsResponse{}
	}
	w.last[resp.GetService()] = resp
	err := w.apply(resp)
	w.applyMu.Unlock()
	if err != nil {
		w.log.Warn("endpoint set rejected", "service", resp.GetService(), "err", err)
		return
	}
	w.updates.Add(1)
	w.changed()
}

func (w *watcher) apply(resp *balancerv1.WatchEndpointsResponse) error {
	name := resp.GetService()
	if name == "" {
		return errors.New("service: empty")
	}
	cfg := policyConfig(resp.GetPolicy())
	eps := make([]balance.Endpoint, 0, len(resp.GetEndpoints()))
	tags := map[string][]string{}
	for _, e := range resp.GetEndpoints() {
		if e.GetId() == "" {
			continue
		}
		if localAddress(e.GetAddress()) && (w.allowLocal == nil || !w.allowLocal(name)) {
			if key := name + "/" + e.GetId(); !w.refused[key] {
				if w.refused == nil {
					w.refused = map[string]bool{}
				}
				w.refused[key] = true
				w.log.Warn("endpoint on a loopback or link-local address gets no traffic (--allow-loopback or allow_loopback lets it)",
					"service", name, "id", e.GetId(), "address", e.GetAddress())
			}
			continue
		}
		ep := balance.Endpoint{
			ID:     e.GetId(),
			Addr:   net.JoinHostPort(e.GetAddress(), strconv.Itoa(int(e.GetPort()))),
			Weight: e.GetWeight(),
			Zone:   e.GetZone(),
			Health: balance.HealthHealthy,
		}
		if !e.GetHealthy() || e.GetEjected() {
			ep.Health = balance.HealthUnhealthy
		}
		if ew := e.GetEffectiveWeight(); ew > 0 {
			ep.Weight = uint32(max(1, ew+0.5))
		}
		eps = append(eps, ep)
		tags[ep.ID] = e.GetTags()
	}
	return w.ups.update(name, cfg, eps, tags, false)
}

// localAddress reports whether a registered address is on this host or its
// link: the registry is written by many hands, and a route from it must not
// turn the edge into a way to reach the edge host's own loopback services.
// Names other than localhost are not resolved here (the wire listener's
// dialer checks resolved addresses too).
func localAddress(addr string) bool {
	if ip, err := netip.ParseAddr(addr); err == nil {
		return isLocal(ip)
	}
	a := strings.ToLower(strings.TrimSuffix(addr, "."))
	return a == "localhost" || strings.HasSuffix(a, ".localhost")
}

// policyConfig maps the balancer's policy onto a local balance.Config.
// Slow start is left to the balancer (its effective weights are ramped).
func policyConfig(p *balancerv1.Policy) balance.Config {
	c := balance.DefaultConfig()
	if p == nil {
		return c
	}
	if p.GetName() != "" {
		c.Policy = p.GetName()
	}
	if p.GetHashOn() != "" {
		c.HashOn = p.GetHashOn()
	}
	if v := p.GetPanicThresholdPercent(); v > 0 {
		c.PanicThresholdPercent = int(min(v, 100))
	}
	if o := p.GetOutlier(); o != nil {
		if v := o.GetConsecutiveFailures(); v > 0 {
			c.Outlier.ConsecutiveFailures = int(v)
		}
		if d := o.GetBaseEjectionTime().AsDuration(); d > 0 {
			c.Outlier.BaseEjection = d
		}
		if d := o.GetMaxEjectionTime().AsDuration(); d > 0 {
			c.Outlier.MaxEjection = d
		}
		c.Outlier.MaxEjection = max(c.Outlier.MaxEjection, c.Outlier.BaseEjection)
		if v := o.GetMaxEjectionPercent(); v > 0 {
			c.Outlier.MaxEjectedPercent = int(min(v, 100))
		}
	}
	if b := p.GetBreaker(); b != nil && b.GetFailureThreshold() > 0 {
		c.Breaker.FailureThreshold = int(b.GetFailureThreshold())
		if d := b.GetOpenTime().AsDuration(); d > 0 {
			c.Breaker.OpenTime = d
		}
	}
	if c.Validate() != nil {
		return balance.DefaultConfig()
	}
	return c
}

// routesFromTags returns the (host, prefix, strip) routes a service's
// endpoint tags ask for.
func routesFromTags(tags map[string][]string) (out [][3]string) {
	seen := map[[3]string]bool{}
	for _, ts := range tags {
		strip := ""
		for _, t := range ts {
			if t == "edge.strip_prefix=true" {
				strip = "strip"
			}
		}
		for _, t := range ts {
			if h, p, ok := parseRouteTag(t); ok && strings.HasPrefix(p, "/") {
				k := [3]string{h, p, strip}
				if !seen[k] {
					seen[k] = true
					out = append(out, k)
				}
			}
		}
	}
	return out
}

// report is one outcome queued for the balancer.
type report struct {
	svc, id string
	outcome balancerv1.Outcome
	latency time.Duration
}

// reporter batches outcomes to the balancer: a bounded queue that drops
// when full, flushed every interval or when a batch is full.
type reporter struct {
	client   balancerv1.BalancerClient
	ch       chan report
	batch    int
	interval time.Duration
	met      *metrics
	log      *slog.Logger
	sent     atomic.Uint64
	dropped  atomic.Uint64
}

func (r *reporter) add(rep report) {
	if r == nil {
		return
	}
	select {
	case r.ch <- rep:
	default:
		r.drop(1)
	}
}

// drop counts n reports that will never reach the balancer.
func (r *reporter) drop(n int) {
	r.dropped.Add(uint64(n))
	r.met.dropped.Add(float64(n))
	r.met.reportsDropped.Add(uint64(n))
}

func (r *reporter) run(ctx context.Context) error {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	buf := make([]*balancerv1.LoadReport, 0, r.batch)
	flush := func() {
		if len(buf) == 0 {
			return
		}
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := r.client.Report(cctx, &balancerv1.ReportRequest{Reports: buf})
		cancel()
		if err != nil {
			// The balancer is away (or refused the batch): the batch is
			// lost. Counting only a full queue missed this, because the
			// loop keeps draining the queue into failing batches.
			r.drop(len(buf))
			r.log.Debug("load reports dropped: not delivered", "n", len(buf), "err", err)
		} else {
			r.sent.Add(uint64(len(buf)))
		}
		buf = make([]*balancerv1.LoadReport, 0, r.batch)
	}
	for {
		select {
		case <-ctx.Done():
			// Flush what is queued, bounded by the batch size.
			for len(buf) < r.batch {
				select {
				case rep := <-r.ch:
					buf = append(buf, toProto(rep))
					continue
				default:
				}
				break
			}
			flush()
			return nil
		case rep := <-r.ch:
			buf = append(buf, toProto(rep))
			if len(buf) >= r.batch {
				flush()
			}
		case <-t.C:
			flush()
		}
	}
}

func toProto(r report) *balancerv1.LoadReport {
	return &balancerv1.LoadReport{Service: r.svc, EndpointId: r.id, Outcome: r.outcome, Latency: durationpb.New(r.latency)}
}
