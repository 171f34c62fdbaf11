package watch

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// testFollower returns a follower with the given bounds and random
// source, logging into rec (nil: discard).
func testFollower(lo, hi time.Duration, rnd func() float64, rec *recorder) *follower {
	f := &follower{lo: lo, hi: hi, rand: rnd, now: time.Now, name: "test",
		log: slog.New(slog.DiscardHandler)}
	if rec != nil {
		f.log = slog.New(rec)
	}
	return f
}

// bounds returns the back-off bounds Follow should use for each of the
// given stream outcomes (true: the stream delivered before it ended).
func bounds(lo, hi time.Duration, delivered []bool) []time.Duration {
	var out []time.Duration
	b := lo
	for _, d := range delivered {
		if d {
			b = lo
		}
		out = append(out, b)
		b = min(2*b, hi)
	}
	return out
}

func TestFollowBackoff(t *testing.T) {
	const lo, hi = time.Millisecond, 8 * time.Millisecond
	errEnded := errors.New("stream ended")
	for _, tc := range []struct {
		name      string
		rand      func() float64
		delivered []bool // per stream; the last one's retry cancels
	}{
		{"low end, doubles to the cap", func() float64 { return 0 }, []bool{false, false, false, false, false, false}},
		{"high end, doubles to the cap", func() float64 { return 0.999999 }, []bool{false, false, false, false, false, false}},
		{"resets after a message", rand.New(rand.NewPCG(1, 2)).Float64, []bool{false, false, false, true, false, false, true, false}},
		{"a stream that only connects does not reset", rand.New(rand.NewPCG(3, 4)).Float64, []bool{false, false, false, false, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var waits []time.Duration
			calls := 0
			f := testFollower(lo, hi, tc.rand, nil)
			f.follow(ctx, func(_ context.Context, delivered func()) error {
				if tc.delivered[calls] {
					delivered()
					delivered() // a second message changes nothing
				}
				calls++
				return errEnded
			}, func(err error, wait time.Duration) {
				if !errors.Is(err, errEnded) {
					t.Errorf("retry got %v", err)
				}
				waits = append(waits, wait)
				if len(waits) == len(tc.delivered) {
					cancel()
				}
			})
			want := bounds(lo, hi, tc.delivered)
			if len(waits) != len(want) {
				t.Fatalf("waits %v, want %d of them", waits, len(want))
			}
			for i, b := range want {
				if waits[i] < b/2 || waits[i] > b {
					t.Fatalf("wait %d = %v, want within [%v, %v]; all waits %v", i, waits[i], b/2, b, waits)
				}
			}
		})
	}
}

func TestFollowStopsDuringTheWait(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f := testFollower(time.Hour, time.Hour, rand.Float64, nil)
		f.follow(ctx, func(context.Context, func()) error { return errors.New("down") },
			func(error, time.Duration) { cancel() })
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Follow did not return after cancel")
	}
}

// TestDefaultBackoffIsShort pins the bound that lets a watch see a
// restarted server within about a second.
func TestDefaultBackoffIsShort(t *testing.T) {
	if MaxBackoff > time.Second || MinBackoff <= 0 || MinBackoff > MaxBackoff {
		t.Fatalf("back-off %v..%v: a restarted server must be seen within 1s", MinBackoff, MaxBackoff)
	}
}

// TestJitterSpreadsWatchers runs N watchers that all lose their server at
// once (every stream fails): their waits stay within the bounds and are not
// all equal, so they do not come back in lockstep.
func TestJitterSpreadsWatchers(t *testing.T) {
	const n, rounds = 8, 3
	waits := make([][]time.Duration, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			Follow(ctx, func(context.Context, func()) error { return errors.New("registry restarting") },
				func(_ error, wait time.Duration) {
					if waits[i] = append(waits[i], wait); len(waits[i]) == rounds {
						cancel()
					}
				}, WithLogger(slog.New(slog.DiscardHandler), "jitter"))
		}()
	}
	wg.Wait()
	want := bounds(MinBackoff, MaxBackoff, make([]bool, rounds))
	for r, b := range want {
		distinct := map[time.Duration]bool{}
		for i := range n {
			w := waits[i][r]
			if w < b/2 || w > b {
				t.Fatalf("watcher %d wait %d = %v, want within [%v, %v]", i, r, w, b/2, b)
			}
			distinct[w] = true
		}
		if len(distinct) < 2 {
			t.Fatalf("round %d: all %d watchers wait %v: no jitter", r, n, waits[0][r])
		}
	}
}

// TestJitterIsDeterministicWithASeed shows the spread with seeded sources,
// one per watcher, as separate processes would have.
func TestJitterIsDeterministicWithASeed(t *testing.T) {
	const lo = 100 * time.Millisecond
	seen := map[time.Duration]int{}
	for seed := range uint64(8) {
		f := testFollower(lo, time.Second, rand.New(rand.NewPCG(seed, seed)).Float64, nil)
		f.backoff = lo
		w := f.nextWait()
		if w < lo/2 || w > lo {
			t.Fatalf("seed %d: first wait %v outside [%v, %v]", seed, w, lo/2, lo)
		}
		seen[w]++
	}
	if len(seen) < 6 {
		t.Fatalf("8 seeded watchers share only %d distinct first waits: %v", len(seen), seen)
	}
}

// record is one captured log line.
type record struct {
	level slog.Level
	msg   string
	attrs map[string]any
}

// recorder is a slog.Handler that keeps every record.
type recorder struct {
	mu   sync.Mutex
	recs []record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	attrs := map[string]any{}
	rec.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.Any(); return true })
	r.mu.Lock()
	r.recs = append(r.recs, record{rec.Level, rec.Message, attrs})
	r.mu.Unlock()
	return nil
}

func TestFollowLogsStaleAndResumed(t *testing.T) {
	errLost := errors.New("stream lost")
	type step struct {
		deliver bool          // the stream delivers before it ends
		advance time.Duration // the clock moves this much while it runs
	}
	for _, tc := range []struct {
		name  string
		steps []step
		want  []record // level, message and the attributes checked
	}{
		{
			name:  "lost, two failed reconnects, resumed",
			steps: []step{{true, 0}, {false, 300 * time.Millisecond}, {false, 400 * time.Millisecond}, {true, 500 * time.Millisecond}},
			want: []record{
				{slog.LevelWarn, "watch stale", map[string]any{"watch": "registry", "err": errLost}},
				{slog.LevelDebug, "watch still stale", map[string]any{"watch": "registry", "stale_for": 300 * time.Millisecond}},
				{slog.LevelDebug, "watch still stale", map[string]any{"watch": "registry", "stale_for": 700 * time.Millisecond}},
				{slog.LevelInfo, "watch resumed", map[string]any{"watch": "registry", "stale_for": 1200 * time.Millisecond, "reconnects": int64(3)}},
				{slog.LevelWarn, "watch stale", map[string]any{"watch": "registry"}},
			},
		},
		{
			name:  "first stream fails, then delivers",
			steps: []step{{false, 0}, {true, 250 * time.Millisecond}},
			want: []record{
				{slog.LevelWarn, "watch stale", map[string]any{"watch": "registry", "err": errLost}},
				{slog.LevelInfo, "watch resumed", map[string]any{"watch": "registry", "stale_for": 250 * time.Millisecond, "reconnects": int64(1)}},
				{slog.LevelWarn, "watch stale", map[string]any{"watch": "registry"}},
			},
		},
		{
			name:  "healthy stream: nothing until it is lost",
			steps: []step{{true, time.Hour}},
			want:  []record{{slog.LevelWarn, "watch stale", map[string]any{"watch": "registry"}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			f := testFollower(time.Microsecond, time.Microsecond, rand.Float64, rec)
			f.now = func() time.Time { return clock }
			f.name = "registry"
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			i := 0
			f.follow(ctx, func(_ context.Context, delivered func()) error {
				s := tc.steps[i]
				clock = clock.Add(s.advance)
				if s.deliver {
					delivered()
				}
				return errLost
			}, func(error, time.Duration) {
				if i++; i == len(tc.steps) {
					cancel()
				}
			})
			if len(rec.recs) != len(tc.want) {
				t.Fatalf("logged %+v, want %d lines", rec.recs, len(tc.want))
			}
			for j, w := range tc.want {
				got := rec.recs[j]
				if got.level != w.level || got.msg != w.msg {
					t.Fatalf("line %d = %v %q, want %v %q (all: %+v)", j, got.level, got.msg, w.level, w.msg, rec.recs)
				}
				for k, v := range w.attrs {
					if gv := got.attrs[k]; gv != v {
						t.Fatalf("line %d %q: %s = %v, want %v", j, got.msg, k, gv, v)
					}
				}
			}
		})
	}
}

// healthServer is a grpc.health.v1 server whose Watch behaves as the test
// scripts it: each call takes the next behaviour.
type healthServer struct {
	healthpb.UnimplementedHealthServer
	mu     sync.Mutex
	script []string // "drop": fail before any message; "once": one message, then fail; "serve": messages until cancelled
	opened chan string
}

func (h *healthServer) Watch(_ *healthpb.HealthCheckRequest, st healthpb.Health_WatchServer) error {
	h.mu.Lock()
	mode := "serve"
	if len(h.script) > 0 {
		mode, h.script = h.script[0], h.script[1:]
	}
	h.mu.Unlock()
	h.opened <- mode
	if mode == "drop" {
		return status.Error(codes.Unavailable, "dropped before the first message")
	}
	if err := st.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}); err != nil {
		return err
	}
	if mode == "once" {
		return status.Error(codes.Unavailable, "dropped after a message")
	}
	<-st.Context().Done()
	return nil
}

func serve(t *testing.T, addr string, srv healthpb.HealthServer) (string, *grpc.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, srv)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return ln.Addr().String(), s
}

func watchHealth(c healthpb.HealthClient, got func()) func(ctx context.Context, delivered func()) error {
	return Stream(func(ctx context.Context) (Receiver[*healthpb.HealthCheckResponse], error) {
		return c.Watch(ctx, &healthpb.HealthCheckRequest{})
	}, func(*healthpb.HealthCheckResponse) { got() })
}

// TestBackoffResetsOnceAStreamDelivers runs against a real gRPC server
// that accepts streams and drops them before their first message, then
// serves one message and drops, then serves: the drops before a message
// back off, the message resets the back-off so the reconnect after it is
// quick.
func TestBackoffResetsOnceAStreamDelivers(t *testing.T) {
	const lo, hi = 20 * time.Millisecond, time.Second
	h := &healthServer{script: []string{"drop", "drop", "drop", "drop", "once", "serve"}, opened: make(chan string, 16)}
	addr, _ := serve(t, "127.0.0.1:0", h)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), DialOption())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var waits []time.Duration
	messages := 0
	f := testFollower(lo, hi, rand.New(rand.NewPCG(7, 7)).Float64, nil)
	f.follow(ctx, watchHealth(healthpb.NewHealthClient(cc), func() {
		if messages++; messages == 2 { // the "serve" stream delivered
			cancel()
		}
	}), func(_ error, wait time.Duration) { waits = append(waits, wait) })

	want := bounds(lo, hi, []bool{false, false, false, false, true})
	if len(waits) != len(want) {
		t.Fatalf("waits %v, want %d", waits, len(want))
	}
	for i, b := range want {
		if waits[i] < b/2 || waits[i] > b {
			t.Fatalf("wait %d = %v, want within [%v, %v]; all %v", i, waits[i], b/2, b, waits)
		}
	}
	if last := waits[len(waits)-1]; last > lo {
		t.Fatalf("reconnect after a delivered stream waited %v, want at most %v", last, lo)
	}
}

// TestFollowSeesARestartedServerQuickly stops a real gRPC server for 6.5 s,
// then restarts it on the same address: the watch (default back-off,
// connection dialed with DialOption) is back within 2×MaxBackoff of the
// restart (a connection back-off and a watch back-off, each at most about
// MaxBackoff), with 1.5 s of slack for a busy machine. With a 5 s cap and
// gRPC's default connection back-off it took 4.8 s: the retries after
// 6.5 s of failures come at 11.3 s.
func TestFollowSeesARestartedServerQuickly(t *testing.T) {
	if testing.Short() {
		t.Skip("keeps a server down for 6.5s")
	}
	t.Parallel()
	addr, srv := serve(t, "127.0.0.1:0", health.NewServer())
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), DialOption())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	got := make(chan time.Time, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Follow(ctx, watchHealth(healthpb.NewHealthClient(cc), func() { got <- time.Now() }), nil,
			WithLogger(slog.New(slog.DiscardHandler), "health"))
	}()
	defer func() { cancel(); <-done }()
	<-got
	srv.Stop()
	time.Sleep(6500 * time.Millisecond) // the outage itself: nothing to poll for
	_, srv2 := serve(t, addr, health.NewServer())
	back := time.Now()
	defer srv2.Stop()
	select {
	case at := <-got:
		if d, limit := at.Sub(back), 2*MaxBackoff+1500*time.Millisecond; d > limit {
			t.Fatalf("watch resumed %v after the server came back, want within %v", d, limit)
		} else {
			t.Logf("watch resumed %v after the server came back", d)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("watch never resumed")
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
