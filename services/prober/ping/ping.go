// Package ping sends ICMP echo requests (ping) and TTL-limited echo probes
// (traceroute) over IPv4 and IPv6, using unprivileged datagram ICMP sockets
// where the kernel allows them (net.ipv4.ping_group_range) and raw sockets
// otherwise.
package ping

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Protocol numbers for icmp.ParseMessage.
const (
	protoICMP   = 1
	protoICMPv6 = 58
)

// headerLen is our payload prefix: an 8-byte token then the 8-byte send
// time (nanoseconds); the rest is padding.
const headerLen = 16

// MaxSize is the largest payload accepted.
const MaxSize = 65000

// ErrNoRaw means the job needs a raw socket and the process may not open one.
var ErrNoRaw = errors.New("raw ICMP sockets need CAP_NET_RAW")

// conn is an ICMP socket of one family.
type conn struct {
	c     *icmp.PacketConn
	v6    bool
	dgram bool // kernel-filtered datagram socket (ID is the local port)
}

// open opens a datagram ICMP socket, or a raw one when datagram sockets are
// not allowed; rawOnly insists on raw (traceroute needs ICMP errors).
func open(v6, rawOnly bool) (*conn, error) {
	dnet, rnet, any := "udp4", "ip4:icmp", "0.0.0.0"
	if v6 {
		dnet, rnet, any = "udp6", "ip6:ipv6-icmp", "::"
	}
	if !rawOnly {
		if c, err := icmp.ListenPacket(dnet, any); err == nil {
			return setup(&conn{c: c, v6: v6, dgram: true})
		}
	}
	c, err := icmp.ListenPacket(rnet, any)
	if err != nil {
		if rawOnly {
			return nil, fmt.Errorf("%w: %v", ErrNoRaw, err)
		}
		return nil, fmt.Errorf("open ICMP socket (neither datagram sockets by net.ipv4.ping_group_range nor raw sockets are allowed): %w", err)
	}
	return setup(&conn{c: c, v6: v6})
}

func setup(c *conn) (*conn, error) {
	var err error
	if c.v6 {
		err = c.c.IPv6PacketConn().SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagSrc, true)
		if err == nil && !c.dgram {
			var f ipv6.ICMPFilter
			f.SetAll(true)
			f.Accept(ipv6.ICMPTypeEchoReply)
			f.Accept(ipv6.ICMPTypeTimeExceeded)
			f.Accept(ipv6.ICMPTypeDestinationUnreachable)
			err = c.c.IPv6PacketConn().SetICMPFilter(&f)
		}
	} else {
		err = c.c.IPv4PacketConn().SetControlMessage(ipv4.FlagTTL, true)
	}
	if err != nil {
		c.c.Close()
		return nil, fmt.Errorf("ICMP socket options: %w", err)
	}
	return c, nil
}

func (c *conn) dst(a netip.Addr) net.Addr {
	if c.dgram {
		return &net.UDPAddr{IP: a.AsSlice(), Zone: a.Zone()}
	}
	return &net.IPAddr{IP: a.AsSlice(), Zone: a.Zone()}
}

func (c *conn) echoType() icmp.Type {
	if c.v6 {
		return ipv6.ICMPTypeEchoRequest
	}
	return ipv4.ICMPTypeEcho
}

func (c *conn) proto() int {
	if c.v6 {
		return protoICMPv6
	}
	return protoICMP
}

// setTTL sets the TTL (hop limit) of later packets.
func (c *conn) setTTL(ttl int) error {
	if c.v6 {
		return c.c.IPv6PacketConn().SetHopLimit(ttl)
	}
	return c.c.IPv4PacketConn().SetTTL(ttl)
}

// read reads one ICMP message: its bytes, TTL/hop limit and source.
func (c *conn) read(b []byte) (int, int, netip.Addr, error) {
	var n, ttl int
	var src net.Addr
	var err error
	if c.v6 {
		var cm *ipv6.ControlMessage
		n, cm, src, err = c.c.IPv6PacketConn().ReadFrom(b)
		if cm != nil {
			ttl = cm.HopLimit
		}
	} else {
		var cm *ipv4.ControlMessage
		n, cm, src, err = c.c.IPv4PacketConn().ReadFrom(b)
		if cm != nil {
			ttl = cm.TTL
		}
	}
	if err != nil {
		return 0, 0, netip.Addr{}, err
	}
	var from netip.Addr
	switch a := src.(type) {
	case *net.IPAddr:
		from, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		from, _ = netip.AddrFromSlice(a.IP)
	}
	return n, ttl, from.Unmap(), nil
}

var idCounter atomic.Uint32

// newID returns an echo identifier and a random token for one run.
func newID() (int, [8]byte) {
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	return int((uint32(binary.BigEndian.Uint16(tok[:2])) + idCounter.Add(1)) & 0xffff), tok
}

// Reply is one echo request's fate.
type Reply struct {
	// Seq is the sequence number (from 1).
	Seq int
	// RTT is the round trip time (0 when lost).
	RTT time.Duration
	// TTL is the reply's TTL or hop limit.
	TTL int
	// Received says a reply arrived within the timeout.
	Received bool
	// From is the replying address.
	From netip.Addr
}

// Options tune a ping.
type Options struct {
	// Count of echo requests (default 4).
	Count int
	// Interval between requests (default 1s).
	Interval time.Duration
	// Timeout for each reply (default 1s).
	Timeout time.Duration
	// Size of the payload in bytes (default 56, at least 16).
	Size int
	// OnReply, when set, is called as each reply arrives.
	OnReply func(Reply)
}

// Result summarises a ping like iputils.
type Result struct {
	// Addr is the target.
	Addr netip.Addr
	// Sent and Received count requests and replies.
	Sent, Received int
	// Min, Avg, Max and Mdev summarise the RTTs of received replies.
	Min, Avg, Max, Mdev time.Duration
	// Replies has one entry per request, in order.
	Replies []Reply
}

// Loss returns the loss in percent.
func (r *Result) Loss() float64 {
	if r.Sent == 0 {
		return 0
	}
	return 100 * float64(r.Sent-r.Received) / float64(r.Sent)
}

// Ping sends Count echo requests to addr and waits for the replies.
func Ping(ctx context.Context, addr netip.Addr, o Options) (*Result, error) {
	if o.Count <= 0 {
		o.Count = 4
	}
	if o.Count > 65535 {
		return nil, errors.New("count: at most 65535")
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.Size == 0 {
		o.Size = 56
	}
	if o.Size < headerLen || o.Size > MaxSize {
		return nil, fmt.Errorf("size: must be %d-%d", headerLen, MaxSize)
	}
	addr = addr.Unmap()
	c, err := open(addr.Is6(), false)
	if err != nil {
		return nil, err
	}
	defer c.c.Close()
	id, tok := newID()

	res := &Result{Addr: addr, Replies: make([]Reply, o.Count)}
	sentAt := make([]time.Time, o.Count)
	var mu sync.Mutex
	allIn := make(chan struct{})
	received := 0

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // receiver; ends when the socket closes
		defer wg.Done()
		b := make([]byte, o.Size+512)
		for {
			n, ttl, from, err := c.read(b)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			now := time.Now()
			m, err := icmp.ParseMessage(c.proto(), b[:n])
			if err != nil || (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) {
				continue
			}
			e, ok := m.Body.(*icmp.Echo)
			if !ok || (!c.dgram && e.ID != id) || len(e.Data) < headerLen || [8]byte(e.Data[:8]) != tok {
				continue
			}
			i := e.Seq - 1
			mu.Lock()
			if i < 0 || i >= len(sentAt) || sentAt[i].IsZero() || res.Replies[i].Received {
				mu.Unlock()
				continue
			}
			rtt := now.Sub(sentAt[i])
			if rtt > o.Timeout {
				mu.Unlock()
				continue // late: counted as lost, like a timed-out request
			}
			r := Reply{Seq: e.Seq, RTT: rtt, TTL: ttl, Received: true, From: from}
			res.Replies[i] = r
			received++
			if received == o.Count {
				close(allIn)
			}
			mu.Unlock()
			if o.OnReply != nil {
				o.OnReply(r)
			}
		}
	}()
	defer wg.Wait()
	defer c.c.Close()

	payload := make([]byte, o.Size)
	copy(payload, tok[:])
	for i := range payload[headerLen:] {
		payload[headerLen+i] = byte(i)
	}
	dst := c.dst(addr)
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	var last time.Time
	for i := 0; i < o.Count; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-tick.C:
			}
		}
		binary.BigEndian.PutUint64(payload[8:], uint64(time.Now().UnixNano()))
		msg := icmp.Message{Type: c.echoType(), Body: &icmp.Echo{ID: id, Seq: i + 1, Data: payload}}
		wb, err := msg.Marshal(nil)
		if err != nil {
			return nil, fmt.Errorf("build echo request: %w", err)
		}
		mu.Lock()
		last = time.Now()
		sentAt[i] = last
		res.Replies[i].Seq = i + 1
		mu.Unlock()
		if _, err := c.c.WriteTo(wb, dst); err != nil {
			// The request did not leave (no route, ...): count it as sent
			// and lost, as iputils does for errors it reports per packet.
			continue
		}
	}
	wait := time.NewTimer(time.Until(last.Add(o.Timeout)))
	defer wait.Stop()
	select {
	case <-allIn:
	case <-wait.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c.c.Close()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	res.Sent = o.Count
	var sum, sum2 float64
	for _, r := range res.Replies {
		if !r.Received {
			continue
		}
		res.Received++
		if res.Min == 0 || r.RTT < res.Min {
			res.Min = r.RTT
		}
		if r.RTT > res.Max {
			res.Max = r.RTT
		}
		f := float64(r.RTT)
		sum += f
		sum2 += f * f
	}
	if res.Received > 0 {
		mean := sum / float64(res.Received)
		res.Avg = time.Duration(mean)
		res.Mdev = time.Duration(math.Sqrt(math.Max(0, sum2/float64(res.Received)-mean*mean)))
	}
	return res, nil
}
