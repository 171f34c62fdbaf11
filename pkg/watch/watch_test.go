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

// fakeStream yields msgs, then err.
type fakeStream struct {
	msgs []int
	err  error
}

func (f *fakeStream) Recv() (int, error) {
	if len(f.msgs) == 0 {
		return 0, f.err
	}
	m := f.msgs[0]
	f.msgs = f.msgs[1:]
	return m, nil
}

func TestStreamAppliesUntilTheStreamFails(t *testing.T) {
	errEnded := errors.New("stream ended")
	errOpen := errors.New("unreachable")
	for _, tc := range []struct {
		name      string
		openErr   error
		msgs      []int
		want      error
		delivered int
	}{
		{"messages then end", nil, []int{1, 2, 3}, errEnded, 3},
		{"no messages", nil, nil, errEnded, 0},
		{"open fails", errOpen, nil, errOpen, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var streamCtx context.Context
			var got []int
			run := Stream(func(ctx context.Context) (Receiver[int], error) {
				streamCtx = ctx
				if tc.openErr != nil {
					return nil, tc.openErr
				}
				return &fakeStream{msgs: tc.msgs, err: errEnded}, nil
			}, func(m int) { got = append(got, m) })
			delivered := 0
			err := run(context.Background(), func() { delivered++ })
			if !errors.Is(err, tc.want) {
				t.Fatalf("run = %v, want %v", err, tc.want)
			}
			if delivered != tc.delivered || len(got) != len(tc.msgs) {
				t.Fatalf("delivered %d, applied %v; want %d and %v", delivered, got, tc.delivered, tc.msgs)
			}
			for i := range got {
				if got[i] != tc.msgs[i] {
					t.Fatalf("applied %v, want %v", got, tc.msgs)
				}
			}
			if streamCtx.Err() == nil {
				t.Fatal("the stream's context outlives the stream")
			}
		})
	}
}
