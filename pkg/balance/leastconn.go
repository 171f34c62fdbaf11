package balance

import "sync/atomic"

// LeastConnName is the name of the least-connections policy: the endpoint
// with the fewest outstanding requests per unit of weight.
const LeastConnName = "least_conn"

func init() { Register(LeastConnName, buildLeastConn) }

// leastConn compares (outstanding+1)/weight. With Config.LeastConnChoices
// 0 it scans every endpoint from a rotating start (exact; ties go round
// robin); with k >= 2 it compares k random endpoints (O(k)).
type leastConn struct {
	eps      []*EndpointState
	inv      []float64 // 1/weight; nil when all weights are equal
	choices  int
	panic    bool
	halfOpen int32
	rand     *Rand
	next     atomic.Uint64
}

var _ Picker = (*leastConn)(nil)

func buildLeastConn(b BuildInfo) Picker {
	p := &leastConn{
		eps:      b.Endpoints,
		choices:  b.Config.LeastConnChoices,
		panic:    b.Panic,
		halfOpen: int32(b.Config.Breaker.HalfOpenRequests),
		rand:     b.Rand,
	}
	if p.choices >= len(p.eps) {
		p.choices = 0
	}
	if !allEqual(b.Weights) {
		p.inv = make([]float64, len(b.Weights))
		for i, w := range b.Weights {
			p.inv[i] = 1 / w
		}
	}
	p.next.Store(uint64(b.Rand.IntN(len(p.eps))))
	return p
}

func (p *leastConn) score(i int) float64 {
	es := p.eps[i]
	if !p.panic && !es.pickable(p.halfOpen) {
		return maxScore
	}
	s := float64(es.outstanding.Load() + 1)
	if p.inv != nil {
		s *= p.inv[i]
	}
	return s
}

const maxScore = 1e300

func (p *leastConn) Pick(PickInfo) (*EndpointState, error) {
	n := len(p.eps)
	if p.choices > 0 {
		best, bs := -1, 0.0
		for c := 0; c < p.choices; c++ {
			i := p.rand.IntN(n)
			if s := p.score(i); best < 0 || s < bs {
				best, bs = i, s
			}
		}
		return p.eps[best], nil
	}
	start := int(p.next.Add(1) % uint64(n))
	best, bs := start, p.score(start)
	for k := 1; k < n; k++ {
		i := start + k
		if i >= n {
			i -= n
		}
		if s := p.score(i); s < bs {
			best, bs = i, s
		}
	}
	return p.eps[best], nil
}
