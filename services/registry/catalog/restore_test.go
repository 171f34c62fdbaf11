package catalog

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParallel(t *testing.T) {
	errBoom := errors.New("boom")
	for _, tc := range []struct {
		name      string
		items     int
		n         int
		failAt    int  // item that fails (-1: none)
		cancelled bool // the parent context is cancelled first
		wantErr   error
		wantAll   bool // every item was called
	}{
		{name: "all, bounded", items: 100, n: 8, failAt: -1, wantAll: true},
		{name: "more workers than items", items: 3, n: 16, failAt: -1, wantAll: true},
		{name: "no items", items: 0, n: 8, failAt: -1, wantAll: true},
		{name: "zero bound means one", items: 10, n: 0, failAt: -1, wantAll: true},
		{name: "an error stops the rest", items: 1000, n: 4, failAt: 5, wantErr: errBoom},
		{name: "parent cancelled", items: 10, n: 4, failAt: -1, cancelled: true, wantErr: context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tc.cancelled {
				cancel()
			}
			items := make([]int, tc.items)
			for i := range items {
				items[i] = i
			}
			var inFlight, most, calls atomic.Int64
			var mu sync.Mutex
			seen := map[int]bool{}
			err := Parallel(ctx, tc.n, items, func(ctx context.Context, i int) error {
				cur := inFlight.Add(1)
				defer inFlight.Add(-1)
				for {
					m := most.Load()
					if cur <= m || most.CompareAndSwap(m, cur) {
						break
					}
				}
				calls.Add(1)
				mu.Lock()
				seen[i] = true
				mu.Unlock()
				if i == tc.failAt {
					return errBoom
				}
				select { // hold the slot a moment so calls overlap
				case <-ctx.Done():
					return nil
				case <-time.After(time.Millisecond):
				}
				return nil
			})
			if !errors.Is(err, tc.wantErr) || tc.wantErr == nil && err != nil {
				t.Fatalf("Parallel = %v, want %v", err, tc.wantErr)
			}
			if bound := int64(max(1, tc.n)); most.Load() > bound {
				t.Errorf("%d calls in flight, bound %d", most.Load(), bound)
			}
			if tc.wantAll && len(seen) != tc.items {
				t.Errorf("%d of %d items called", len(seen), tc.items)
			}
			if !tc.wantAll && calls.Load() == int64(tc.items) {
				t.Errorf("every item was called after the error")
			}
		})
	}
}
