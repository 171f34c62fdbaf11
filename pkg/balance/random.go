package balance

import "math/bits"

// RandomName is the name of the weighted random policy.
const RandomName = "random"

func init() { Register(RandomName, buildRandom) }

// random picks in O(1) with Vose's alias method when weights differ, and
// uniformly when they are equal.
type random struct {
	eps   []*EndpointState
	rand  *Rand
	prob  []uint32 // threshold in 2^32 units: keep column i if below
	alias []int32
}

var _ Picker = (*random)(nil)

func buildRandom(b BuildInfo) Picker {
	p := &random{eps: b.Endpoints, rand: b.Rand}
	if !allEqual(b.Weights) {
		p.prob, p.alias = aliasTable(b.Weights)
	}
	return p
}

func (p *random) Pick(PickInfo) (*EndpointState, error) { return p.pick(), nil }

func (p *random) pick() *EndpointState {
	r := p.rand.Uint64()
	n := uint64(len(p.eps))
	i, _ := bits.Mul64(r, n)
	if p.prob != nil && uint32(r) >= p.prob[i] {
		// The low 32 bits are nearly independent of the high product.
		i = uint64(p.alias[i])
	}
	return p.eps[i]
}

func allEqual(w []float64) bool {
	for _, x := range w[1:] {
		if x != w[0] {
			return false
		}
	}
	return true
}

// aliasTable builds Vose's alias tables for weights w (all > 0).
func aliasTable(w []float64) ([]uint32, []int32) {
	n := len(w)
	var sum float64
	for _, x := range w {
		sum += x
	}
	scaled := make([]float64, n)
	small := make([]int32, 0, n)
	large := make([]int32, 0, n)
	for i, x := range w {
		scaled[i] = x * float64(n) / sum
		if scaled[i] < 1 {
			small = append(small, int32(i))
		} else {
			large = append(large, int32(i))
		}
	}
	prob := make([]uint32, n)
	alias := make([]int32, n)
	for len(small) > 0 && len(large) > 0 {
		s, l := small[len(small)-1], large[len(large)-1]
		small = small[:len(small)-1]
		prob[s] = toThreshold(scaled[s])
		alias[s] = l
		scaled[l] -= 1 - scaled[s]
		if scaled[l] < 1 {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	for _, i := range large {
		prob[i], alias[i] = toThreshold(1), i
	}
	for _, i := range small { // rounding leftovers
		prob[i], alias[i] = toThreshold(1), i
	}
	return prob, alias
}

func toThreshold(p float64) uint32 {
	if p >= 1 {
		return ^uint32(0)
	}
	return uint32(p * (1 << 32))
}
