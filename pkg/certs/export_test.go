package certs

import "time"

// SetCheckInterval sets how often r looks at its files, starting now; tests
// use 0 (at every use) to see a change without waiting a second.
func SetCheckInterval(r *Reloader, d time.Duration) {
	r.interval = d
	r.next.Store(int64(time.Since(r.epoch) + d))
}
