package ping

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Hop is one TTL of a trace.
type Hop struct {
	// TTL of the probes.
	TTL int
	// Addr answered (invalid when nobody did).
	Addr netip.Addr
	// RTTs of each probe; 0 for a lost probe.
	RTTs []time.Duration
	// Reached is set when the destination itself answered.
	Reached bool
}

// TraceOptions tune a trace.
type TraceOptions struct {
	// MaxHops is the highest TTL (default 30).
	MaxHops int
	// Probes per hop (default 3).
	Probes int
	// Timeout per probe (default 1s).
	Timeout time.Duration
	// OnHop, when set, is called as each hop completes.
	OnHop func(Hop)
}

// Trace sends TTL-limited echo requests to addr, from TTL 1 up, until the
// destination answers (or says it is unreachable) or MaxHops is reached. It
// needs a raw ICMP socket to see the routers' Time Exceeded messages.
func Trace(ctx context.Context, addr netip.Addr, o TraceOptions) ([]Hop, bool, error) {
	if o.MaxHops <= 0 {
		o.MaxHops = 30
	}
	if o.MaxHops > 255 {
		return nil, false, errors.New("max_hops: at most 255")
	}
	if o.Probes <= 0 {
		o.Probes = 3
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	addr = addr.Unmap()
	c, err := open(addr.Is6(), true)
	if err != nil {
		return nil, false, err
	}
	defer c.close()
	id, tok := newID()
	dst := c.dst(addr)
	payload := make([]byte, 32)
	copy(payload, tok[:])
	buf := make([]byte, 1500)

	var hops []Hop
	for ttl := 1; ttl <= o.MaxHops; ttl++ {
		if err := c.setTTL(ttl); err != nil {
			return nil, false, fmt.Errorf("set TTL: %w", err)
		}
		h := Hop{TTL: ttl, RTTs: make([]time.Duration, o.Probes)}
		stop := false
		for p := 0; p < o.Probes; p++ {
			if err := ctx.Err(); err != nil {
				return nil, false, err
			}
			seq := ttl*o.Probes + p
			msg := icmp.Message{Type: c.echoType(), Body: &icmp.Echo{ID: id, Seq: seq & 0xffff, Data: payload}}
			wb, _ := msg.Marshal(nil)
			sent := time.Now()
			if _, err := c.pc.WriteTo(wb, dst); err != nil {
				continue
			}
			deadline := sent.Add(o.Timeout)
			if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
				deadline = d
			}
			_ = c.pc.SetReadDeadline(deadline)
			for {
				n, _, from, at, err := c.read(buf)
				if err != nil {
					if errors.Is(err, os.ErrDeadlineExceeded) {
						break
					}
					if errors.Is(err, net.ErrClosed) {
						return nil, false, err
					}
					continue
				}
				kind, ok := c.match(buf[:n], id, seq&0xffff)
				if !ok {
					continue
				}
				h.RTTs[p] = rttOf(sent, at, time.Now())
				if !h.Addr.IsValid() {
					h.Addr = from
				}
				if kind == matchReply || kind == matchUnreachable {
					stop = true
					h.Reached = kind == matchReply || from == addr
				}
				break
			}
		}
		hops = append(hops, h)
		if o.OnHop != nil {
			o.OnHop(h)
		}
		if stop {
			return hops, h.Reached, nil
		}
	}
	return hops, false, nil
}

type matchKind int

const (
	matchReply matchKind = iota + 1
	matchExceeded
	matchUnreachable
)

// match reports whether b (an ICMP message) answers our probe id/seq.
func (c *conn) match(b []byte, id, seq int) (matchKind, bool) {
	m, err := icmp.ParseMessage(c.proto(), b)
	if err != nil {
		return 0, false
	}
	var inner []byte
	var kind matchKind
	switch m.Type {
	case ipv4.ICMPTypeEchoReply, ipv6.ICMPTypeEchoReply:
		e, ok := m.Body.(*icmp.Echo)
		return matchReply, ok && e.ID == id && e.Seq == seq
	case ipv4.ICMPTypeTimeExceeded, ipv6.ICMPTypeTimeExceeded:
		te, ok := m.Body.(*icmp.TimeExceeded)
		if !ok {
			return 0, false
		}
		inner, kind = te.Data, matchExceeded
	case ipv4.ICMPTypeDestinationUnreachable, ipv6.ICMPTypeDestinationUnreachable:
		du, ok := m.Body.(*icmp.DstUnreach)
		if !ok {
			return 0, false
		}
		inner, kind = du.Data, matchUnreachable
	default:
		return 0, false
	}
	// inner is the original IP header plus at least 8 bytes of our echo.
	hl := 40
	if !c.v6 {
		if len(inner) < 1 {
			return 0, false
		}
		hl = int(inner[0]&0x0f) * 4
	}
	if len(inner) < hl+8 {
		return 0, false
	}
	e := inner[hl:]
	return kind, int(binary.BigEndian.Uint16(e[4:])) == id && int(binary.BigEndian.Uint16(e[6:])) == seq
}
