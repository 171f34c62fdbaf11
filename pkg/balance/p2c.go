package balance

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// P2CName is the name of the power-of-two-choices policy: two endpoints at
// random, the one with the lower latency × (outstanding+1) / weight wins.
const P2CName = "p2c"

func init() { Register(P2CName, buildP2C) }

// p2c compares two distinct random endpoints by peak-EWMA latency times
// outstanding requests (as Finagle, Linkerd and Envoy's least_request do).
// Latency estimates decay toward zero while an endpoint gets no traffic,
// so an avoided endpoint is tried again after a while.
type p2c struct {
	eps      []*EndpointState
	inv      []float64
	panic    bool
	halfOpen int32
	decay    float64
	rand     *Rand
	now      *atomic.Int64 // the set's coarse clock
}

var _ Picker = (*p2c)(nil)

func buildP2C(b BuildInfo) Picker {
	p := &p2c{
		eps:      b.Endpoints,
		panic:    b.Panic,
		halfOpen: int32(b.Config.Breaker.HalfOpenRequests),
		decay:    float64(b.Config.LatencyDecay),
		rand:     b.Rand,
		now:      b.now,
	}
	if !allEqual(b.Weights) {
		p.inv = make([]float64, len(b.Weights))
		for i, w := range b.Weights {
			p.inv[i] = 1 / w
		}
	}
	return p
}

// score is the candidate's cost divided by its weight, or maxScore when
// it cannot admit. Everything it reads is on the endpoint's pick line.
func (p *p2c) score(i int, now int64) float64 {
	es := p.eps[i]
	if !p.panic && !es.pickable(p.halfOpen) {
		return maxScore
	}
	s := es.cost(now, p.decay)
	if p.inv != nil {
		s *= p.inv[i]
	}
	return s
}

func (p *p2c) Pick(PickInfo) (*EndpointState, error) { return p.pick(), nil }

func (p *p2c) pick() *EndpointState {
	n := len(p.eps)
	if n == 1 {
		return p.eps[0]
	}
	// Two distinct indexes from one 64-bit draw: the high half of r×n, and
	// the low 32 bits scaled to n-1.
	r := p.rand.Uint64()
	hi, _ := bits.Mul64(r, uint64(n))
	i := int(hi)
	j := int((uint64(uint32(r)) * uint64(n-1)) >> 32)
	if j >= i {
		j++
	}
	var now int64
	if p.now != nil {
		now = p.now.Load()
	} else {
		now = time.Now().UnixNano()
	}
	// Load both candidates' pick lines before using either, so that at
	// scale their two cache misses are in flight together; only then
	// compare (score, for endpoints not plainly closed).
	a, b := p.eps[i], p.eps[j]
	sa, sb := a.status.Load(), b.status.Load()
	ea, eb := a.ewma.Load(), b.ewma.Load()
	oa, ob := a.outstanding.Load(), b.outstanding.Load()
	ta, tb := a.ewmaAt.Load(), b.ewmaAt.Load()
	if sa|sb != 0 {
		if p.score(j, now) < p.score(i, now) {
			return b
		}
		return a
	}
	ca, cb := costOf(ea, oa, ta, now, p.decay), costOf(eb, ob, tb, now, p.decay)
	if p.inv != nil {
		ca *= p.inv[i]
		cb *= p.inv[j]
	}
	if cb < ca {
		return b
	}
	return a
}

// maxScore ranks an endpoint that cannot admit a request below any other.
const maxScore = 1e300
