package resolver

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// forwarder sends queries for names outside our zones to upstream
// resolvers, trying each in turn when one times out or fails, and starting
// with the one that last answered.
type forwarder struct {
	upstreams []string
	timeout   time.Duration
	prefer    atomic.Uint32
	udp, tcp  *dns.Client
}

func newForwarder(upstreams []string, timeout time.Duration) *forwarder {
	return &forwarder{
		upstreams: upstreams,
		timeout:   timeout,
		udp:       &dns.Client{Net: "udp", Timeout: timeout, UDPSize: advertisedUDPSize},
		tcp:       &dns.Client{Net: "tcp", Timeout: timeout},
	}
}

// errNoUpstream is returned when every upstream failed.
var errNoUpstream = errors.New("no upstream answered")

// exchange resolves (name, qtype) upstream. A reply is good unless it is
// SERVFAIL or REFUSED; a truncated UDP reply is retried over TCP.
func (f *forwarder) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = true
	q.SetEdns0(advertisedUDPSize, false)
	start := int(f.prefer.Load())
	var errs []error
	for i := range f.upstreams {
		idx := (start + i) % len(f.upstreams)
		up := f.upstreams[idx]
		resp, err := f.try(ctx, q, up)
		if err == nil && (resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused) {
			err = fmt.Errorf("%s answered %s", up, dns.RcodeToString[resp.Rcode])
		}
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if idx != start {
			f.prefer.Store(uint32(idx))
		}
		return resp, nil
	}
	if len(f.upstreams) > 1 {
		f.prefer.Store(uint32((start + 1) % len(f.upstreams)))
	}
	return nil, fmt.Errorf("%w: %w", errNoUpstream, errors.Join(errs...))
}

func (f *forwarder) try(ctx context.Context, q *dns.Msg, upstream string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	resp, _, err := f.udp.ExchangeContext(ctx, q, upstream)
	if err == nil && resp.Truncated {
		resp, _, err = f.tcp.ExchangeContext(ctx, q, upstream)
	}
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", upstream, err)
	}
	return resp, nil
}
