package balance

import (
	"testing"
	"time"
)

// TestTimeoutEjectsWhileOutstanding: requests that hang on an endpoint are
// reported with Timeout while still outstanding; after
// Outlier.ConsecutiveFailures of them the endpoint is ejected, before any
// of them is released, and releasing them later with Done(Ignore) counts
// nothing again.
func TestTimeoutEjectsWhileOutstanding(t *testing.T) {
	for _, tc := range []struct {
		name     string
		timeouts int
		ejected  bool
	}{
		{"below the threshold", 2, false},
		{"at the threshold", 3, true},
		{"above the threshold", 4, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Outlier.ConsecutiveFailures = 3
			s, _ := newSet(t, cfg, endpoints(2))
			pickCounts(t, s, 2) // one quick answer each: a latency sample
			var hung []Selection
			for len(hung) < tc.timeouts {
				if sel := mustPick(t, s, PickInfo{}); sel.Endpoint.ID() == "e00" {
					hung = append(hung, sel)
				} else {
					sel.Done(Success, time.Millisecond)
				}
			}
			e := hung[0].Endpoint
			for _, sel := range hung {
				sel.Timeout(400 * time.Millisecond)
			}
			if e.Ejected() != tc.ejected {
				t.Fatalf("after %d timeouts: ejected %v, want %v", tc.timeouts, e.Ejected(), tc.ejected)
			}
			if got := e.Outstanding(); got != int64(tc.timeouts) {
				t.Fatalf("outstanding %d, want %d: Timeout must not release", got, tc.timeouts)
			}
			if e.Latency() < 400*time.Millisecond {
				t.Fatalf("latency estimate %v, want the time waited (a failure never lowers it)", e.Latency())
			}
			for _, sel := range hung {
				sel.Done(Ignore, 0)
			}
			if e.Outstanding() != 0 || e.Failures() != uint64(tc.timeouts) || e.Requests() != uint64(tc.timeouts)+1 {
				t.Fatalf("after release: outstanding %d, failures %d, requests %d; want 0, %d, %d",
					e.Outstanding(), e.Failures(), e.Requests(), tc.timeouts, tc.timeouts+1)
			}
			if tc.ejected {
				for range 10 {
					sel := mustPick(t, s, PickInfo{})
					if sel.Endpoint == e {
						t.Fatal("an ejected endpoint was picked")
					}
					sel.Done(Success, time.Millisecond)
				}
			}
		})
	}
}

// TestTimeoutOpensBreaker: a timeout counts for the breaker like a failure.
func TestTimeoutOpensBreaker(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Outlier.ConsecutiveFailures = 0
	cfg.Breaker.FailureThreshold = 2
	s, _ := newSet(t, cfg, endpoints(1))
	a, b := mustPick(t, s, PickInfo{}), mustPick(t, s, PickInfo{})
	a.Timeout(time.Second)
	b.Timeout(time.Second)
	if got := a.Endpoint.Breaker(); got != BreakerOpen {
		t.Fatalf("breaker %v after two timeouts, want open", got)
	}
	a.Done(Ignore, 0)
	b.Done(Ignore, 0)
	var zero Selection
	zero.Timeout(time.Second) // does nothing
}
