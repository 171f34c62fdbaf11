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
	pc    net.PacketConn // *net.IPConn (raw) or *net.UDPConn (datagram)
	v6    bool
	dgram bool // kernel-filtered datagram socket (ID is the local port)
	oob   []byte
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
			// icmp wraps the datagram socket in a *net.UDPConn; use it
			// directly to read ancillary data (TTL, kernel timestamps).
			var pc net.PacketConn
			if v6 {
				pc = c.IPv6PacketConn().PacketConn
			} else {
				pc = c.IPv4PacketConn().PacketConn
			}
			return setup(&conn{pc: pc, v6: v6, dgram: true}, c)
		}
	}
	c, err := net.ListenPacket(rnet, any)
	if err != nil {
		if rawOnly {
			return nil, fmt.Errorf("%w: %v", ErrNoRaw, err)
		}
		return nil, fmt.Errorf("open ICMP socket (neither datagram sockets by net.ipv4.ping_group_range nor raw sockets are allowed): %w", err)
	}
	return setup(&conn{pc: c, v6: v6}, c)
}

func setup(c *conn, closer interface{ Close() error }) (*conn, error) {
	var err error
	if c.v6 {
		p := ipv6.NewPacketConn(c.pc)
		if !c.dgram {
			var f ipv6.ICMPFilter
			f.SetAll(true)
			f.Accept(ipv6.ICMPTypeEchoReply)
			f.Accept(ipv6.ICMPTypeTimeExceeded)
			f.Accept(ipv6.ICMPTypeDestinationUnreachable)
			err = p.SetICMPFilter(&f)
		}
	}
	if err == nil {
		c.oob, err = enableAncillary(c.pc, c.v6)
	}
	if err != nil {
		closer.Close()
		return nil, fmt.Errorf("ICMP socket options: %w", err)
	}
	return c, nil
}

func (c *conn) close() error { return c.pc.Close() }

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
		return ipv6.NewPacketConn(c.pc).SetHopLimit(ttl)
	}
	return ipv4.NewPacketConn(c.pc).SetTTL(ttl)
}

// read reads one ICMP message: its length in b, the TTL/hop limit, the
// source and the kernel's receive time (zero when unavailable).
func (c *conn) read(b []byte) (int, int, netip.Addr, time.Time, error) {
	var n, oobn int
	var src net.Addr
	var err error
	switch pc := c.pc.(type) {
	case *net.UDPConn:
		var ua *net.UDPAddr
		n, oobn, _, ua, err = pc.ReadMsgUDP(b, c.oob)
		if ua != nil {
			src = ua
		}
	case *net.IPConn:
		var ia *net.IPAddr
		n, oobn, _, ia, err = pc.ReadMsgIP(b, c.oob)
		if ia != nil {
			src = ia
		}
	default:
		return 0, 0, netip.Addr{}, time.Time{}, errors.New("unexpected socket type")
	}
	if err != nil {
		return 0, 0, netip.Addr{}, time.Time{}, err
	}
	if !c.v6 && !c.dgram {
		// Raw IPv4 sockets deliver the IP header: drop it.
		if n < 20 {
			return 0, 0, netip.Addr{}, time.Time{}, errors.New("short packet")
		}
		hl := int(b[0]&0x0f) * 4
		if hl < 20 || hl > n {
			return 0, 0, netip.Addr{}, time.Time{}, errors.New("bad IP header")
		}
		n = copy(b, b[hl:n])
	}
	ttl, at := parseAncillary(c.oob[:oobn])
	var from netip.Addr
	switch a := src.(type) {
	case *net.IPAddr:
		from, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		from, _ = netip.AddrFromSlice(a.IP)
	}
	return n, ttl, from.Unmap(), at, nil
}

// rttOf measures from sent to the kernel's receive time when there is
// one (as iputils does), else to now.
func rttOf(sent, kernel, now time.Time) time.Duration {
	if !kernel.IsZero() {
		if d := kernel.Sub(sent.Round(0)); d > 0 && d <= now.Sub(sent)+time.Millisecond {
			return d
		}
	}
	return now.Sub(sent)
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
	defer c.close()
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
			n, ttl, from, at, err := c.read(b)
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
			rtt := rttOf(sentAt[i], at, now)
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
	defer c.close()

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
		if _, err := c.pc.WriteTo(wb, dst); err != nil {
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
	c.close()
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
