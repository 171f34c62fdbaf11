package balance

import (
	"math"
	"sync/atomic"
)

// WeightedRoundRobinName is the name of the smooth weighted round-robin
// policy (the interleaving nginx uses: weights 5,1,1 give a a b a c a a).
const WeightedRoundRobinName = "weighted_round_robin"

func init() { Register(WeightedRoundRobinName, buildWRR) }

// wrr precomputes one period of nginx's smooth weighted round robin at
// build time, so a pick is one atomic add and an index: no lock, no
// per-pick O(n) walk.
type wrr struct {
	eps   []*EndpointState
	sched []int32
	next  atomic.Uint64
}

var _ Picker = (*wrr)(nil)

// Bounds on the precomputed period: its length is the sum of the
// (reduced) integer weights, and building it costs length × endpoints.
const (
	wrrMaxPeriod = 1 << 16
	wrrMaxWork   = 1 << 24
)

func buildWRR(b BuildInfo) Picker {
	p := &wrr{eps: b.Endpoints}
	if allEqual(b.Weights) {
		p.sched = make([]int32, len(b.Endpoints))
		for i := range p.sched {
			p.sched[i] = int32(i)
		}
	} else {
		p.sched = smoothSchedule(integerWeights(b.Weights))
	}
	p.next.Store(uint64(b.Rand.IntN(len(p.sched))))
	return p
}

func (p *wrr) Pick(PickInfo) (*EndpointState, error) {
	i := p.next.Add(1) - 1
	return p.eps[p.sched[i%uint64(len(p.sched))]], nil
}

// integerWeights turns effective weights (configured weight × a ramp in
// sixteenths) into small integers with the same ratios, scaling down (with
// rounding, each at least 1) only if the period would be too long.
func integerWeights(w []float64) []int64 {
	iw := make([]int64, len(w))
	var g int64
	var sum float64
	for i, x := range w {
		iw[i] = int64(math.Round(x * rampSteps))
		if iw[i] < 1 {
			iw[i] = 1
		}
		g = gcd(g, iw[i])
	}
	for i := range iw {
		iw[i] /= g
		sum += float64(iw[i])
	}
	limit := float64(min(wrrMaxPeriod, max(wrrMaxWork/len(w), len(w))))
	if sum > limit {
		f := limit / sum
		for i := range iw {
			iw[i] = max(1, int64(math.Round(float64(iw[i])*f)))
		}
	}
	return iw
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// smoothSchedule runs nginx's smooth weighted round robin for one period:
// each step every endpoint's current value grows by its weight, the largest
// (first on ties) is chosen and loses the total.
func smoothSchedule(w []int64) []int32 {
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
