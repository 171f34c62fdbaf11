package balance

import "sync/atomic"

// RoundRobinName is the name of the round-robin policy: endpoints in turn,
// weights ignored.
const RoundRobinName = "round_robin"

func init() { Register(RoundRobinName, buildRoundRobin) }

type roundRobin struct {
	eps  []*EndpointState
	next atomic.Uint64
}

var _ Picker = (*roundRobin)(nil)

func buildRoundRobin(b BuildInfo) Picker {
	p := &roundRobin{eps: b.Endpoints}
	// Start at a random place so that many clients rebuilt at once do not
	// all send their first request to the same endpoint.
	p.next.Store(uint64(b.Rand.IntN(len(b.Endpoints))))
	return p
}

func (p *roundRobin) Pick(PickInfo) (*EndpointState, error) { return p.pick(), nil }

func (p *roundRobin) pick() *EndpointState {
	i := p.next.Add(1) - 1
	return p.eps[i%uint64(len(p.eps))]
}
