package balance

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNamesAreTheBuiltInPolicies(t *testing.T) {
	want := []string{"consistent_hash", "least_conn", "p2c", "random", "round_robin", "weighted_round_robin"}
	if got := Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	for _, n := range want {
		if _, ok := Lookup(n); !ok {
			t.Errorf("Lookup(%q) not found", n)
		}
	}
	if _, ok := Lookup("nope"); ok {
		t.Error("Lookup of an unknown name succeeded")
	}
}

// TestDistribution checks with a chi-square goodness-of-fit test (fixed
// seed, significance 0.001) that each policy spreads picks as it promises.
func TestDistribution(t *testing.T) {
	weights := []uint32{1, 2, 3, 4, 10}
	weighted := []float64{1, 2, 3, 4, 10}
	even := []float64{1, 1, 1, 1, 1}
	const picks = 50000
	tests := []struct {
		policy  string
		weights []uint32
		want    []float64
		hashed  bool
	}{
		{RoundRobinName, weights, even, false}, // round robin ignores weights
		{WeightedRoundRobinName, weights, weighted, false},
		{RandomName, weights, weighted, false},
		{RandomName, nil, even, false},
		{LeastConnName, nil, even, false},
		{P2CName, nil, even, false},
		{ConsistentHashName, weights, weighted, true},
		{ConsistentHashName, nil, even, true},
		{ConsistentHashName, weights, weighted, false}, // no key: random over the table
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/weights=%v/hashed=%v", tc.policy, tc.weights, tc.hashed), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Policy = tc.policy
			eps := endpoints(len(tc.want), tc.weights...)
			s, _ := newSet(t, cfg, eps)
			counts := make(map[string]int)
			for i := range picks {
				info := PickInfo{}
				if tc.hashed {
					info = PickInfo{Hash: HashString(fmt.Sprintf("user-%d", i)), HasHash: true}
				}
				sel := mustPick(t, s, info)
				counts[sel.Endpoint.ID()]++
				sel.Done(Success, time.Millisecond)
			}
			assertDistribution(t, eps, counts, tc.want)
		})
	}
}

// TestLeastConnWeightedUnderLoad keeps 200 requests in flight, completing
// the oldest first: least_conn then gives each endpoint a share of new
// requests close to its weight.
func TestLeastConnWeightedUnderLoad(t *testing.T) {
	for _, choices := range []int{0, 2} {
		t.Run(fmt.Sprintf("choices=%d", choices), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Policy = LeastConnName
			cfg.LeastConnChoices = choices
			w := []uint32{1, 2, 3, 4}
			eps := endpoints(4, w...)
			s, _ := newSet(t, cfg, eps)
			var inflight []Selection
			counts := map[string]int{}
			for i := range 40000 {
				sel := mustPick(t, s, PickInfo{})
				if i >= 1000 { // after warm-up
					counts[sel.Endpoint.ID()]++
				}
				inflight = append(inflight, sel)
				if len(inflight) > 200 {
					inflight[0].Done(Success, time.Millisecond)
					inflight = inflight[1:]
				}
			}
			if choices == 0 {
				assertDistribution(t, eps, counts, []float64{1, 2, 3, 4})
				return
			}
			// Sampling two is a softer balance than a full scan; assert the
			// order and rough shares.
			total := 39000.0
			for i, e := range eps {
				share := float64(counts[e.ID]) / total
				want := float64(w[i]) / 10
				if share < want*0.7 || share > want*1.3 {
					t.Errorf("%s share %.3f, want %.3f ± 30%%", e.ID, share, want)
				}
			}
		})
	}
}

func TestSmoothWeightedRoundRobinOrder(t *testing.T) {
	// nginx's example: weights 5, 1, 1 give a a b a c a a.
	got := smoothSchedule([]int64{5, 1, 1})
	want := []int32{0, 0, 1, 0, 2, 0, 0}
	if !slices.Equal(got, want) {
		t.Fatalf("schedule %v, want %v", got, want)
	}
	// Over whole periods every endpoint gets exactly its weight.
	cfg := DefaultConfig()
	cfg.Policy = WeightedRoundRobinName
	eps := endpoints(3, 5, 1, 1)
	s, _ := newSet(t, cfg, eps)
	counts := pickCounts(t, s, 7*100)
	if counts["e00"] != 500 || counts["e01"] != 100 || counts["e02"] != 100 {
		t.Fatalf("counts over 100 periods %v, want 500/100/100", counts)
	}
}

func TestWRRLargeWeightsScaled(t *testing.T) {
	// Weights whose period would be enormous are scaled, keeping ratios.
	iw := integerWeights([]float64{1e6, 3e6 + 1, 2e6})
	var sum int64
	for _, x := range iw {
		sum += x
	}
	if sum > wrrMaxPeriod {
		t.Fatalf("period %d exceeds %d", sum, wrrMaxPeriod)
	}
	if r := float64(iw[1]) / float64(iw[0]); r < 2.99 || r > 3.01 {
		t.Fatalf("ratio %.3f, want 3", r)
	}
}

func TestRoundRobinCyclesInOrder(t *testing.T) {
	cfg := DefaultConfig()
	s, _ := newSet(t, cfg, endpoints(3))
	var seq []string
	for range 6 {
		sel := mustPick(t, s, PickInfo{})
		seq = append(seq, sel.Endpoint.ID())
		sel.Done(Success, 0)
	}
	// Whatever the random start, the sequence is a rotation of e00 e01 e02.
	got := strings.Join(seq, " ")
	ok := false
	for _, w := range []string{"e00 e01 e02 e00 e01 e02", "e01 e02 e00 e01 e02 e00", "e02 e00 e01 e02 e00 e01"} {
		ok = ok || got == w
	}
	if !ok {
		t.Fatalf("sequence %q is not round robin", got)
	}
}

// TestP2CAvoidsSlowEndpoint: one endpoint reporting 10x the latency gets
// far fewer picks than the others.
func TestP2CAvoidsSlowEndpoint(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Policy = P2CName
	eps := endpoints(5)
	s, clk := newSet(t, cfg, eps)
	counts := map[string]int{}
	for range 20000 {
		sel := mustPick(t, s, PickInfo{})
		lat := 10 * time.Millisecond
		if sel.Endpoint.ID() == "e00" {
			lat = 100 * time.Millisecond
		}
		counts[sel.Endpoint.ID()]++
		clk.Advance(time.Millisecond)
		sel.Done(Success, lat)
	}
	t.Logf("counts %v", counts)
	if counts["e00"] > 20000/5/4 {
		t.Fatalf("slow endpoint got %d of 20000 picks, want under a quarter of a fair share", counts["e00"])
	}
}

// TestPickDoesNotAllocate covers every built-in policy.
func TestPickDoesNotAllocate(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Policy = name
			s, _ := newSet(t, cfg, endpoints(100, 1, 2, 3))
			info := PickInfo{Hash: HashString("k"), HasHash: true}
			allocs := testing.AllocsPerRun(1000, func() {
				sel, err := s.Pick(info)
				if err != nil {
					t.Fatal(err)
				}
				sel.Done(Success, time.Millisecond)
			})
			if allocs != 0 {
				t.Fatalf("Pick+Done allocates %.1f times", allocs)
			}
		})
	}
}
