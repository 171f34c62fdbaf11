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

// Receiver is the receiving side of a gRPC server stream, as generated
// clients return it.
type Receiver[T any] interface {
	Recv() (T, error)
}

// Stream makes a run function for Follow: it opens a stream with open,
// hands every message to apply (after marking it delivered) and returns
// the error that ends the stream. The stream's context is cancelled when
// it ends, so the RPC never outlives it.
func Stream[T any](open func(ctx context.Context) (Receiver[T], error), apply func(T)) func(ctx context.Context, delivered func()) error {
	return func(ctx context.Context, delivered func()) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		st, err := open(ctx)
		if err != nil {
			return err
		}
		for {
			m, err := st.Recv()
			if err != nil {
				return err
			}
			delivered()
			apply(m)
		}
	}
}
