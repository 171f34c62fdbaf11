package balance

import "sync/atomic"

// LeastConnName is the name of the least-connections policy: the endpoint
// with the fewest outstanding requests per unit of weight.
const LeastConnName = "least_conn"

func init() { Register(LeastConnName, buildLeastConn) }

// DefaultLeastConnChoices is how many endpoints least_conn compares per
// pick when Config.LeastConnChoices is 0.
const DefaultLeastConnChoices = 8

// leastConn compares (outstanding+1)/weight over a window of endpoints
// starting at a rotating position: ties go round robin. When the window
// covers every endpoint the choice is exact; on large sets a window of k
// keeps a pick O(k) and still balances well (the power of k choices).
//
// A random start (no shared counter for parallel pickers to write) was
// measured and lost: back-to-back picks from a rotating start reuse seven
// of the eight endpoints' cache lines, random windows miss on all eight,
// and on two cores the shared counter cost less than those misses.
type leastConn struct {
	eps      []*EndpointState
	inv      []float64 // 1/weight; nil when all weights are equal
	window   int
	panic    bool
	halfOpen int32
	next     atomic.Uint64
}

var _ Picker = (*leastConn)(nil)

func buildLeastConn(b BuildInfo) Picker {
	p := &leastConn{
		eps:      b.Endpoints,
		window:   b.Config.LeastConnChoices,
		panic:    b.Panic,
		halfOpen: int32(b.Config.Breaker.HalfOpenRequests),
	}
	if p.window == 0 {
		p.window = DefaultLeastConnChoices
	}
	p.window = min(p.window, len(p.eps))
	if !allEqual(b.Weights) {
		p.inv = make([]float64, len(b.Weights))
		for i, w := range b.Weights {
			p.inv[i] = 1 / w
		}
	}
	p.next.Store(uint64(b.Rand.IntN(len(p.eps))))
	return p
}

func (p *leastConn) Pick(PickInfo) (*EndpointState, error) { return p.pick(), nil }

func (p *leastConn) pick() *EndpointState {
	eps, window, check, halfOpen := p.eps, p.window, !p.panic, p.halfOpen
	n := len(eps)
	i := int(p.next.Add(1) % uint64(n))
	best := -1
	if p.inv == nil {
		// Equal weights: compare counts as integers.
		var bs int64
		for k := 0; k < window; k, i = k+1, i+1 {
			if i == n {
				i = 0
			}
			es := eps[i]
			if check && es.status.Load() != 0 && !es.pickable(halfOpen) {
				continue
			}
			if s := es.outstanding.Load(); best < 0 || s < bs {
				best, bs = i, s
			}
		}
	} else {
		inv := p.inv[:n]
		var bs float64
		for k := 0; k < window; k, i = k+1, i+1 {
			if i == n {
				i = 0
			}
			es := eps[i]
			if check && es.status.Load() != 0 && !es.pickable(halfOpen) {
				continue
			}
			if s := float64(es.outstanding.Load()+1) * inv[i]; best < 0 || s < bs {
				best, bs = i, s
			}
		}
	}
	if best < 0 { // all in the window are busy probing: let Set.Pick retry
		return eps[i%n]
	}
	return eps[best]
}
