// Command balance is a seeded, deterministic simulation of Switchboard's
// load-balancing policies: ten backends, one of which turns ten times
// slower, with each policy's latency percentiles side by side, and the
// share of consistent-hash keys that move when one of 100 endpoints
// leaves.
//
// It runs in virtual time (no sleeping, no sockets): a Poisson stream of
// requests, each picked with pkg/balance exactly as the edge picks, served
// by a model backend and reported back with Done. Same seed, same figures.
package main

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/switchboard-net/switchboard/pkg/balance"
)

// Scenario describes one simulated run.
type Scenario struct {
	Name       string
	Backends   int           // backends, all equal weight
	Workers    int           // concurrent requests a backend serves; 0 = unlimited (no queueing)
	Service    time.Duration // mean service time of a healthy backend
	Slowdown   float64       // factor applied to backend 0's service time
	SlowAt     time.Duration // when backend 0 turns slow
	Duration   time.Duration // virtual run time
	Rate       float64       // requests per second (Poisson)
	Clients    int           // distinct client keys for consistent_hash
	Seed       uint64
	WarmUp     time.Duration // requests arriving before this are not counted
	LatencyTau time.Duration // p2c's LatencyDecay; 0 = default
	// Timeout, if set, is the client's deadline: a request not answered
	// by then counts as a Failure (feeding outlier detection) with latency
	// Timeout; the backend still works on it.
	Timeout time.Duration
}

// Result is one policy's figures in one scenario.
type Result struct {
	Policy        string
	Requests      int
	TimedOut      int
	P50, P99, Max time.Duration
	SlowShare     float64 // share of requests (after SlowAt) sent to the slow backend
}

type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

type event struct {
	at   time.Duration
	seq  uint64 // tie-break: deterministic order
	kind eventKind
	req  *request
}

type eventKind uint8

const (
	arrival eventKind = iota
	completion
	timeout
)

type events []event

func (h events) Len() int { return len(h) }
func (h events) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h events) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *events) Push(x any)   { *h = append(*h, x.(event)) }
func (h *events) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

type request struct {
	arrived time.Duration
	backend int
	sel     balance.Selection
	done    bool // reported to the balancer (answered or timed out)
}

type backend struct {
	busy  int
	queue []*request
}

// Run simulates one policy in scenario sc.
func Run(sc Scenario, policy string) (Result, error) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := &clock{now: base}
	cfg := balance.DefaultConfig()
	cfg.Policy = policy
	if sc.LatencyTau > 0 {
		cfg.LatencyDecay = sc.LatencyTau
	}
	set, err := balance.New(cfg, balance.WithClock(clk), balance.WithSeed(sc.Seed))
	if err != nil {
		return Result{}, err
	}
	eps := make([]balance.Endpoint, sc.Backends)
	index := make(map[string]int, sc.Backends)
	for i := range eps {
		id := fmt.Sprintf("backend-%02d", i)
		eps[i] = balance.Endpoint{ID: id, Addr: fmt.Sprintf("10.0.0.%d:8080", i+1)}
		index[id] = i
	}
	if err := set.Update(eps); err != nil {
		return Result{}, err
	}
	// Separate streams, so every policy sees the same arrivals and keys.
	arrivals := rand.New(rand.NewPCG(sc.Seed, 1))
	services := rand.New(rand.NewPCG(sc.Seed, 2))
	keys := rand.New(rand.NewPCG(sc.Seed, 3))
	backends := make([]backend, sc.Backends)
	var q events
	var seq uint64
	push := func(e event) { seq++; e.seq = seq; heap.Push(&q, e) }
	service := func(b int, at time.Duration) time.Duration {
		// Shifted exponential: half fixed, half exponential; mean sc.Service.
		mean := float64(sc.Service)
		d := mean/2 + services.ExpFloat64()*mean/2
		if b == 0 && at >= sc.SlowAt {
			d *= sc.Slowdown
		}
		return time.Duration(d)
	}
	var lat []time.Duration
	start := func(r *request, at time.Duration) {
		backends[r.backend].busy++
		push(event{at: at + service(r.backend, at), kind: completion, req: r})
	}
	record := func(r *request, d time.Duration) {
		if r.arrived >= sc.WarmUp {
			lat = append(lat, d)
		}
	}
	slow, afterSlow, timedOut := 0, 0, 0
	push(event{at: 0, kind: arrival})
	for q.Len() > 0 {
		e := heap.Pop(&q).(event)
		clk.now = base.Add(e.at)
		switch e.kind {
		case timeout:
			if r := e.req; !r.done {
				r.done = true
				r.sel.Done(balance.Failure, sc.Timeout)
				record(r, sc.Timeout)
				if r.arrived >= sc.WarmUp {
					timedOut++
				}
			}
			continue
		case arrival:
			if next := e.at + time.Duration(arrivals.ExpFloat64()/sc.Rate*float64(time.Second)); next < sc.Duration {
				push(event{at: next, kind: arrival})
			}
			info := balance.PickInfo{}
			if sc.Clients > 0 {
				info = balance.PickInfo{Hash: balance.HashString(fmt.Sprint("client-", keys.IntN(sc.Clients))), HasHash: true}
			}
			sel, err := set.Pick(info)
			if err != nil {
				return Result{}, fmt.Errorf("pick at %v: %w", e.at, err)
			}
			r := &request{arrived: e.at, backend: index[sel.Endpoint.ID()], sel: sel}
			if sc.Timeout > 0 {
				push(event{at: e.at + sc.Timeout, kind: timeout, req: r})
			}
			if e.at >= sc.SlowAt {
				afterSlow++
				if r.backend == 0 {
					slow++
				}
			}
			b := &backends[r.backend]
			if sc.Workers == 0 || b.busy < sc.Workers {
				start(r, e.at)
			} else {
				b.queue = append(b.queue, r)
			}
			continue
		}
		r := e.req
		if !r.done {
			r.done = true
			d := e.at - r.arrived
			r.sel.Done(balance.Success, d)
			record(r, d)
		}
		b := &backends[r.backend]
		b.busy--
		if len(b.queue) > 0 {
			next := b.queue[0]
			b.queue = b.queue[1:]
			start(next, e.at)
		}
	}
	slices.Sort(lat)
	res := Result{Policy: policy, Requests: len(lat), TimedOut: timedOut}
	if len(lat) > 0 {
		res.P50 = pct(lat, 0.50)
		res.P99 = pct(lat, 0.99)
		res.Max = lat[len(lat)-1]
	}
	if afterSlow > 0 {
		res.SlowShare = float64(slow) / float64(afterSlow)
	}
	return res, nil
}

func pct(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

// MaglevMoved returns the share of keys that map to a different endpoint
// after one of n endpoints leaves, over the given number of keys.
func MaglevMoved(n, keys int, seed uint64) (moved, owned float64, err error) {
	cfg := balance.DefaultConfig()
	cfg.Policy = balance.ConsistentHashName
	set, err := balance.New(cfg, balance.WithSeed(seed))
	if err != nil {
		return 0, 0, err
	}
	eps := make([]balance.Endpoint, n)
	for i := range eps {
		eps[i] = balance.Endpoint{ID: fmt.Sprintf("10.2.%d.%d:8080", i/250, i%250)}
	}
	if err := set.Update(eps); err != nil {
		return 0, 0, err
	}
	pick := func(k int) string {
		sel, err := set.Pick(balance.PickInfo{Hash: balance.HashString(fmt.Sprint("key-", k)), HasHash: true})
		if err != nil {
			panic(err)
		}
		sel.Done(balance.Ignore, 0)
		return sel.Endpoint.ID()
	}
	before := make([]string, keys)
	for k := range keys {
		before[k] = pick(k)
	}
	gone := eps[n/2].ID
	if err := set.Update(slices.Delete(slices.Clone(eps), n/2, n/2+1)); err != nil {
		return 0, 0, err
	}
	var m, o int
	for k := range keys {
		if before[k] == gone {
			o++
		}
		if pick(k) != before[k] {
			m++
		}
	}
	return float64(m) / float64(keys), float64(o) / float64(keys), nil
}
