// Package watch follows long-lived streams, such as the registry's Watch or
// the balancer's WatchEndpoints: when a stream ends it is opened again,
// after a back-off that doubles while streams fail without delivering
// anything and starts over once one does.
package watch

import (
	"context"
	"time"
)

// Back-off bounds between two streams.
const (
	MinBackoff = 100 * time.Millisecond
	MaxBackoff = 5 * time.Second
)

// Follow runs one stream after another until ctx ends. run opens a stream
// and reads it until it fails, calling delivered after each message it
// applies; retry (if not nil) hears why a stream ended and how long Follow
// waits before the next, so the caller can log it or mark its state stale.
func Follow(ctx context.Context, run func(ctx context.Context, delivered func()) error, retry func(err error, wait time.Duration)) {
	follow(ctx, MinBackoff, MaxBackoff, run, retry)
}

func follow(ctx context.Context, lo, hi time.Duration, run func(ctx context.Context, delivered func()) error, retry func(err error, wait time.Duration)) {
	backoff := lo
	for {
		err := run(ctx, func() { backoff = lo })
		if ctx.Err() != nil {
			return
		}
		if retry != nil {
			retry(err, backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, hi)
	}
}
