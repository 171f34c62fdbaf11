package wire

import (
	"sync"
	"time"
)

// deadline is a settable point in time with a channel closed when it
// passes. Setting it again replaces the channel, so waiters re-read wait()
// each time they are woken.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	c     chan struct{}
}

func newDeadline() deadline { return deadline{c: make(chan struct{})} }

// set arms the deadline for t; the zero time disarms it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	c := make(chan struct{})
	d.c = c
	if t.IsZero() {
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		close(c)
		return
	}
	d.timer = time.AfterFunc(dur, func() {
		d.mu.Lock()
		if d.c == c {
			close(c)
		}
		d.mu.Unlock()
	})
}

// wait returns a channel closed once the deadline has passed.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.c
}

// stop releases the timer.
func (d *deadline) stop() {
	d.mu.Lock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	d.mu.Unlock()
}

// chunk is one received DATA payload queued on a stream.
type chunk struct {
	b    *[]byte // pooled buffer; (*b)[off:] is unread
	off  int
	more bool // FlagMore: the message continues in the next chunk
}

// chunkRing is a growable FIFO of chunks that allocates only when it grows.
type chunkRing struct {
	buf  []chunk
	head int
	n    int
}

func (r *chunkRing) len() int { return r.n }

func (r *chunkRing) push(c chunk) {
	if r.n == len(r.buf) {
		nb := make([]chunk, max(8, 2*len(r.buf)))
		for i := 0; i < r.n; i++ {
			nb[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = c
	r.n++
}

func (r *chunkRing) front() *chunk { return &r.buf[r.head] }

func (r *chunkRing) pop() {
	r.buf[r.head] = chunk{}
	r.head = (r.head + 1) % len(r.buf)
	r.n--
}
