package balance

import (
	"cmp"
	"math"
	"slices"
	"sync/atomic"
)

// WeightedRoundRobinName is the name of the smooth weighted round-robin
// policy (the interleaving nginx uses: weights 5,1,1 give a a b a c a a).
const WeightedRoundRobinName = "weighted_round_robin"

func init() { Register(WeightedRoundRobinName, buildWRR) }

// wrr precomputes one period of nginx's smooth weighted round robin at
// build time, so a pick is one atomic add and an index: no lock, no
// per-pick O(n) walk. When all weights are equal the period is the
// endpoints in order and no schedule is stored.
type wrr struct {
	eps   []*EndpointState
	sched []int32 // nil: endpoints in order
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
	period := len(b.Endpoints)
	if !allEqual(b.Weights) {
		p.sched = smoothSchedule(integerWeights(b.Weights))
		period = len(p.sched)
	}
	p.next.Store(uint64(b.Rand.IntN(period)))
	return p
}

func (p *wrr) Pick(PickInfo) (*EndpointState, error) {
	return p.pick(), nil
}

func (p *wrr) pick() *EndpointState {
	i := p.next.Add(1) - 1
	if p.sched == nil {
		return p.eps[i%uint64(len(p.eps))]
	}
	return p.eps[p.sched[i%uint64(len(p.sched))]]
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
//
// Run as written that costs period × endpoints. Endpoints of equal weight
// are interchangeable except for the tie-break, so they are run as one
// class: after s steps an endpoint chosen c times holds s×w − total×c, so
// within a class the largest is the first of those chosen least, and the
// class's members take their turns in index order. A step then compares one
// candidate per distinct weight: the cost is n log n to group plus
// period × classes (classes ≤ √(2 × period), and 1–16 per configured weight
// in practice), with three allocations whatever n is.
func smoothSchedule(w []int64) []int32 {
	n := len(w)
	var total int64
	for _, x := range w {
		total += x
	}
	// Members of each class in index order, classes one after another.
	members := make([]int32, n)
	for i := range members {
		members[i] = int32(i)
	}
	slices.SortStableFunc(members, func(a, b int32) int { return cmp.Compare(w[a], w[b]) })
	k := 0
	for i := range members {
		if i == 0 || w[members[i]] != w[members[i-1]] {
			k++
		}
	}
	type class struct {
		w      int64
		start  int32 // into members
		size   int32
		chosen int64 // times the class was chosen
		next   int32 // member whose turn it is (index into the class)
		lost   int64 // total × times that member has been chosen
	}
	classes := make([]class, 0, k)
	for i := range members {
		if i == 0 || w[members[i]] != w[members[i-1]] {
			classes = append(classes, class{w: w[members[i]], start: int32(i)})
		}
		classes[len(classes)-1].size++
	}
	sched := make([]int32, total)
	for s := range sched {
		step := int64(s + 1)
		best, bestV, bestI := -1, int64(0), int32(0)
		for c := range classes {
			cl := &classes[c]
			v := step*cl.w - cl.lost
			i := members[cl.start+cl.next]
			if best < 0 || v > bestV || v == bestV && i < bestI {
				best, bestV, bestI = c, v, i
			}
		}
		cl := &classes[best]
		sched[s] = bestI
		cl.chosen++
		if cl.next++; cl.next == cl.size {
			cl.next = 0
		}
		// The member now up has been chosen chosen/size times.
		cl.lost = total * (cl.chosen / int64(cl.size))
	}
	return sched
}
