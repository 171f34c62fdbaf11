package bandwidth

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Options describe one test.
type Options struct {
	// Protocol is "tcp" or "udp".
	Protocol string
	// Duration of sending (default 5s, at most MaxDuration).
	Duration time.Duration
	// Reverse measures peer-to-us instead of us-to-peer.
	Reverse bool
	// Rate is the UDP target rate in bit/s (default 100 Mbit/s).
	Rate uint64
	// PacketSize is the UDP datagram size (default 1200).
	PacketSize int
	// OnProgress, when set, gets acknowledged (udp-up) or received counts.
	OnProgress func(msg string)
}

// Result is a finished test.
type Result struct {
	// Bytes carried and the time the receiver measured.
	Bytes    uint64
	Duration time.Duration
	// BitsPerSecond is the receiver's throughput.
	BitsPerSecond float64
	// UDP: datagrams sent, lost and out of order, jitter, loss in percent.
	PacketsSent, PacketsLost, Reordered uint64
	Jitter                              time.Duration
	LossPercent                         float64
}

// DialFunc opens connections (the prober's allowlisted dialer).
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Run runs a test against the peer's bandwidth port.
func Run(ctx context.Context, dial DialFunc, peer string, o Options) (*Result, error) {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Duration > MaxDuration {
		return nil, fmt.Errorf("duration: at most %v", MaxDuration)
	}
	if o.Rate == 0 {
		o.Rate = 100_000_000
	}
	if o.PacketSize == 0 {
		o.PacketSize = 1200
	}
	var mode byte
	switch {
	case o.Protocol == "tcp" && !o.Reverse:
		mode = modeTCPUp
	case o.Protocol == "tcp":
		mode = modeTCPDown
	case o.Protocol == "udp" && !o.Reverse:
		mode = modeUDPUp
	case o.Protocol == "udp":
		mode = modeUDPDown
	default:
		return nil, fmt.Errorf("protocol %q: want tcp or udp", o.Protocol)
	}
	if mode >= modeUDPUp && (o.PacketSize < MinPacket || o.PacketSize > MaxPacket || o.Rate > MaxRate) {
		return nil, fmt.Errorf("packet_size must be %d-%d and rate at most %d", MinPacket, MaxPacket, uint64(MaxRate))
	}
	var tb [8]byte
	_, _ = rand.Read(tb[:])
	req := request{mode: mode, duration: o.Duration, rate: o.Rate, size: uint32(o.PacketSize), token: binary.BigEndian.Uint64(tb[:])}

	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	c, err := dial(dctx, "tcp", peer)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("connect to peer: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	_ = c.SetDeadline(time.Now().Add(o.Duration + 15*time.Second))
	if _, err := c.Write(req.marshal()); err != nil {
		return nil, fmt.Errorf("send request: %w", err)
	}
	reply := make([]byte, replyLen)
	if _, err := io.ReadFull(c, reply); err != nil {
		return nil, fmt.Errorf("read reply: %w", err)
	}
	switch reply[0] {
	case 0:
	case 2:
		return nil, errors.New("peer is busy")
	case 3:
		return nil, errors.New("peer refused: we are not in its allowlist")
	default:
		return nil, errors.New("peer refused the test")
	}
	udpPort := int(binary.BigEndian.Uint16(reply[2:]))
	host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	udpAddr := net.JoinHostPort(host, strconv.Itoa(udpPort))

	switch mode {
	case modeTCPUp:
		return tcpUp(ctx, c, o)
	case modeTCPDown:
		return tcpDown(c)
	case modeUDPUp:
		return udpUp(ctx, dial, c, udpAddr, req, o)
	default:
		return udpDown(ctx, dial, c, udpAddr, req, o)
	}
}

func tcpUp(ctx context.Context, c net.Conn, o Options) (*Result, error) {
	buf := make([]byte, 128<<10)
	end := time.Now().Add(o.Duration)
	for time.Now().Before(end) {
		if _, err := c.Write(buf); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("send: %w", err)
		}
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	out := make([]byte, 16)
	if _, err := io.ReadFull(c, out); err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	return rate(binary.BigEndian.Uint64(out), time.Duration(binary.BigEndian.Uint64(out[8:]))), nil
}

func tcpDown(c net.Conn) (*Result, error) {
	n, el, err := drain(c)
	if err != nil {
		return nil, fmt.Errorf("receive: %w", err)
	}
	return rate(n, el), nil
}

// drain reads c to its end and reports the bytes and the time from the
// first byte to the end (0 when nothing came).
func drain(c net.Conn) (n uint64, elapsed time.Duration, err error) {
	buf := make([]byte, 128<<10)
	var start time.Time
	for {
		k, err := c.Read(buf)
		if k > 0 {
			if start.IsZero() {
				start = time.Now()
			}
			n += uint64(k)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, 0, err
		}
	}
	if start.IsZero() {
		return 0, 0, nil
	}
	return n, time.Since(start), nil
}

func udpUp(ctx context.Context, dial DialFunc, c net.Conn, addr string, req request, o Options) (*Result, error) {
	u, err := dial(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("udp: %w", err)
	}
	setBuffers(u)
	// Acknowledgements come back on the same socket; the reader ends when
	// it closes.
	acksDone := make(chan struct{})
	defer func() { u.Close(); <-acksDone }()
	go func() {
		defer close(acksDone)
		b := make([]byte, 256)
		for {
			n, err := u.Read(b)
			if err != nil {
				return
			}
			if typ, tok, recv, high, ok := parseDatagram(b[:n]); ok && typ == dgAck && tok == req.token && o.OnProgress != nil {
				o.OnProgress(fmt.Sprintf("peer acknowledged %d datagrams (highest seq %d)", recv, high))
			}
		}
	}()
	buf := make([]byte, o.PacketSize)
	stop := make(chan struct{})
	cancelStop := context.AfterFunc(ctx, func() { close(stop) })
	defer cancelStop()
	sent := pace(stop, o.Duration, o.Rate, o.PacketSize, func(seq uint64) error {
		putDatagram(buf, dgData, req.token, seq, uint64(time.Now().UnixNano()))
		_, err := u.Write(buf)
		return err
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	nb := make([]byte, 8)
	binary.BigEndian.PutUint64(nb, sent)
	if _, err := c.Write(nb); err != nil {
		return nil, fmt.Errorf("send count: %w", err)
	}
	out := make([]byte, 48)
	if _, err := io.ReadFull(c, out); err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	v := func(i int) uint64 { return binary.BigEndian.Uint64(out[8*i:]) }
	r := rate(v(1), time.Duration(v(4)))
	r.PacketsSent = sent
	r.Reordered = v(2)
	r.Jitter = time.Duration(v(3))
	lossOf(r, sent, v(0))
	return r, nil
}

func udpDown(ctx context.Context, dial DialFunc, c net.Conn, addr string, req request, o Options) (*Result, error) {
	u, err := dial(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("udp: %w", err)
	}
	setBuffers(u)
	defer u.Close()
	stop := context.AfterFunc(ctx, func() { u.Close() })
	defer stop()
	hello := make([]byte, dgHeader)
	putDatagram(hello, dgHello, req.token, 0, 0)
	ack := make([]byte, dgHeader)

	// The sender's count arrives on the control connection when it ends.
	sentCh := make(chan uint64, 1)
	go func() {
		nb := make([]byte, 8)
		if _, err := io.ReadFull(c, nb); err != nil {
			sentCh <- 0
			return
		}
		sentCh <- binary.BigEndian.Uint64(nb)
	}()

	var st udpStats
	buf := make([]byte, MaxPacket+64)
	var sent uint64
	gotSent := false
	var drainUntil time.Time
	lastAck := time.Now()
	for {
		dl := time.Now().Add(50 * time.Millisecond)
		if gotSent && dl.After(drainUntil) {
			dl = drainUntil
		}
		_ = u.SetReadDeadline(dl)
		n, err := u.Read(buf)
		now := time.Now()
		if err == nil {
			if typ, tok, seq, ts, ok := parseDatagram(buf[:n]); ok && typ == dgData && tok == req.token {
				st.add(seq, int64(ts), n, now)
			}
			if now.Sub(lastAck) >= ackEvery {
				lastAck = now
				putDatagram(ack, dgAck, req.token, st.received, st.highest)
				_, _ = u.Write(ack)
			}
		} else if ctx.Err() != nil {
			return nil, ctx.Err()
		} else if !st.seenAny && !gotSent {
			_, _ = u.Write(hello) // until data flows
		}
		if !gotSent {
			select {
			case sent = <-sentCh:
				gotSent = true
				drainUntil = time.Now().Add(grace)
			default:
			}
		}
		if gotSent && !time.Now().Before(drainUntil) {
			break
		}
	}
	r := rate(st.bytes, st.duration())
	r.PacketsSent = sent
	r.Reordered = st.reordered
	r.Jitter = time.Duration(st.jitter)
	lossOf(r, sent, st.received)
	return r, nil
}

func rate(bytes uint64, d time.Duration) *Result {
	r := &Result{Bytes: bytes, Duration: d}
	if d > 0 {
		r.BitsPerSecond = float64(bytes) * 8 / d.Seconds()
	}
	return r
}

func lossOf(r *Result, sent, received uint64) {
	if sent > received {
		r.PacketsLost = sent - received
	}
	if sent > 0 {
		r.LossPercent = 100 * float64(r.PacketsLost) / float64(sent)
	}
}
