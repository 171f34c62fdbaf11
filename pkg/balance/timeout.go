package balance

import "time"

// Timeout reports that a request still outstanding on the endpoint has
// waited longer than its per-try timeout. A hung endpoint answers nothing,
// so a Done would come too late (when the caller finally gives up) or
// never, and its failures would not eject it; Timeout counts now.
//
// It counts as the request's one outcome, exactly as Done(Failure, waited)
// would: a failure for outlier detection (consecutive failures) and the
// breaker, and a latency sample that, as for every failure, never lowers
// the estimate. It does not release the request: end it later with
// Done(Ignore), whatever happens to it then, so that nothing is counted
// twice. Call Timeout at most once per Selection; on a zero Selection it
// does nothing.
func (sel Selection) Timeout(waited time.Duration) {
	es := sel.Endpoint
	if es == nil {
		return
	}
	es.set.report(es, Failure, waited, sel.probe)
}
