package balance

import (
	"testing"
	"time"
)

// report feeds n outcomes for id, as load reports reach the balancer
// (the endpoint need not be pickable).
func report(s *Set, id string, o Outcome, n int) {
	for range n {
		s.Observe(id, o, time.Millisecond)
	}
}

// ejectedSet returns a set of four endpoints (slow start 10 s) whose e01
// has the given health and has just been ejected for its first time (30 s).
func ejectedSet(t *testing.T, h Health) (*Set, *fakeClock, []Endpoint) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.SlowStart = 10 * time.Second
	eps := endpoints(4)
	for i := range eps {
		eps[i].Health = HealthHealthy
	}
	eps[1].Health = h
	s, clk := newSet(t, cfg, eps)
	report(s, "e01", Failure, 5)
	if !stateOf(s, "e01").Ejected() {
		t.Fatal("e01 not ejected after 5 failures")
	}
	return s, clk, eps
}

func TestPassingHealthLiftsEjection(t *testing.T) {
	for _, tc := range []struct {
		name       string
		before     Health // e01's health when it is ejected
		after      Health // what the next update says
		wantLifted bool
	}{
		{"unhealthy to healthy", HealthUnhealthy, HealthHealthy, true},
		{"unknown to healthy", HealthUnknown, HealthHealthy, true},
		{"healthy all along", HealthHealthy, HealthHealthy, false},
		{"still unhealthy", HealthUnhealthy, HealthUnhealthy, false},
		{"healthy to unknown", HealthHealthy, HealthUnknown, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, clk, eps := ejectedSet(t, tc.before)
			e1 := stateOf(s, "e01")
			clk.Advance(3 * time.Second) // the prober's checks pass a few seconds later
			eps[1].Health = tc.after
			if err := s.Update(eps); err != nil {
				t.Fatal(err)
			}
			if lifted := !e1.Ejected(); lifted != tc.wantLifted {
				t.Fatalf("after %v → %v: lifted %v, want %v", tc.before, tc.after, lifted, tc.wantLifted)
			}
			if !tc.wantLifted {
				return
			}
			// Back with slow start: the ramp's first step, then full weight.
			if w := e1.EffectiveWeight(); w <= 0 || w >= 1 {
				t.Fatalf("lifted endpoint's effective weight %v, want a slow-start ramp in (0, 1)", w)
			}
			if c := pickCounts(t, s, 400); c["e01"] == 0 {
				t.Fatal("lifted endpoint not picked")
			}
			clk.Advance(10 * time.Second)
			s.Refresh()
			if w := e1.EffectiveWeight(); w != 1 {
				t.Fatalf("after the slow-start window weight %v, want 1", w)
			}
		})
	}
}

// TestLiftedEjectionKeepsBackoff: as in Envoy, a health-check lift keeps
// the ejection multiplier, so the next ejection lasts 60 s; the back-off
// starts over once the endpoint has behaved for MaxEjection since the lift.
func TestLiftedEjectionKeepsBackoff(t *testing.T) {
	s, clk, eps := ejectedSet(t, HealthUnhealthy)
	e1 := stateOf(s, "e01")
	clk.Advance(3 * time.Second)
	eps[1].Health = HealthHealthy
	_ = s.Update(eps)
	if e1.Ejected() {
		t.Fatal("not lifted")
	}
	report(s, "e01", Failure, 5)
	clk.Advance(59 * time.Second)
	s.Refresh()
	if !e1.Ejected() {
		t.Fatal("second ejection ended before 60s: the lift reset the back-off")
	}
	clk.Advance(time.Second)
	s.Refresh()
	if e1.Ejected() {
		t.Fatal("second ejection still on after 60s")
	}

	// Lifted again, then well-behaved for longer than MaxEjection: 30 s.
	report(s, "e01", Failure, 5)
	eps[1].Health = HealthUnhealthy
	_ = s.Update(eps)
	eps[1].Health = HealthHealthy
	_ = s.Update(eps)
	if e1.Ejected() {
		t.Fatal("not lifted the second time")
	}
	clk.Advance(5*time.Minute + time.Second)
	report(s, "e01", Failure, 5)
	clk.Advance(30 * time.Second)
	s.Refresh()
	if e1.Ejected() {
		t.Fatal("back-off did not start over after a long good spell since the lift")
	}
}

// TestLiftForgetsFailuresDuringEjection: failures of requests that were in
// flight while the endpoint was ejected do not eject it again on its first
// failure after the lift.
func TestLiftForgetsFailuresDuringEjection(t *testing.T) {
	s, _, eps := ejectedSet(t, HealthUnhealthy)
	e1 := stateOf(s, "e01")
	report(s, "e01", Failure, 5) // reported late
	eps[1].Health = HealthHealthy
	_ = s.Update(eps)
	report(s, "e01", Failure, 1)
	if e1.Ejected() {
		t.Fatal("one failure after the lift ejected it again")
	}
}
