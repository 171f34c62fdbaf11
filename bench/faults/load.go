package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// loader is the HTTP client: an open-loop schedule over a keep-alive pool
// (see the package comment for exactly what it does).
type loader struct {
	r        *run
	addr     string
	reqBytes []byte // on a pooled connection
	onceReq  []byte // on a connection of its own
	pool     pool
	inflight atomic.Int64
}

// hconn is one client connection.
type hconn struct {
	c    net.Conn
	cr   *countReader
	br   *bufio.Reader
	born time.Duration
	uses int // responses read on it
}

// countReader counts the bytes read from the connection.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// pool holds idle keep-alive connections, reused oldest-first.
type pool struct {
	mu   sync.Mutex
	idle []*hconn
	max  int
}

func (p *pool) get() *hconn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) == 0 {
		return nil
	}
	c := p.idle[0]
	p.idle = p.idle[1:]
	return c
}

func (p *pool) put(c *hconn) {
	p.mu.Lock()
	if len(p.idle) < p.max {
		p.idle = append(p.idle, c)
		c = nil
	}
	p.mu.Unlock()
	if c != nil {
		c.c.Close()
	}
}

func newLoader(r *run, raw string) (*loader, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("-edge %q: want http://host:port/path", raw)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	path := u.RequestURI()
	head := "GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: switchboard-faults\r\nAccept: */*\r\n"
	return &loader{
		r:        r,
		addr:     addr,
		reqBytes: []byte(head + "\r\n"),
		onceReq:  []byte(head + "Connection: close\r\n\r\n"),
		pool:     pool{max: *keepConns},
	}, nil
}

func (l *loader) dial(deadline time.Time) (*hconn, error) {
	d := net.Dialer{Deadline: deadline}
	c, err := d.Dial("tcp", l.addr)
	if err != nil {
		return nil, err
	}
	cr := &countReader{r: c}
	return &hconn{c: c, cr: cr, br: bufio.NewReaderSize(cr, 4096), born: l.r.now()}, nil
}

// warm opens the keep-alive connections and sends one request on each, so
// that the pool is full and every connection has served before the first
// fault.
func (l *loader) warm() error {
	deadline := time.Now().Add(10 * time.Second)
	for range *keepConns {
		c, err := l.dial(deadline)
		if err != nil {
			return fmt.Errorf("warming the keep-alive pool: %w", err)
		}
		res := l.attempt(c, false, deadline) // puts c in the pool
		if res.err != nil {
			return fmt.Errorf("warming the keep-alive pool: %w", res.err)
		}
		if res.status != http.StatusOK {
			return fmt.Errorf("warming the keep-alive pool: status %d", res.status)
		}
	}
	return nil
}

// run schedules requests at the fixed rate until ctx ends.
func (l *loader) run(ctx context.Context) {
	interval := time.Duration(float64(time.Second) / *rate)
	start := l.r.now()
	for i := 0; ; i++ {
		at := start + time.Duration(i)*interval
		if d := at - l.r.now(); d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		} else if ctx.Err() != nil {
			return
		}
		fresh := *freshEvery > 0 && i%*freshEvery == *freshEvery-1
		l.r.mu.Lock()
		idx := len(l.r.reqs)
		l.r.reqs = append(l.r.reqs, httpRec{at: at, fresh: fresh, connBorn: -1})
		l.r.mu.Unlock()
		if l.inflight.Add(1) > int64(*maxInflight) {
			l.inflight.Add(-1)
			l.finish(idx, httpRec{err: "client: too many in flight"})
			continue
		}
		go func() {
			defer l.inflight.Add(-1)
			l.finish(idx, l.one(at, fresh))
		}()
	}
}

// finish stores the outcome of request idx.
func (l *loader) finish(idx int, out httpRec) {
	now := l.r.now()
	l.r.mu.Lock()
	q := &l.r.reqs[idx]
	q.done, q.ok, q.lat = true, out.ok, now-q.at
	q.connBorn, q.retried, q.backend, q.err = out.connBorn, out.retried, out.backend, out.err
	l.r.mu.Unlock()
}

// one makes one request, with the retry a normal client makes.
func (l *loader) one(at time.Duration, fresh bool) httpRec {
	out := httpRec{connBorn: -1}
	deadline := l.r.t0.Add(at + *reqTimeout)
	var c *hconn
	if !fresh {
		c = l.pool.get()
	}
	if c == nil {
		var err error
		if c, err = l.dial(deadline); err != nil {
			out.err = "dial: " + errKind(err)
			return out
		}
	}
	out.connBorn = c.born
	reused := c.uses > 0
	res := l.attempt(c, fresh, deadline)
	if res.err != nil && reused && !res.gotBytes && !isTimeout(res.err) && time.Now().Before(deadline) {
		out.retried = true
		c2, err := l.dial(deadline)
		if err != nil {
			out.err = "retry dial: " + errKind(err)
			return out
		}
		res = l.attempt(c2, fresh, deadline)
	}
	switch {
	case res.err != nil:
		out.err = errKind(res.err)
		if out.retried {
			out.err = "retry: " + out.err
		}
	case res.status != http.StatusOK:
		out.err = fmt.Sprintf("status %d", res.status)
	default:
		out.ok = true
		out.backend = res.backend
	}
	return out
}

type attemptResult struct {
	err      error
	gotBytes bool // some of the response arrived
	status   int
	backend  string
}

// attempt sends the request on c and reads the answer; c goes back to the
// pool when it may be reused, else it is closed.
func (l *loader) attempt(c *hconn, fresh bool, deadline time.Time) (res attemptResult) {
	keep := false
	defer func() {
		if keep && !fresh {
			l.pool.put(c)
		} else {
			c.c.Close()
		}
	}()
	c.c.SetDeadline(deadline)
	c.cr.n = 0
	req := l.reqBytes
	if fresh {
		req = l.onceReq
	}
	if _, err := c.c.Write(req); err != nil {
		return attemptResult{err: err}
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return attemptResult{err: err, gotBytes: c.cr.n > 0}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if err != nil {
		return attemptResult{err: err, gotBytes: true}
	}
	c.uses++
	keep = !resp.Close
	res = attemptResult{gotBytes: true, status: resp.StatusCode}
	if i := bytes.Index(body, []byte("hello from ")); i >= 0 {
		name := body[i+len("hello from "):]
		if j := bytes.IndexAny(name, " \n"); j >= 0 {
			name = name[:j]
		}
		res.backend = string(name)
	}
	return res
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// errKind is a short, stable name for a transport error.
func errKind(err error) string {
	switch {
	case isTimeout(err):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed by the server (EOF)"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}
