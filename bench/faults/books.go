package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// Times are offsets from the start of the run (monotonic).

// httpRec is one HTTP request.
type httpRec struct {
	at       time.Duration // scheduled start
	lat      time.Duration // scheduled start to outcome
	done, ok bool
	fresh    bool          // a request on a connection of its own
	connBorn time.Duration // when the first attempt's connection was dialled; -1: none
	retried  bool
	backend  string // the app that answered ("demo-1")
	err      string // short reason of a failure
}

// regRec is one Register.
type regRec struct {
	seq      int
	at, lat  time.Duration
	done, ok bool
	err      string
}

// readRound is one read of every registration service.
type readRound struct {
	at      time.Duration
	present map[int]bool // registration seq → present
}

// healthObs is one look at the backend service: its instances' health in
// the registry, whether the balancer picked one (-1: not asked or no
// answer), and how many healthy backends the edge lists (-1: idem).
type healthObs struct {
	at          time.Duration
	health      map[string]registryv1.HealthStatus
	picked      int
	edgeHealthy int
	edgeOut     []string // the edge's backends out of rotation, and why
}

// phase is one fault (or the baseline): from its /begin to the next one.
type phase struct {
	name, kind, param string
	begin, end        time.Duration // end < 0: not ended
	notes             []string
	fails             []string
}

func validKind(k string) bool {
	switch k {
	case "none", "kill", "consul-kill", "consul-recreate", "pause", "edge-restart":
		return true
	}
	return false
}

// run holds every record of the run.
type run struct {
	t0 time.Time

	mu     sync.Mutex
	reqs   []httpRec
	regs   []regRec
	reads  []readRound
	health []healthObs
	phases []*phase
	loads  []loadSample
	// missing is, per read, how many accepted registrations it lacked
	// (set by report).
	missing []int
	closed  time.Duration // when /stop came; 0 while running
}

// loadSample is the machine's 1-minute load average at a moment.
type loadSample struct {
	at   time.Duration
	load float64
}

func newRun() *run { return &run{t0: time.Now()} }

func (r *run) now() time.Duration { return time.Since(r.t0) }

func (r *run) begin(name, kind, param string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phases = append(r.phases, &phase{name: name, kind: kind, param: param, begin: r.now(), end: -1})
	fmt.Fprintf(os.Stderr, "faults-driver [%6.1fs] begin %s\n", r.now().Seconds(), name)
}

func (r *run) end() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.phases) == 0 {
		return errors.New("no fault begun")
	}
	p := r.phases[len(r.phases)-1]
	p.end = r.now()
	fmt.Fprintf(os.Stderr, "faults-driver [%6.1fs] end %s (%.1fs after its start)\n", p.end.Seconds(), p.name, (p.end - p.begin).Seconds())
	return nil
}

func (r *run) annotate(text string, fail bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.phases) == 0 || text == "" {
		return
	}
	p := r.phases[len(r.phases)-1]
	if fail {
		p.fails = append(p.fails, text)
	} else {
		p.notes = append(p.notes, text)
	}
}

func (r *run) closePhase() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = r.now()
	if n := len(r.phases); n > 0 && r.phases[n-1].end < 0 {
		r.phases[n-1].end = r.closed
	}
}

// recovered reports whether the current fault's traffic has had a clean
// window since the fault ended, and how long after the end it began.
func (r *run) recovered() (bool, time.Duration, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.phases) == 0 {
		return false, 0, "no fault begun"
	}
	p := r.phases[len(r.phases)-1]
	if p.end < 0 {
		return false, 0, "the fault has not ended"
	}
	t, ok, why := r.cleanStart(p.end, r.now())
	if !ok {
		return false, 0, why
	}
	return true, t - p.end, ""
}

// cleanStart finds the first t ≥ from such that every request and Register
// scheduled in [t, t+clean) has finished and succeeded, looking no further
// than until. Callers hold r.mu.
func (r *run) cleanStart(from, until time.Duration) (time.Duration, bool, string) {
	win := *cleanWin
	t := from
	hi := sort.Search(len(r.reqs), func(i int) bool { return r.reqs[i].at >= from })
	ri := sort.Search(len(r.regs), func(i int) bool { return r.regs[i].at >= from })
	for {
		if t+win > until {
			return 0, false, fmt.Sprintf("clean for %.1fs of %.0fs", (until - t).Seconds(), win.Seconds())
		}
		// The first failure (or unknown outcome) in [t, t+win).
		bad := time.Duration(-1)
		for i := hi; i < len(r.reqs) && r.reqs[i].at < t+win; i++ {
			q := &r.reqs[i]
			if q.at < t {
				hi = i + 1
				continue
			}
			if !q.done {
				return 0, false, "requests still in flight"
			}
			if !q.ok {
				bad = q.at
				break
			}
		}
		for i := ri; i < len(r.regs) && r.regs[i].at < t+win; i++ {
			g := &r.regs[i]
			if g.at < t {
				ri = i + 1
				continue
			}
			if !g.done {
				return 0, false, "registrations still in flight"
			}
			if !g.ok {
				if bad < 0 || g.at < bad {
					bad = g.at
				}
				break
			}
		}
		if bad < 0 {
			return t, true, ""
		}
		t = bad + time.Nanosecond
	}
}
