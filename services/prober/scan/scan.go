// Package scan is a TCP connect port scanner: port lists and ranges,
// bounded concurrency, a per-port timeout and an optional rate limit. A
// port is open when the connection is accepted, closed when it is refused
// and filtered when nothing answers in time.
package scan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"
)

// State is a port's scan state.
type State uint8

// Port states.
const (
	Unknown State = iota
	// Open: the connection was accepted.
	Open
	// Closed: the connection was refused (RST).
	Closed
	// Filtered: no answer within the timeout, or unreachable.
	Filtered
)

// String returns the state's lower-case name ("open", "closed", "filtered").
func (s State) String() string {
	switch s {
	case Open:
		return "open"
	case Closed:
		return "closed"
	case Filtered:
		return "filtered"
	}
	return "unknown"
}

// MaxSpecLen bounds a port specification's length.
const MaxSpecLen = 4096

// ParsePorts parses "22,80,8000-8100" into ascending, de-duplicated ports.
func ParsePorts(spec string) ([]uint16, error) {
	if len(spec) > MaxSpecLen {
		return nil, fmt.Errorf("longer than %d bytes", MaxSpecLen)
	}
	var seen [65536 / 64]uint64
	n := 0
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, errors.New("empty element")
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parsePort(lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = parsePort(hi); err != nil {
				return nil, err
			}
			if b < a {
				return nil, fmt.Errorf("range %q runs backwards", part)
			}
		}
		for p := a; ; p++ {
			if seen[p/64]&(1<<(p%64)) == 0 {
				seen[p/64] |= 1 << (p % 64)
				n++
			}
			if p == b {
				break
			}
		}
	}
	out := make([]uint16, 0, n)
	for p := 1; p < 65536; p++ {
		if seen[p/64]&(1<<(p%64)) != 0 {
			out = append(out, uint16(p))
		}
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	s = strings.TrimSpace(s)
	v, err := strconv.ParseUint(s, 10, 16)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("port %q: must be 1-65535", s)
	}
	return uint16(v), nil
}

// Options tune a scan.
type Options struct {
	// Concurrency is the number of connects in flight (default 256).
	Concurrency int
	// Timeout bounds each connect (default 1s).
	Timeout time.Duration
	// Rate limits connects per second (0: unlimited).
	Rate float64
	// OnPort, when set, is called (from scanning goroutines, serially) for
	// every open port as it is found and for progress.
	OnPort func(port uint16, st State, done, total int)
}

// Result is a finished scan.
type Result struct {
	// States holds each scanned port's state, indexed like the input.
	States []State
	// Counts by state.
	Open, Closed, Filtered int
}

// OpenPorts returns the open ports in ascending order.
func (r *Result) OpenPorts(ports []uint16) []uint16 {
	var out []uint16
	for i, s := range r.States {
		if s == Open {
			out = append(out, ports[i])
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Scan connects to every port of addr. It stops early, returning ctx's
// error, when ctx ends.
func Scan(ctx context.Context, addr netip.Addr, ports []uint16, o Options) (*Result, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = 256
	}
	if addr.IsLoopback() && o.Concurrency > runtime.GOMAXPROCS(0) {
		// Loopback connects finish inside connect(2) (see connectNow):
		// more workers than CPUs only add thread and scheduler churn.
		o.Concurrency = runtime.GOMAXPROCS(0)
	}
	if o.Concurrency > len(ports) {
		o.Concurrency = len(ports)
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	var lim *rate.Limiter
	if o.Rate > 0 {
		lim = rate.NewLimiter(rate.Limit(o.Rate), max(1, int(o.Rate/100)))
	}
	res := &Result{States: make([]State, len(ports))}
	var next, done atomic.Int64
	var mu sync.Mutex // serialises OnPort
	var wg sync.WaitGroup
	d := net.Dialer{Timeout: o.Timeout}
	for w := 0; w < o.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(ports) {
					return
				}
				if lim != nil && lim.Wait(ctx) != nil {
					return
				}
				st := probe(ctx, &d, netip.AddrPortFrom(addr, ports[i]))
				res.States[i] = st
				n := int(done.Add(1))
				if o.OnPort != nil && (st == Open || n%1024 == 0) {
					mu.Lock()
					o.OnPort(ports[i], st, n, len(ports))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, s := range res.States {
		switch s {
		case Open:
			res.Open++
		case Closed:
			res.Closed++
		default:
			res.Filtered++
		}
	}
	return res, nil
}

func probe(ctx context.Context, d *net.Dialer, ap netip.AddrPort) State {
	if ap.Addr().IsLoopback() {
		if st, ok := connectNow(ap); ok {
			return st
		}
	}
	c, err := d.DialContext(ctx, "tcp", ap.String()) // retries a self-connect itself
	if err == nil {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST, not a TIME-WAIT per open port
		}
		c.Close()
		return Open
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return Closed
	}
	return Filtered
}
