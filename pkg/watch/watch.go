// Package watch follows long-lived streams, such as the registry's Watch or
// the balancer's WatchEndpoints: when a stream ends it is opened again
// after a short, jittered back-off, and the watch says in the log when it
// goes stale and when it resumes.
//
// The back-off starts at MinBackoff and doubles while streams fail without
// delivering anything, up to MaxBackoff; each wait is drawn from [d/2, d]
// ("equal jitter"), so watchers that lost the same server do not come back
// in lockstep. A stream that delivers a message is established: the next
// failure starts over at MinBackoff. A stream that is accepted and then
// dropped before its first message does not count, so a server that
// accepts and drops is not hammered.
//
// gRPC connections have a reconnect back-off of their own (by default up to
// 120 s), during which a new stream fails at once without dialing. Dial the
// connection a watch uses with DialOption so that the connection retries
// on the same short scale as the watch.
package watch

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Back-off bounds between two streams. MaxBackoff bounds how long a watch
// can take to notice that its server is back.
const (
	MinBackoff = 100 * time.Millisecond
	MaxBackoff = time.Second
)

// DialOption returns the gRPC dial option for connections that carry a
// watch: the connection's reconnect back-off follows the watch's (from
// MinBackoff up to MaxBackoff, ±20 % jitter) instead of gRPC's default,
// which grows to 120 s and so would keep a restarted server unseen long
// after it is back. A connection attempt still gets 20 s to complete.
func DialOption() grpc.DialOption {
	return grpc.WithConnectParams(grpc.ConnectParams{
		Backoff: backoff.Config{
			BaseDelay:  MinBackoff,
			Multiplier: 1.6,
			Jitter:     0.2,
			MaxDelay:   MaxBackoff,
		},
		MinConnectTimeout: 20 * time.Second,
	})
}

// Option configures Follow.
type Option func(*follower)

// WithLogger names the watch and logs through log: a WARN "watch stale"
// when its stream is lost (or the first one cannot be opened) and an INFO
// "watch resumed" with how long it was stale once a stream delivers again.
// Further failed attempts in between are logged at DEBUG. Without it,
// Follow logs through slog.Default() under the name "watch".
func WithLogger(log *slog.Logger, name string) Option {
	return func(f *follower) {
		if log != nil {
			f.log = log
		}
		f.name = name
	}
}

// Follow runs one stream after another until ctx ends. run opens a stream
// and reads it until it fails, calling delivered (from run's goroutine)
// after each message it applies; retry (if not nil) hears why a stream
// ended and how long Follow waits before the next, so the caller can mark
// its state stale. Follow itself logs when the watch goes stale and when
// it resumes (see WithLogger).
func Follow(ctx context.Context, run func(ctx context.Context, delivered func()) error, retry func(err error, wait time.Duration), opts ...Option) {
	f := &follower{
		lo:   MinBackoff,
		hi:   MaxBackoff,
		rand: rand.Float64,
		now:  time.Now,
		log:  slog.Default(),
		name: "watch",
	}
	for _, o := range opts {
		o(f)
	}
	f.follow(ctx, run, retry)
}

// follower is one Follow call's state. It is used by one goroutine.
type follower struct {
	lo, hi time.Duration
	rand   func() float64 // in [0, 1)
	now    func() time.Time
	log    *slog.Logger
	name   string

	backoff    time.Duration // the bound of the next wait
	live       bool          // the current stream has delivered
	stale      bool          // "watch stale" was logged and no stream has delivered since
	staleSince time.Time
	reconnects int // streams opened since the watch went stale
}

func (f *follower) follow(ctx context.Context, run func(ctx context.Context, delivered func()) error, retry func(err error, wait time.Duration)) {
	f.backoff = f.lo
	for ctx.Err() == nil {
		f.live = false
		err := run(ctx, f.delivered)
		if ctx.Err() != nil {
			return
		}
		wait := f.nextWait()
		f.ended(err, wait)
		if retry != nil {
			retry(err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// nextWait returns the jittered wait before the next stream, drawn from
// [backoff/2, backoff], and doubles the bound up to hi.
func (f *follower) nextWait() time.Duration {
	half := f.backoff / 2
	wait := half + time.Duration(f.rand()*float64(f.backoff-half))
	f.backoff = min(2*f.backoff, f.hi)
	return wait
}

// delivered marks the current stream established: the back-off starts
// over, and a stale watch is logged as resumed.
func (f *follower) delivered() {
	if f.live {
		return
	}
	f.live = true
	f.backoff = f.lo
	if f.stale {
		f.stale = false
		f.reconnects++
		f.log.Info("watch resumed", "watch", f.name, "stale_for", f.now().Sub(f.staleSince).Round(time.Millisecond), "reconnects", f.reconnects)
	}
}

// ended logs a stream's end: WARN when the watch goes stale, DEBUG for
// each further failed attempt.
func (f *follower) ended(err error, wait time.Duration) {
	if !f.stale {
		f.stale, f.staleSince, f.reconnects = true, f.now(), 0
		f.log.Warn("watch stale", "watch", f.name, "err", err, "retry_in", wait.Round(time.Millisecond))
		return
	}
	f.reconnects++
	f.log.Debug("watch still stale", "watch", f.name, "err", err, "stale_for", f.now().Sub(f.staleSince).Round(time.Millisecond), "retry_in", wait.Round(time.Millisecond))
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
