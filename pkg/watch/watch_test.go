package watch

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestFollowBacksOffAndResets(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var waits []time.Duration
	calls := 0
	errEnded := errors.New("stream ended")
	const lo, hi = time.Millisecond, 8 * time.Millisecond
	follow(ctx, lo, hi, func(_ context.Context, delivered func()) error {
		calls++
		if calls == 4 { // the fourth stream delivers, then fails
			delivered()
		}
		if calls == 6 {
			cancel()
		}
		return errEnded
	}, func(err error, wait time.Duration) {
		if !errors.Is(err, errEnded) {
			t.Errorf("retry got %v", err)
		}
		waits = append(waits, wait)
	})
	want := []time.Duration{lo, 2 * lo, 4 * lo, lo, 2 * lo}
	if len(waits) != len(want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("waits %v, want %v", waits, want)
		}
	}
}

func TestFollowCapsBackoffAndStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var last time.Duration
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		follow(ctx, time.Millisecond, 8*time.Millisecond, func(context.Context, func()) error { return errors.New("down") },
			func(_ error, wait time.Duration) {
				last = wait
				if n++; n == 8 {
					cancel() // Follow must return during the wait
				}
			})
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Follow did not return after cancel")
	}
	if last != 8*time.Millisecond {
		t.Fatalf("eighth wait %v, want the cap 8ms", last)
	}
}
