package resolver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// forwarder sends queries for names outside our zones to upstream
// resolvers, trying each in turn when one times out or fails, and starting
// with the one that last answered.
//
// Every attempt is a fresh query on a fresh socket: a random ID (crypto/rand,
// through dns.Id) and a random source port (the kernel's choice for an
// unbound socket), and optionally the name's letters in random case (0x20).
// A reply is accepted only when it answers exactly that query (checkReply).
// Over UDP anything else — a forged, stray or malformed datagram — is
// counted in mismatched and dropped, and the attempt keeps reading until
// its deadline, so one forged datagram can neither poison the cache nor
// fail the query.
type forwarder struct {
	upstreams     []string
	timeout       time.Duration
	randomizeCase bool
	prefer        atomic.Uint32
	// mismatched counts replies dropped because they did not answer the
	// query sent.
	mismatched atomic.Uint64
}

func newForwarder(upstreams []string, timeout time.Duration, randomizeCase bool) *forwarder {
	return &forwarder{upstreams: upstreams, timeout: timeout, randomizeCase: randomizeCase}
}

// errNoUpstream is returned when every upstream failed.
var errNoUpstream = errors.New("no upstream answered")

// errMismatch marks a reply that does not answer the query sent.
var errMismatch = errors.New("reply does not match the query")

// exchange resolves (name, qtype) upstream; name is lower case. A reply is
// good unless it is SERVFAIL or REFUSED; a truncated UDP reply is retried
// over TCP.
func (f *forwarder) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	start := int(f.prefer.Load())
	var errs []error
	for i := range f.upstreams {
		idx := (start + i) % len(f.upstreams)
		up := f.upstreams[idx]
		resp, err := f.try(ctx, name, qtype, up)
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

// try is one attempt at one upstream, bounded by the forwarder's timeout.
func (f *forwarder) try(ctx context.Context, name string, qtype uint16, upstream string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	sent := name
	if f.randomizeCase {
		sent = randomizeCase(name)
	}
	resp, err := f.roundTrip(ctx, "udp", newQuery(sent, qtype), upstream)
	if err == nil && resp.Truncated {
		resp, err = f.roundTrip(ctx, "tcp", newQuery(sent, qtype), upstream)
	}
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", upstream, err)
	}
	restoreCase(resp, name)
	return resp, nil
}

// newQuery is a recursive query for (name, qtype) with EDNS and a random ID.
func newQuery(name string, qtype uint16) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype) // ID from dns.Id: crypto/rand
	q.RecursionDesired = true
	q.SetEdns0(advertisedUDPSize, false)
	return q
}

// roundTrip sends q to upstream over network ("udp" or "tcp") on a new
// connection and returns the reply that answers it. Over UDP, datagrams
// that do not (forged, stray or malformed) are counted and skipped until
// ctx's deadline; over TCP, where an off-path sender cannot inject data,
// the first reply decides and a mismatch fails the attempt.
func (f *forwarder) roundTrip(ctx context.Context, network string, q *dns.Msg, upstream string) (*dns.Msg, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, upstream)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", network, err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	co := &dns.Conn{Conn: conn, UDPSize: maxDatagram}
	if err := co.WriteMsg(q); err != nil {
		return nil, fmt.Errorf("send over %s: %w", network, err)
	}
	for {
		p, err := co.ReadMsgHeader(nil)
		if err != nil && !errors.Is(err, dns.ErrShortRead) {
			return nil, fmt.Errorf("read over %s: %w", network, err)
		}
		if err != nil {
			err = fmt.Errorf("%w: %w", errMismatch, err)
		} else {
			resp := new(dns.Msg)
			if err = resp.Unpack(p); err != nil {
				err = fmt.Errorf("%w: malformed: %w", errMismatch, err)
			} else if err = checkReply(q, resp, f.randomizeCase); err == nil {
				return resp, nil
			}
		}
		f.mismatched.Add(1)
		if network != "udp" {
			return nil, fmt.Errorf("over %s: %w", network, err)
		}
	}
}

// checkReply says why r is not the reply to q: it must be a response
// (QR) with q's ID and opcode, and exactly one question equal to q's —
// type, class and name, the name compared exactly when exactCase (0x20:
// its random case must come back as sent), else ignoring ASCII case.
func checkReply(q, r *dns.Msg, exactCase bool) error {
	switch {
	case !r.Response:
		return fmt.Errorf("%w: QR clear", errMismatch)
	case r.Id != q.Id:
		return fmt.Errorf("%w: ID %d, sent %d", errMismatch, r.Id, q.Id)
	case r.Opcode != q.Opcode:
		return fmt.Errorf("%w: opcode %d, sent %d", errMismatch, r.Opcode, q.Opcode)
	case len(r.Question) != 1:
		return fmt.Errorf("%w: %d questions", errMismatch, len(r.Question))
	}
	got, want := r.Question[0], q.Question[0]
	sameName := got.Name == want.Name || !exactCase && lowerASCII(got.Name) == lowerASCII(want.Name)
	if !sameName || got.Qtype != want.Qtype || got.Qclass != want.Qclass {
		return fmt.Errorf("%w: question %s %s %s, sent %s %s %s", errMismatch,
			got.Name, dns.ClassToString[got.Qclass], dns.TypeToString[got.Qtype],
			want.Name, dns.ClassToString[want.Qclass], dns.TypeToString[want.Qtype])
	}
	return nil
}

// randomizeCase returns name with each ASCII letter's case chosen at
// random (draft-vixie-dnsext-dns0x20): a forged reply must also guess
// these bits. math/rand/v2's generator (ChaCha8, seeded by the runtime) is
// not predictable from outside the process.
func randomizeCase(name string) string {
	b := []byte(name)
	var bits uint64
	for i, c := range b {
		if i%64 == 0 {
			bits = rand.Uint64()
		}
		if 'a' <= c && c <= 'z' && bits&1 == 1 {
			b[i] = c - ('a' - 'A')
		}
		bits >>= 1
	}
	return string(b)
}

// restoreCase writes name (lower case) over the reply's question and over
// every owner name equal to it ignoring case, so the reply is cached in
// one case (its owners compress to the question, whose case each client's
// query then sets) whatever case was sent or the upstream used.
func restoreCase(m *dns.Msg, name string) {
	if len(m.Question) == 1 {
		m.Question[0].Name = name
	}
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if h := rr.Header(); h.Name != name && len(h.Name) == len(name) && lowerASCII(h.Name) == name {
				h.Name = name
			}
		}
	}
}
