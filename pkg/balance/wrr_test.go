package balance

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// nginxSchedule is nginx's smooth weighted round robin run step by step
// over every endpoint: the reference smoothSchedule must match exactly.
func nginxSchedule(w []int64) []int32 {
	var total int64
	for _, x := range w {
		total += x
	}
	cur := make([]int64, len(w))
	sched := make([]int32, total)
	for s := range sched {
		best := 0
		for i, x := range w {
			cur[i] += x
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		sched[s] = int32(best)
	}
	return sched
}

// TestSmoothScheduleMatchesNginx compares the grouped schedule with the
// step-by-step one for fixed and random weight lists, including many equal
// weights (the grouping) and ties between classes (the index tie-break).
func TestSmoothScheduleMatchesNginx(t *testing.T) {
	tests := [][]int64{
		{1},
		{5, 1, 1},
		{1, 1, 5},
		{1, 5, 1},
		{2, 2, 2, 1},
		{3, 1, 3, 1, 3},
		{1, 2, 3, 5, 8, 1, 2, 3, 5, 8, 1, 2, 3, 5, 8},
		{7, 7, 7, 7, 7, 7, 7, 1},
		{16, 32, 48, 80, 128},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		n := 1 + r.IntN(40)
		distinct := 1 + r.IntN(6)
		vals := make([]int64, distinct)
		for i := range vals {
			vals[i] = 1 + r.Int64N(20)
		}
		w := make([]int64, n)
		for i := range w {
			w[i] = vals[r.IntN(distinct)]
		}
		tests = append(tests, w)
	}
	for _, w := range tests {
		got, want := smoothSchedule(w), nginxSchedule(w)
		if !slices.Equal(got, want) {
			t.Fatalf("weights %v:\n got %v\nwant %v", w, got, want)
		}
	}
}

// TestWRRRebuildAllocationsIndependentOfSize: an Update that changes one
// endpoint of a large weighted set allocates a bounded number of times,
// not once per endpoint.
func TestWRRRebuildAllocationsIndependentOfSize(t *testing.T) {
	allocs := func(n int) float64 {
		cfg := DefaultConfig()
		cfg.Policy = WeightedRoundRobinName
		s, _ := newSet(t, cfg, endpoints(n, 1, 2, 3, 5, 8))
		eps := endpoints(n, 1, 2, 3, 5, 8)
		spare := make([]string, n)
		for i := range spare {
			spare[i] = fmt.Sprintf("x%02d", i)
		}
		i := 0
		return testing.AllocsPerRun(20, func() {
			k := i % n
			eps[k].ID, spare[k] = spare[k], eps[k].ID
			i++
			if err := s.Update(eps); err != nil {
				t.Fatal(err)
			}
		})
	}
	small, large := allocs(10), allocs(5000)
	t.Logf("allocations per one-endpoint update: %.0f at n=10, %.0f at n=5000", small, large)
	if large > small+4 {
		t.Fatalf("one-endpoint update allocates %.0f times at n=5000, %.0f at n=10: want no per-endpoint allocations", large, small)
	}
}

// TestUnseededRandUniform: the runtime-backed source used by unseeded sets
// covers all 64 bits (IntN uses the high half of a product, so a stuck
// top bit would halve the range). Each of 16 top-nibble buckets expects
// 256 of 4096 draws; under 100 is about 10 standard deviations off.
func TestUnseededRandUniform(t *testing.T) {
	r := newRand(0, false)
	var top [16]int
	var low [16]int
	for range 4096 {
		x := r.Uint64()
		top[x>>60]++
		low[x&15]++
	}
	for i := range top {
		if top[i] < 100 || low[i] < 100 {
			t.Fatalf("bucket %d: %d draws by top nibble, %d by low nibble, want about 256 each: %v %v", i, top[i], low[i], top, low)
		}
	}
	seen := make([]bool, 7)
	for range 1000 {
		seen[r.IntN(7)] = true
	}
	if slices.Contains(seen, false) {
		t.Fatalf("IntN(7) never returned some values in 1000 draws: %v", seen)
	}
}
