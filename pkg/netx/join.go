package netx

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ErrIdleTimeout is returned by Join when no byte moved in either direction
// for the configured idle timeout.
var ErrIdleTimeout = errors.New("netx: connection idle timeout")

// JoinOptions configure Join. The zero value copies until both sides are
// done, with no idle limit.
type JoinOptions struct {
	// IdleTimeout ends the join with ErrIdleTimeout when no byte has moved
	// in either direction for this long; the check is coarse, so the join
	// ends between one and one and a half timeouts after the last byte.
	// Zero means no limit.
	IdleTimeout time.Duration
	// Counters, if set, receives live byte counts while the join runs, for
	// metrics on long-lived connections. The kernel copy reports only when
	// it pauses, so Join wakes each direction every CountEvery (and every
	// IdleTimeout/2) to publish what it has moved.
	Counters *JoinCounters
	// CountEvery bounds how stale Counters may be. Zero means they are
	// brought up to date only at IdleTimeout/2 wakes and at the end.
	CountEvery time.Duration
}

// JoinCounters are the live byte counts of a Join. Read them with Load
// from any goroutine.
type JoinCounters struct {
	AToB, BToA atomic.Int64
}

// Join copies a to b and b to a until both directions are done, then
// closes both connections, and reports the bytes copied each way.
//
// When a side reaches end of stream, Join half-closes the other side's
// writing half (CloseWrite) and keeps copying the opposite direction, so a
// client that shuts down its sending side still gets the reply. A side
// that cannot half-close (it lacks CloseWrite) is closed outright instead,
// which ends the join. A read or write error in either direction closes
// both connections and is returned. Cancelling ctx closes both connections
// and returns ctx.Err().
//
// The copy uses io.Copy on the connections themselves (unwrapping this
// package's tracking and pooling wrappers), so two *net.TCPConn values
// are copied by the kernel with splice(2) and no user-space buffer.
//
// When IdleTimeout or CountEvery is set, Join owns both connections'
// deadlines: it clears them and sets read deadlines to wake the copy.
func Join(ctx context.Context, a, b net.Conn, opts JoinOptions) (aToB, bToA int64, err error) {
	j := &joiner{a: a, b: b, idle: opts.IdleTimeout}
	if j.idle > 0 {
		j.wake = max(j.idle/2, 1)
	}
	if opts.CountEvery > 0 && (j.wake == 0 || opts.CountEvery < j.wake) {
		j.wake = opts.CountEvery
	}
	if j.wake > 0 {
		a.SetDeadline(time.Time{})
		b.SetDeadline(time.Time{})
		j.touch(time.Now())
	}
	var countAB, countBA *atomic.Int64
	if c := opts.Counters; c != nil {
		countAB, countBA = &c.AToB, &c.BToA
	}
	stop := context.AfterFunc(ctx, func() { j.abort(ctx.Err()) })
	defer stop()

	ra, rb := Unwrap(a), Unwrap(b)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		bToA = j.pipe(ra, rb, countBA)
	}()
	aToB = j.pipe(rb, ra, countAB)
	wg.Wait()
	a.Close()
	b.Close()

	j.mu.Lock()
	defer j.mu.Unlock()
	return aToB, bToA, j.cause
}

type joiner struct {
	a, b net.Conn
	idle time.Duration
	wake time.Duration // read deadline period; zero for none
	last atomic.Int64  // unix nanoseconds of the last observed progress

	mu      sync.Mutex
	aborted bool
	cause   error
}

func (j *joiner) touch(t time.Time) { j.last.Store(t.UnixNano()) }

// abort records the first cause and closes both connections, which makes
// any copy still running return.
func (j *joiner) abort(cause error) {
	j.mu.Lock()
	if j.aborted {
		j.mu.Unlock()
		return
	}
	j.aborted = true
	j.cause = cause
	j.mu.Unlock()
	j.a.Close()
	j.b.Close()
}

func (j *joiner) isAborted() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.aborted
}

// pipe copies src to dst (both unwrapped), adding to count if it is not
// nil, and reports the bytes copied. Connections are closed only through
// abort and Join, which use the caller's values so trackers see the close.
func (j *joiner) pipe(dst, src net.Conn, count *atomic.Int64) int64 {
	var total int64
	for {
		if j.wake > 0 {
			// Each direction wakes periodically to publish its progress,
			// so a silent direction can tell whether the other one is busy
			// before declaring the connection idle.
			src.SetReadDeadline(time.Now().Add(j.wake))
		}
		n, err := io.Copy(dst, src)
		total += n
		if count != nil && n > 0 {
			count.Add(n)
		}
		if err == nil {
			// src reached end of stream: pass it on, keep the other way open.
			if _, ok := dst.(closeWriter); !ok {
				j.abort(nil)
				return total
			}
			if err := closeWrite(dst); err != nil && !j.isAborted() {
				j.abort(err)
			}
			return total
		}
		if j.wake > 0 && errors.Is(err, os.ErrDeadlineExceeded) && !j.isAborted() {
			// Only read deadlines are set, so the splice pipe is empty and
			// the copy can resume where it stopped.
			now := time.Now()
			if n > 0 {
				j.touch(now)
				continue
			}
			if j.idle == 0 || now.Sub(time.Unix(0, j.last.Load())) < j.idle {
				continue
			}
			j.abort(ErrIdleTimeout)
			return total
		}
		j.abort(err)
		return total
	}
}
