package balance

import "time"

// Observe reports how a request to the endpoint with the given ID went when
// the request was not picked through this Set — a data plane's load report
// reaching the control plane. It feeds the latency estimate, outlier
// detection and the breaker as Selection.Done does, but leaves the
// outstanding count alone. It reports whether the Set has that endpoint.
func (s *Set) Observe(id string, o Outcome, latency time.Duration) bool {
	s.mu.Lock()
	es := s.byID[id]
	s.mu.Unlock()
	if es == nil {
		return false
	}
	if o != Ignore {
		s.report(es, o, latency, false)
	}
	return true
}
