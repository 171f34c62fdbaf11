package edge

import (
	"bufio"
	"errors"
	"io"
	"net"
	"time"
)

// writeErr marks a failure on the writing side of a copy, so callers can
// tell whose fault it was.
type writeErr struct{ err error }

func (e *writeErr) Error() string { return "write: " + e.err.Error() }
func (e *writeErr) Unwrap() error { return e.err }

var errShortBody = errors.New("body ended early")

// copyDeadlines are the deadlines a copy keeps armed while it waits.
type copyDeadlines struct {
	src, dst   *deadlines
	srcT, dstT time.Duration
}

// beforeWait flushes dst and re-arms both deadlines before a blocking read.
func (d *copyDeadlines) beforeWait(dst *bufio.Writer) error {
	now := time.Now()
	if dst.Buffered() > 0 {
		if d != nil && d.dst != nil {
			d.dst.write(now, d.dstT)
		}
		if err := dst.Flush(); err != nil {
			return &writeErr{err}
		}
	}
	if d != nil && d.src != nil {
		d.src.read(now, d.srcT)
	}
	return nil
}

// deadlines arms a connection's deadlines lazily: one is moved only when
// less than half its timeout is left (or more than all of it), so a busy
// keep-alive connection re-arms about once per half timeout rather than
// on every request. Each operation thus gets between half and all of its
// timeout.
type deadlines struct {
	c      net.Conn
	rd, wd time.Time
}

func (d *deadlines) reset(c net.Conn) { d.c, d.rd, d.wd = c, time.Time{}, time.Time{} }

func (d *deadlines) read(now time.Time, t time.Duration) {
	if left := d.rd.Sub(now); left < t/2 || left > t {
		d.rd = now.Add(t)
		d.c.SetReadDeadline(d.rd)
	}
}

// readBy arms the read deadline at dl (none when zero), moving it only
// when it is later than dl or more than slack earlier.
func (d *deadlines) readBy(dl time.Time, slack time.Duration) {
	if dl.IsZero() {
		if !d.rd.IsZero() {
			d.readExact(dl)
		}
		return
	}
	if d.rd.IsZero() || d.rd.After(dl) || d.rd.Before(dl.Add(-slack)) {
		d.readExact(dl)
	}
}

// readExact arms the read deadline at dl (none when zero), now.
func (d *deadlines) readExact(dl time.Time) {
	d.rd = dl
	d.c.SetReadDeadline(dl)
}

func (d *deadlines) write(now time.Time, t time.Duration) {
	if left := d.wd.Sub(now); left < t/2 || left > t {
		d.wd = now.Add(t)
		d.c.SetWriteDeadline(d.wd)
	}
}

// copyN copies n bytes (all until EOF when n < 0) from src to dst through
// src's buffer. Before blocking on src it flushes dst, so streamed bodies
// reach the peer as they arrive, and re-arms the deadlines in dl.
func copyN(dst *bufio.Writer, src *bufio.Reader, n int64, dl *copyDeadlines) error {
	for n != 0 {
		if src.Buffered() == 0 {
			if err := dl.beforeWait(dst); err != nil {
				return err
			}
			if _, err := src.Peek(1); err != nil {
				if n < 0 && err == io.EOF {
					return nil
				}
				if err == io.EOF {
					return errShortBody
				}
				return err
			}
		}
		m := src.Buffered()
		if n >= 0 && int64(m) > n {
			m = int(n)
		}
		b, _ := src.Peek(m)
		if _, err := dst.Write(b); err != nil {
			return &writeErr{err}
		}
		src.Discard(m)
		if n > 0 {
			n -= int64(m)
		}
	}
	return nil
}

// bodyErrorText is the edge's 400 answer to a request body that failed
// while it was being sent: malformed framing is named, anything else (the
// client stopped sending) is an incomplete body.
func bodyErrorText(err error) string {
	if errors.Is(err, errMalformed) {
		return err.Error() + "\n"
	}
	return "incomplete request body\n"
}
