package balance

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestPickErrors(t *testing.T) {
	cfg := DefaultConfig()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pick(PickInfo{}); err != ErrNoEndpoint {
		t.Fatalf("empty set: err %v, want ErrNoEndpoint", err)
	}
	cfg.PanicThresholdPercent = 0
	eps := endpoints(2)
	for i := range eps {
		eps[i].Health = HealthUnhealthy
	}
	s, _ = newSet(t, cfg, eps)
	if _, err := s.Pick(PickInfo{}); err != ErrNoHealthy {
		t.Fatalf("all unhealthy, panic off: err %v, want ErrNoHealthy", err)
	}
	if err := s.Update(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pick(PickInfo{}); err != ErrNoEndpoint {
		t.Fatalf("emptied set: err %v, want ErrNoEndpoint", err)
	}
}

func TestUpdateRejectsBadIDs(t *testing.T) {
	s, _ := New(DefaultConfig())
	if err := s.Update([]Endpoint{{ID: "a"}, {ID: ""}}); err == nil {
		t.Error("empty ID accepted")
	}
	if err := s.Update([]Endpoint{{ID: "a"}, {ID: "a"}}); err == nil {
		t.Error("duplicate ID accepted")
	}
}

func TestUnhealthySkipped(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Policy = name
			eps := endpoints(4)
			eps[2].Health = HealthUnhealthy
			eps[0].Health = HealthHealthy
			s, _ := newSet(t, cfg, eps)
			counts := pickCounts(t, s, 2000)
			if counts["e02"] != 0 {
				t.Fatalf("unhealthy endpoint picked %d times", counts["e02"])
			}
			if len(counts) != 3 {
				t.Fatalf("picked %v, want the three healthy endpoints", counts)
			}
			if s.Panicking() {
				t.Fatal("panic mode with 3 of 4 healthy")
			}
		})
	}
}

func TestPanicThreshold(t *testing.T) {
	tests := []struct {
		unhealthy int // of 4
		threshold int
		panic     bool
		picked    int // distinct endpoints seen
	}{
		{unhealthy: 2, threshold: 50, panic: false, picked: 2}, // 50% healthy is not below 50%
		{unhealthy: 3, threshold: 50, panic: true, picked: 4},  // 25% < 50%: use all
		{unhealthy: 4, threshold: 50, panic: true, picked: 4},
		{unhealthy: 3, threshold: 20, panic: false, picked: 1},
		{unhealthy: 1, threshold: 100, panic: true, picked: 4},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("unhealthy=%d/threshold=%d", tc.unhealthy, tc.threshold), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.PanicThresholdPercent = tc.threshold
			eps := endpoints(4)
			for i := range tc.unhealthy {
				eps[i].Health = HealthUnhealthy
			}
			s, _ := newSet(t, cfg, eps)
			if s.Panicking() != tc.panic {
				t.Fatalf("Panicking() = %v, want %v", s.Panicking(), tc.panic)
			}
			if got := len(pickCounts(t, s, 400)); got != tc.picked {
				t.Fatalf("picked %d distinct endpoints, want %d", got, tc.picked)
			}
		})
	}
}

// fail reports n failures for picks that land on id (others succeed).
func failOn(t *testing.T, s *Set, id string, n int) {
	t.Helper()
	for i := 0; n > 0 && i < 10000; i++ {
		sel := mustPick(t, s, PickInfo{})
		if sel.Endpoint.ID() == id {
			sel.Done(Failure, time.Millisecond)
			n--
		} else {
			sel.Done(Success, time.Millisecond)
		}
	}
	if n > 0 {
		t.Fatalf("%s not picked often enough to fail it", id)
	}
}

func stateOf(s *Set, id string) *EndpointState {
	for _, e := range s.Endpoints() {
		if e.ID() == id {
			return e
		}
	}
	return nil
}

func TestOutlierEjectionAndRecovery(t *testing.T) {
	cfg := DefaultConfig() // 5 failures, 30s doubling to 5m
	s, clk := newSet(t, cfg, endpoints(4))
	e1 := stateOf(s, "e01")

	failOn(t, s, "e01", 4)
	if e1.Ejected() {
		t.Fatal("ejected after 4 failures")
	}
	// A success resets the count.
	failOn(t, s, "e01", 0)
	sel := pickUntil(t, s, "e01")
	sel.Done(Success, time.Millisecond)
	failOn(t, s, "e01", 4)
	if e1.Ejected() {
		t.Fatal("ejected though a success came between failures")
	}
	failOn(t, s, "e01", 1)
	if !e1.Ejected() || e1.EffectiveWeight() != 0 {
		t.Fatalf("not ejected after 5 consecutive failures (weight %v)", e1.EffectiveWeight())
	}
	if c := pickCounts(t, s, 300); c["e01"] != 0 {
		t.Fatalf("ejected endpoint picked %d times", c["e01"])
	}

	// Back after 30s (picks notice the deadline themselves).
	clk.Advance(29 * time.Second)
	if c := pickCounts(t, s, 300); c["e01"] != 0 {
		t.Fatal("returned before the ejection time")
	}
	clk.Advance(time.Second)
	if c := pickCounts(t, s, 300); c["e01"] == 0 || e1.Ejected() {
		t.Fatal("not returned after 30s")
	}

	// Ejected again soon: 60s this time, then 120s, 240s, then capped at 5m.
	for _, d := range []time.Duration{60 * time.Second, 120 * time.Second, 240 * time.Second, 300 * time.Second, 300 * time.Second} {
		failOn(t, s, "e01", 5)
		if !e1.Ejected() {
			t.Fatal("not ejected")
		}
		clk.Advance(d - time.Second)
		s.Refresh()
		if !e1.Ejected() {
			t.Fatalf("returned before %v", d)
		}
		clk.Advance(time.Second)
		s.Refresh()
		if e1.Ejected() {
			t.Fatalf("still ejected after %v", d)
		}
	}

	// Well-behaved for longer than MaxEjection: back-off starts over.
	clk.Advance(6 * time.Minute)
	failOn(t, s, "e01", 5)
	clk.Advance(30 * time.Second)
	s.Refresh()
	if e1.Ejected() {
		t.Fatal("back-off did not reset after a long good spell")
	}
}

func pickUntil(t *testing.T, s *Set, id string) Selection {
	t.Helper()
	for range 10000 {
		sel := mustPick(t, s, PickInfo{})
		if sel.Endpoint.ID() == id {
			return sel
		}
		sel.Done(Success, time.Millisecond)
	}
	t.Fatalf("%s never picked", id)
	return Selection{}
}

func TestMaxEjectedPercent(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PanicThresholdPercent = 0
	s, _ := newSet(t, cfg, endpoints(4)) // 50% of 4: at most 2 ejected
	for _, id := range []string{"e00", "e01", "e02"} {
		failOn(t, s, id, 5)
	}
	n := 0
	for _, e := range s.Endpoints() {
		if e.Ejected() {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d endpoints ejected, want 2 (the 50%% cap)", n)
	}
	// The third took the place of one ejected earlier whose checks do not
	// fail (TestEjectionSwap): the cap holds.
	if !stateOf(s, "e02").Ejected() {
		t.Fatal("the endpoint failing last is not among the ejected")
	}
}

func TestEjectionTriggersPanic(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Outlier.MaxEjectedPercent = 100
	s, _ := newSet(t, cfg, endpoints(3))
	failOn(t, s, "e00", 5)
	failOn(t, s, "e01", 5)
	if !s.Panicking() {
		t.Fatal("one of three left (33% < 50%) but no panic mode")
	}
	if c := pickCounts(t, s, 300); len(c) != 3 {
		t.Fatalf("panic mode picked %v, want all three", c)
	}
}

func TestBreaker(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Outlier.ConsecutiveFailures = 0
	cfg.Breaker = BreakerConfig{FailureThreshold: 3, OpenTime: 10 * time.Second, HalfOpenRequests: 1}
	cfg.Policy = ConsistentHashName
	cfg.HashTableSize = 101
	s, clk := newSet(t, cfg, endpoints(3))

	// Find a key that lands on e01 so we can aim at it.
	var key PickInfo
	for i := 0; ; i++ {
		key = PickInfo{Hash: HashString(fmt.Sprint(i)), HasHash: true}
		sel := mustPick(t, s, key)
		sel.Done(Ignore, 0)
		if sel.Endpoint.ID() == "e01" {
			break
		}
	}
	e1 := stateOf(s, "e01")
	for range 3 {
		sel := mustPick(t, s, key)
		if sel.Endpoint != e1 {
			t.Fatal("key moved while the breaker was closed")
		}
		sel.Done(Failure, time.Millisecond)
	}
	if e1.Breaker() != BreakerOpen {
		t.Fatalf("breaker %v after 3 failures, want open", e1.Breaker())
	}
	if sel := mustPick(t, s, key); sel.Endpoint == e1 {
		t.Fatal("open breaker picked")
	} else {
		sel.Done(Success, 0)
	}

	clk.Advance(10 * time.Second)
	s.Refresh()                  // half-open now (a Done would also notice)
	probe := mustPick(t, s, key) // one probe admitted
	if e1.Breaker() != BreakerHalfOpen || probe.Endpoint != e1 {
		t.Fatalf("after open time: breaker %v, picked %s; want half-open and e01", e1.Breaker(), probe.Endpoint.ID())
	}
	other := mustPick(t, s, key) // the probe slot is taken
	if other.Endpoint == e1 {
		t.Fatal("second request admitted to a half-open endpoint")
	}
	other.Done(Success, 0)
	probe.Done(Failure, time.Millisecond) // probe failed: open again
	if e1.Breaker() != BreakerOpen {
		t.Fatalf("breaker %v after failed probe, want open", e1.Breaker())
	}

	clk.Advance(10 * time.Second)
	s.Refresh()
	probe = mustPick(t, s, key)
	if probe.Endpoint != e1 {
		t.Fatal("no probe after the second open time")
	}
	probe.Done(Success, time.Millisecond)
	if e1.Breaker() != BreakerClosed {
		t.Fatalf("breaker %v after a successful probe, want closed", e1.Breaker())
	}
	for range 5 {
		sel := mustPick(t, s, key)
		if sel.Endpoint != e1 {
			t.Fatal("key did not come back to its endpoint after the breaker closed")
		}
		sel.Done(Success, 0)
	}
}

func TestSlowStart(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Policy = WeightedRoundRobinName
	cfg.SlowStart = 16 * time.Second
	cfg.SlowStartMinPercent = 10
	s, clk := newSet(t, cfg, endpoints(3, 10))
	for _, e := range s.Endpoints() {
		if e.EffectiveWeight() != 10 {
			t.Fatalf("initial endpoint %s ramping (weight %v): the first update must not ramp", e.ID(), e.EffectiveWeight())
		}
	}
	eps := append(endpoints(3, 10), Endpoint{ID: "new", Weight: 10})
	if err := s.Update(eps); err != nil {
		t.Fatal(err)
	}
	nw := stateOf(s, "new")
	// 10% rounds up to 2/16 of the weight, then one sixteenth a second.
	steps := []struct {
		at     time.Duration
		weight float64
	}{{0, 1.25}, {time.Second, 1.25}, {2 * time.Second, 1.875}, {8 * time.Second, 5.625}, {15 * time.Second, 10}, {16 * time.Second, 10}}
	var at time.Duration
	for _, st := range steps {
		clk.Advance(st.at - at)
		at = st.at
		counts := pickCounts(t, s, 3125)
		if got := nw.EffectiveWeight(); got != st.weight {
			t.Fatalf("at %v: effective weight %v, want %v", st.at, got, st.weight)
		}
		// With smooth WRR the share is exact over whole periods.
		share := float64(counts["new"]) / 3125
		want := st.weight / (30 + st.weight)
		if d := share - want; d > 0.01 || d < -0.01 {
			t.Errorf("at %v: new endpoint share %.3f, want %.3f", st.at, share, want)
		}
	}
}

func TestSlowStartAfterUnhealthy(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SlowStart = 10 * time.Second
	eps := endpoints(4, 1)
	s, clk := newSet(t, cfg, eps)
	eps[0].Health = HealthUnhealthy
	_ = s.Update(eps)
	if w := stateOf(s, "e00").EffectiveWeight(); w != 0 {
		t.Fatalf("unhealthy endpoint effective weight %v, want 0", w)
	}
	clk.Advance(time.Minute)
	eps[0].Health = HealthHealthy
	_ = s.Update(eps)
	if w := stateOf(s, "e00").EffectiveWeight(); w >= 1 || w <= 0 {
		t.Fatalf("endpoint back from unhealthy has weight %v, want a ramp below 1", w)
	}
	clk.Advance(10 * time.Second)
	s.Refresh()
	if w := stateOf(s, "e00").EffectiveWeight(); w != 1 {
		t.Fatalf("after the window weight %v, want 1", w)
	}
}

func TestStateSurvivesUpdate(t *testing.T) {
	s, _ := newSet(t, DefaultConfig(), endpoints(3))
	sel := pickUntil(t, s, "e01")
	before := stateOf(s, "e01")
	other := pickUntil(t, s, "e01")
	other.Done(Success, 7*time.Millisecond)
	eps := endpoints(4)
	eps[1].Addr = "10.9.9.9:80"
	if err := s.Update(eps); err != nil {
		t.Fatal(err)
	}
	after := stateOf(s, "e01")
	if after != before || after.Outstanding() != 1 || after.Latency() != 7*time.Millisecond || after.Addr() != "10.9.9.9:80" {
		t.Fatalf("state lost across update: same=%v outstanding=%d latency=%v addr=%s", after == before, after.Outstanding(), after.Latency(), after.Addr())
	}
	sel.Done(Success, time.Millisecond)
	if after.Outstanding() != 0 {
		t.Fatalf("outstanding %d after Done", after.Outstanding())
	}
	// Done after removal is harmless.
	sel = pickUntil(t, s, "e02")
	_ = s.Update(endpoints(2))
	sel.Done(Failure, time.Millisecond)
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		field string
		mod   func(*Config)
	}{
		{"Policy", func(c *Config) { c.Policy = "fastest" }},
		{"HashOn", func(c *Config) { c.HashOn = "query:x" }},
		{"HashTableSize", func(c *Config) { c.HashTableSize = 65536 }},
		{"PanicThresholdPercent", func(c *Config) { c.PanicThresholdPercent = 101 }},
		{"SlowStart", func(c *Config) { c.SlowStart = -time.Second }},
		{"SlowStartMinPercent", func(c *Config) { c.SlowStart = time.Second; c.SlowStartMinPercent = 0 }},
		{"Outlier.ConsecutiveFailures", func(c *Config) { c.Outlier.ConsecutiveFailures = -1 }},
		{"Outlier.BaseEjection", func(c *Config) { c.Outlier.BaseEjection = 0 }},
		{"Outlier.MaxEjection", func(c *Config) { c.Outlier.MaxEjection = time.Second }},
		{"Outlier.MaxEjectedPercent", func(c *Config) { c.Outlier.MaxEjectedPercent = -5 }},
		{"Breaker.OpenTime", func(c *Config) { c.Breaker.FailureThreshold = 3; c.Breaker.OpenTime = 0 }},
		{"Breaker.HalfOpenRequests", func(c *Config) { c.Breaker.FailureThreshold = 3; c.Breaker.HalfOpenRequests = 0 }},
		{"LatencyDecay", func(c *Config) { c.LatencyDecay = -1 }},
		{"LeastConnChoices", func(c *Config) { c.LeastConnChoices = 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.field, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mod(&cfg)
			_, err := New(cfg)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("New: %v; want a *ConfigError for %s", err, tc.field)
			}
		})
	}
	for _, cfg := range []Config{{}, DefaultConfig()} {
		if err := cfg.Validate(); err != nil {
			t.Errorf("Validate(%+v): %v", cfg, err)
		}
	}
}

// TestConcurrentPicksAndUpdates runs picks, reports and updates at once
// (meant for -race).
func TestConcurrentPicksAndUpdates(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Policy = name
			cfg.HashTableSize = 1009
			cfg.SlowStart = time.Second
			cfg.Breaker.FailureThreshold = 3
			s, clk := newSet(t, cfg, endpoints(8))
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for g := range 4 {
				wg.Go(func() {
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						sel, err := s.Pick(PickInfo{Hash: uint64(i * g), HasHash: i%2 == 0})
						if err != nil {
							continue
						}
						o := Success
						if i%7 == 0 {
							o = Failure
						}
						sel.Done(o, time.Duration(i%100)*time.Microsecond)
					}
				})
			}
			for i := range 200 {
				_ = s.Update(endpoints(4 + i%6))
				clk.Advance(100 * time.Millisecond)
			}
			close(stop)
			wg.Wait()
			for _, e := range s.Endpoints() {
				if e.Outstanding() != 0 {
					t.Errorf("%s outstanding %d after all Done", e.ID(), e.Outstanding())
				}
			}
		})
	}
}

func TestSetConfigKeepsState(t *testing.T) {
	s, _ := newSet(t, DefaultConfig(), endpoints(3))
	held := pickUntil(t, s, "e01")
	failOn(t, s, "e02", 5)
	cfg := DefaultConfig()
	cfg.Policy = LeastConnName
	if err := s.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if got := s.Config().Policy; got != LeastConnName {
		t.Fatalf("policy %q after SetConfig", got)
	}
	if e := stateOf(s, "e01"); e.Outstanding() != 1 {
		t.Fatalf("outstanding %d after SetConfig, want 1", e.Outstanding())
	}
	if !stateOf(s, "e02").Ejected() {
		t.Fatal("ejection lost across SetConfig")
	}
	// least_conn now avoids the endpoint with a request in flight.
	if c := pickCounts(t, s, 100); c["e01"] != 0 || c["e00"] != 100 {
		t.Fatalf("least_conn picks %v, want all on e00", c)
	}
	held.Done(Success, time.Millisecond)

	bad := DefaultConfig()
	bad.Policy = "nope"
	var ce *ConfigError
	if err := s.SetConfig(bad); !errors.As(err, &ce) || ce.Field != "Policy" {
		t.Fatalf("SetConfig(bad) = %v, want a Policy ConfigError", err)
	}
	if s.Config().Policy != LeastConnName {
		t.Fatal("a rejected config changed the set")
	}
}

// TestEjectedAloneComesBackWithoutTraffic: with panic mode off and the only
// endpoint ejected, no request completes to move the set's time on; Pick
// must still notice the end of the ejection.
func TestEjectedAloneComesBackWithoutTraffic(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PanicThresholdPercent = 0
	s, clk := newSet(t, cfg, endpoints(1))
	failOn(t, s, "e00", 5)
	if _, err := s.Pick(PickInfo{}); err != ErrNoHealthy {
		t.Fatalf("only endpoint ejected: err %v, want ErrNoHealthy", err)
	}
	clk.Advance(30 * time.Second)
	sel, err := s.Pick(PickInfo{})
	if err != nil {
		t.Fatalf("after the ejection time: %v", err)
	}
	sel.Done(Success, time.Millisecond)
}

func TestP2CFastFailureIsNoLatencySample(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Policy = P2CName
	s, _ := newSet(t, cfg, endpoints(2))
	sel := pickUntil(t, s, "e00")
	sel.Done(Failure, time.Microsecond)
	if l := stateOf(s, "e00").Latency(); l != 0 {
		t.Fatalf("a fast failure set the latency estimate to %v", l)
	}
}

// TestCappedEjectionDoesNotRebuild: failures from an endpoint the cap keeps
// in service must not rebuild the snapshot on every Done.
func TestCappedEjectionDoesNotRebuild(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PanicThresholdPercent = 0
	s, _ := newSet(t, cfg, endpoints(2)) // 50% of 2: one may be ejected
	failOn(t, s, "e00", 5)
	// e00's checks fail too: nothing may make room for another ejection.
	eps := endpoints(2)
	eps[0].Health = HealthUnhealthy
	if err := s.Update(eps); err != nil {
		t.Fatal(err)
	}
	before := s.snap.Load()
	for range 20 { // e00 is unhealthy and ejected: e01 takes every pick
		mustPick(t, s, PickInfo{}).Done(Failure, time.Millisecond)
	}
	if stateOf(s, "e01").Ejected() {
		t.Fatal("ejected beyond the cap")
	}
	if s.snap.Load() != before {
		t.Fatal("refused ejections rebuilt the snapshot")
	}
}

// TestEjectionSwap: at the cap, an endpoint failing now takes the place of
// an ejected one whose checks do not fail (a burst of timeouts ejected it
// earlier; now the other one hangs): the one failing now is ejected and
// the other let back, instead of every request going to the one failing.
func TestEjectionSwap(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PanicThresholdPercent = 0
	s, _ := newSet(t, cfg, endpoints(2))
	failOn(t, s, "e00", 5)
	if !stateOf(s, "e00").Ejected() {
		t.Fatal("e00 not ejected")
	}
	for range 5 { // e00 is ejected: e01 takes every pick
		mustPick(t, s, PickInfo{}).Done(Failure, time.Millisecond)
	}
	if !stateOf(s, "e01").Ejected() || stateOf(s, "e00").Ejected() {
		t.Fatalf("after e01 failed 5 times: e00 ejected %v, e01 ejected %v; want e01 ejected in e00's place",
			stateOf(s, "e00").Ejected(), stateOf(s, "e01").Ejected())
	}
	if got := mustPick(t, s, PickInfo{}); got.Endpoint.ID() != "e00" {
		t.Fatalf("picked %s, want e00 (let back)", got.Endpoint.ID())
	}
}
