package balance

import (
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a Clock tests move by hand.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// endpoints returns n healthy endpoints e00, e01, ... with the given
// weights (cycled; none means 1).
func endpoints(n int, weights ...uint32) []Endpoint {
	eps := make([]Endpoint, n)
	for i := range eps {
		eps[i] = Endpoint{ID: fmt.Sprintf("e%02d", i), Addr: fmt.Sprintf("10.0.0.%d:80", i)}
		if len(weights) > 0 {
			eps[i].Weight = weights[i%len(weights)]
		}
	}
	return eps
}

func newSet(t testing.TB, cfg Config, eps []Endpoint) (*Set, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	s, err := New(cfg, WithClock(clk), WithSeed(42))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Update(eps); err != nil {
		t.Fatalf("Update: %v", err)
	}
	return s, clk
}

func mustPick(t testing.TB, s *Set, info PickInfo) Selection {
	t.Helper()
	sel, err := s.Pick(info)
	if err != nil {
		t.Fatalf("Pick: %v", err)
	}
	return sel
}

// pickCounts picks n times (each request done at once, with success) and
// counts picks per endpoint ID.
func pickCounts(t testing.TB, s *Set, n int) map[string]int {
	t.Helper()
	got := make(map[string]int)
	for range n {
		sel := mustPick(t, s, PickInfo{})
		got[sel.Endpoint.ID()]++
		sel.Done(Success, time.Millisecond)
	}
	return got
}

// chiSquare returns Pearson's statistic for observed counts against
// expected proportions (which need not sum to 1).
func chiSquare(observed []int, expected []float64) float64 {
	var total int
	var sumE float64
	for i := range observed {
		total += observed[i]
		sumE += expected[i]
	}
	var x2 float64
	for i, o := range observed {
		e := float64(total) * expected[i] / sumE
		x2 += (float64(o) - e) * (float64(o) - e) / e
	}
	return x2
}

// chiSquareCritical returns the chi-square critical value at significance
// 0.001 for df degrees of freedom: exact table values for small df, the
// Wilson–Hilferty approximation above.
func chiSquareCritical(df int) float64 {
	table := []float64{0, 10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877, 29.588}
	if df < len(table) {
		return table[df]
	}
	const z = 3.0902 // standard normal quantile at 0.999
	k := float64(df)
	a := 2 / (9 * k)
	return k * math.Pow(1-a+z*math.Sqrt(a), 3)
}

// assertDistribution fails unless counts (by endpoint, in eps order) fit
// the expected proportions at significance 0.001.
func assertDistribution(t *testing.T, eps []Endpoint, counts map[string]int, expected []float64) {
	t.Helper()
	obs := make([]int, len(eps))
	for i, e := range eps {
		obs[i] = counts[e.ID]
	}
	x2 := chiSquare(obs, expected)
	crit := chiSquareCritical(len(eps) - 1)
	t.Logf("observed %v expected proportions %v: chi2=%.2f (critical %.2f, df=%d, p=0.001)", obs, expected, x2, crit, len(eps)-1)
	if x2 > crit {
		t.Errorf("distribution does not fit: chi2=%.2f > %.2f; observed %v, expected proportions %v", x2, crit, obs, expected)
	}
}
