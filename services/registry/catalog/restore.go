package catalog

import (
	"context"
	"sync"
	"time"
)

// Observer is told how a store's remote backend (Consul, etcd) fares: when
// it is lost and when it is back, and what each restore after a loss put
// back. The registry's metrics implement it. Calls come from the store's
// background loops; they must be cheap and must not block.
type Observer interface {
	// BackendUp reports that the backend became reachable (true) or was
	// lost (false). It is called on changes only.
	BackendUp(up bool)
	// Restored reports a finished restore.
	Restored(Restore)
}

// Restore is what one restore after a backend loss did.
type Restore struct {
	// Took is the time from the backend's return (the first restore
	// attempt) to the end of the restore.
	Took time.Duration
	// Instances and Records count what was put back.
	Instances, Records int
	// Failed counts instances and records the backend refused. They stay
	// in what the store restores, and the next restore tries them again.
	Failed int
}

// NopObserver ignores every report.
type NopObserver struct{}

// BackendUp does nothing.
func (NopObserver) BackendUp(bool) {}

// Restored does nothing.
func (NopObserver) Restored(Restore) {}

// Parallel calls fn for each item with at most n calls in flight. The
// first error cancels the context of the calls still running, stops
// handing out items and is returned; items never handed out are not
// called. Parallel returns when every call has returned.
func Parallel[T any](ctx context.Context, n int, items []T, fn func(context.Context, T) error) error {
	if len(items) == 0 {
		return ctx.Err()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	work := make(chan T)
	for range max(1, min(n, len(items))) {
		wg.Go(func() {
			for it := range work {
				if err := fn(ctx, it); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		})
	}
feed:
	for _, it := range items {
		select {
		case work <- it:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}
