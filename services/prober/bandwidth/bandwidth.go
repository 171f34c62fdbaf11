// Package bandwidth measures throughput between two probers, like iperf3:
// TCP bulk transfer and paced UDP with loss, jitter and reordering, in
// either direction. Every prober serves the far end (Server) on its
// bandwidth port; Run is the near end.
//
// Protocol. A TCP control connection carries a 32-byte request
//
//	magic "SBBW" | version 1 | mode | 2 reserved | duration ms u32 |
//	rate bit/s u64 | packet size u32 | token u64        (big-endian)
//
// answered by 4 bytes: status (0 = ok) | reserved | UDP port u16.
//
//   - tcp-up: the client writes for the duration, then half-closes; the
//     server answers with bytes u64 | nanoseconds u64 it measured.
//   - tcp-down: the server writes for the duration, then half-closes; the
//     client measures.
//   - udp-up: the client sends data datagrams to the UDP port; the server
//     acknowledges over UDP every 100 ms (received count, highest seq);
//     at the end the client writes the count it sent (u64) on the control
//     connection and the server answers with its report (6 × u64: received,
//     bytes, reordered, jitter ns, duration ns, highest seq).
//   - udp-down: the client sends hello datagrams until data flows, the
//     server sends data to the hello's source (which must be the control
//     connection's peer address), then writes the count it sent (u64) on
//     the control connection; the client acknowledges over UDP and measures.
//
// Datagrams start with a 32-byte header: type (1 data, 2 ack, 3 hello) |
// 7 reserved | token u64 | seq u64 (ack: received count) | send time ns
// u64 (ack: highest seq).
package bandwidth

import (
	"encoding/binary"
	"errors"
	"time"
)

// Modes of a test, as carried in the request.
const (
	modeTCPUp   = 1
	modeTCPDown = 2
	modeUDPUp   = 3
	modeUDPDown = 4
)

// Datagram types.
const (
	dgData  = 1
	dgAck   = 2
	dgHello = 3
)

const (
	requestLen = 32
	replyLen   = 4
	dgHeader   = 32
	// MaxDuration bounds one test.
	MaxDuration = 60 * time.Second
	// MinPacket is the smallest UDP datagram (its header).
	MinPacket = dgHeader
	// MaxPacket is the largest UDP datagram.
	MaxPacket = 65000
	// MaxRate bounds the UDP rate (bit/s).
	MaxRate = 100_000_000_000
	// grace is how long a receiver waits for datagrams still in flight.
	grace = 250 * time.Millisecond
	// ackEvery is the UDP acknowledgement period.
	ackEvery = 100 * time.Millisecond
)

var magic = [4]byte{'S', 'B', 'B', 'W'}

type request struct {
	mode     byte
	duration time.Duration
	rate     uint64
	size     uint32
	token    uint64
}

func (r request) marshal() []byte {
	b := make([]byte, requestLen)
	copy(b, magic[:])
	b[4] = 1
	b[5] = r.mode
	binary.BigEndian.PutUint32(b[8:], uint32(r.duration/time.Millisecond))
	binary.BigEndian.PutUint64(b[12:], r.rate)
	binary.BigEndian.PutUint32(b[20:], r.size)
	binary.BigEndian.PutUint64(b[24:], r.token)
	return b
}

func parseRequest(b []byte) (request, error) {
	if len(b) != requestLen || [4]byte(b[:4]) != magic {
		return request{}, errors.New("not a bandwidth request")
	}
	if b[4] != 1 {
		return request{}, errors.New("unsupported version")
	}
	r := request{
		mode:     b[5],
		duration: time.Duration(binary.BigEndian.Uint32(b[8:])) * time.Millisecond,
		rate:     binary.BigEndian.Uint64(b[12:]),
		size:     binary.BigEndian.Uint32(b[20:]),
		token:    binary.BigEndian.Uint64(b[24:]),
	}
	if r.mode < modeTCPUp || r.mode > modeUDPDown {
		return request{}, errors.New("unknown mode")
	}
	if r.duration <= 0 || r.duration > MaxDuration {
		return request{}, errors.New("duration out of range")
	}
	if r.mode >= modeUDPUp && (r.size < MinPacket || r.size > MaxPacket || r.rate == 0 || r.rate > MaxRate) {
		return request{}, errors.New("udp size or rate out of range")
	}
	return r, nil
}

// udpStats accumulates a UDP receiver's view (RFC 3550 jitter).
type udpStats struct {
	received, bytes, reordered uint64
	highest                    uint64
	seenAny                    bool
	first, last                time.Time
	jitter                     float64 // ns
	prevTransit                int64
}

func (s *udpStats) add(seq uint64, sentNs int64, n int, now time.Time) {
	s.received++
	s.bytes += uint64(n)
	if !s.seenAny {
		s.first = now
	}
	s.last = now
	if s.seenAny && seq < s.highest {
		s.reordered++
	} else {
		s.highest = seq
	}
	transit := now.UnixNano() - sentNs
	if s.seenAny {
		d := transit - s.prevTransit
		if d < 0 {
			d = -d
		}
		s.jitter += (float64(d) - s.jitter) / 16
	}
	s.prevTransit = transit
	s.seenAny = true
}

func (s *udpStats) duration() time.Duration {
	if s.received < 2 {
		return 0
	}
	return s.last.Sub(s.first)
}

func putDatagram(b []byte, typ byte, token, a, c uint64) {
	b[0] = typ
	clear(b[1:8])
	binary.BigEndian.PutUint64(b[8:], token)
	binary.BigEndian.PutUint64(b[16:], a)
	binary.BigEndian.PutUint64(b[24:], c)
}

func parseDatagram(b []byte) (typ byte, token, a, c uint64, ok bool) {
	if len(b) < dgHeader {
		return 0, 0, 0, 0, false
	}
	return b[0], binary.BigEndian.Uint64(b[8:]), binary.BigEndian.Uint64(b[16:]), binary.BigEndian.Uint64(b[24:]), true
}

// pace sends datagrams of size bytes at rate bit/s for d, calling write
// with seq numbers from 0; it returns how many it sent.
func pace(stop <-chan struct{}, d time.Duration, rate uint64, size int, write func(seq uint64) error) uint64 {
	perSec := float64(rate) / float64(8*size)
	start := time.Now()
	var sent uint64
	for {
		el := time.Since(start)
		if el >= d {
			return sent
		}
		due := uint64(el.Seconds() * perSec)
		for burst := 0; sent <= due && burst < 64; burst++ {
			if write(sent) != nil {
				break
			}
			sent++
		}
		select {
		case <-stop:
			return sent
		default:
		}
		if sent > due {
			time.Sleep(200 * time.Microsecond)
		}
	}
}

// socketBuffer is the UDP buffer size asked for (the kernel caps it at
// net.core.rmem_max / wmem_max).
const socketBuffer = 4 << 20

// setBuffers enlarges a UDP socket's buffers so bursts are not dropped by
// the receiving host before the receiver reads them.
func setBuffers(c any) {
	if b, ok := c.(interface{ SetReadBuffer(int) error }); ok {
		_ = b.SetReadBuffer(socketBuffer)
	}
	if b, ok := c.(interface{ SetWriteBuffer(int) error }); ok {
		_ = b.SetWriteBuffer(socketBuffer)
	}
}
