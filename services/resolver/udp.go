package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"github.com/miekg/dns"
)

// maxSlowInflight bounds the goroutines answering UDP queries off the fast
// path (forwarding, NXDOMAIN, errors) per socket; beyond it queries drop.
const maxSlowInflight = 1024

// udpServer serves DNS on one UDP socket. One goroutine reads; plain
// queries for precomputed answers and forwarding-cache hits are answered
// inline from the raw packet without unpacking it; everything else is
// unpacked with miekg/dns and answered on a bounded goroutine.
type udpServer struct {
	s      *server
	pc     *net.UDPConn
	slow   chan struct{}
	wg     sync.WaitGroup
	counts *queryCounts // this reader's fast-path query counts
}

func newUDPServer(s *server, pc *net.UDPConn) *udpServer {
	return &udpServer{s: s, pc: pc, slow: make(chan struct{}, maxSlowInflight), counts: s.met.newCounts()}
}

// batchSize is how many datagrams one recvmmsg/sendmmsg call moves.
const batchSize = 32

// maxDatagram is the size of each receive buffer and the capacity of each
// reply buffer.
const maxDatagram = 4096

// batchConn reads and writes several datagrams per system call
// (recvmmsg/sendmmsg on Linux, one at a time elsewhere). Received datagrams
// and replies live in slots owned by the batchConn and reused across
// calls; a reply is addressed to the sender of a received datagram.
type batchConn interface {
	// read receives up to batchSize datagrams, blocking until at least
	// one arrives or the read deadline passes, and returns how many.
	read() (int, error)
	// datagram returns received datagram i and its sender; from is
	// invalid when the sender is not an IP address.
	datagram(i int) (pkt []byte, from netip.AddrPort)
	// replyBuf returns reply slot k's buffer, empty, to append to.
	replyBuf(k int) []byte
	// setReply fills reply slot k with b, addressed to the sender of
	// received datagram i (i >= k, and valid until the next read).
	setReply(k, i int, b []byte)
	// write sends reply slots [0, k).
	write(k int) error
}

// serve reads and answers until ctx ends, then waits for slow answers.
func (u *udpServer) serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = u.pc.SetReadDeadline(time.Now()) })
	defer stop()
	defer u.wg.Wait()
	bc, err := newBatchConn(u.pc)
	if err != nil {
		return fmt.Errorf("udp batch conn: %w", err)
	}
	name := make([]byte, 0, 256)
	for {
		n, err := bc.read()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			continue // a transient error (an ICMP error queued on the socket)
		}
		k := 0
		now := time.Now()
		for i := range n {
			pkt, from := bc.datagram(i)
			if !from.IsValid() || len(pkt) < hdrLen {
				continue
			}
			client := from.Addr().Unmap()
			slip := false
			if u.s.rrl != nil {
				switch u.s.rrl.check(client, now) {
				case rrlDrop:
					u.s.met.rrlDrop.Inc()
					continue
				case rrlSlip:
					u.s.met.rrlSlip.Inc()
					slip = true
				}
			}
			if !slip {
				if b, ok := u.s.fast(bc.replyBuf(k), pkt, client, name, u.counts); ok {
					bc.setReply(k, i, b)
					k++
					continue
				}
			}
			u.slowPath(pkt, from, slip, now)
		}
		if k > 0 {
			// An error means the socket is closing, or the kernel dropped
			// the replies: UDP.
			_ = bc.write(k)
			u.s.met.latency[protoUDP].observe(time.Since(now), uint64(k))
		}
	}
}

func (u *udpServer) slowPath(pkt []byte, from netip.AddrPort, slip bool, received time.Time) {
	select {
	case u.slow <- struct{}{}:
	default:
		u.s.met.overloaded.Inc() // drop, the client retries
		return
	}
	cp := append([]byte(nil), pkt...)
	u.wg.Add(1)
	go func() {
		defer func() { <-u.slow; u.wg.Done() }()
		if out := u.s.serveWire(cp, from.Addr().Unmap(), true, slip); out != nil {
			_, _ = u.pc.WriteToUDPAddrPort(out, from)
			u.s.met.latency[protoUDP].observe(time.Since(received), 1)
		}
	}()
}

// fast answers a plain query (one question, class IN, at most an OPT) for
// a name with a precomputed answer or a forwarding-cache entry, straight
// from the packet, and counts it in qc. ok is false when the query needs
// the full path.
func (s *server) fast(dst, pkt []byte, client netip.Addr, name []byte, qc *queryCounts) (out []byte, ok bool) {
	if pkt[2]&0xF8 != 0 { // QR set or an opcode other than QUERY
		return dst, false
	}
	if binary.BigEndian.Uint16(pkt[4:]) != 1 || binary.BigEndian.Uint16(pkt[6:]) != 0 || binary.BigEndian.Uint16(pkt[8:]) != 0 {
		return dst, false
	}
	ar := binary.BigEndian.Uint16(pkt[10:])
	if ar > 1 {
		return dst, false
	}
	name, off, ok := lowerName(pkt, name[:0])
	if !ok || off+4 > len(pkt) {
		return dst, false
	}
	qtype := binary.BigEndian.Uint16(pkt[off:])
	if binary.BigEndian.Uint16(pkt[off+2:]) != dns.ClassINET {
		return dst, false
	}
	switch qtype {
	case dns.TypeOPT, dns.TypeAXFR, dns.TypeIXFR:
		return dst, false
	}
	rep := reply{id: binary.BigEndian.Uint16(pkt), rd: pkt[2]&flagRD != 0, qwire: pkt[hdrLen:off], qtype: qtype, qclass: dns.ClassINET, maxSize: minUDPSize}
	off += 4
	if ar == 1 {
		// OPT: root owner, type 41, class = UDP size, TTL = ext rcode,
		// version, flags; rdata skipped.
		if off+optRRLen > len(pkt) || pkt[off] != 0 || binary.BigEndian.Uint16(pkt[off+1:]) != dns.TypeOPT || pkt[off+6] != 0 {
			return dst, false
		}
		rdlen := int(binary.BigEndian.Uint16(pkt[off+9:]))
		if off+optRRLen+rdlen != len(pkt) {
			return dst, false
		}
		rep.edns, rep.do = true, pkt[off+7]&0x80 != 0
		rep.maxSize = min(max(int(binary.BigEndian.Uint16(pkt[off+3:])), minUDPSize), advertisedUDPSize)
	} else if off != len(pkt) {
		return dst, false
	}
	rep.ra = s.recursionAllowed(client)
	// The name is only looked up, never kept: no copy needed.
	key := unsafe.String(unsafe.SliceData(name), len(name))
	a := s.auth.Load()
	var p *prepared
	if n := a.nodes[key]; n != nil {
		p = n.answer(qtype)
	}
	if ours := p != nil || a.zoneOf(key) != nil; ours {
		if p == nil {
			var err error
			if p, err = a.synthesized(key, qtype); err != nil {
				return dst, false // SERVFAIL, the full way
			}
		}
		out, err := p.appendTo(dst, &rep)
		if err != nil {
			return dst, false
		}
		qc.count(protoUDP, qtype, int(out[3]&0x0F))
		return out, true
	}
	if !rep.ra || !rep.rd {
		return dst, false // refused (see respond)
	}
	p, elapsed := s.cache.get(key, qtype, time.Now())
	if p == nil {
		return dst, false
	}
	rep.elapsed = elapsed
	out, err := p.appendTo(dst, &rep)
	if err != nil {
		return dst, false
	}
	qc.count(protoUDP, qtype, int(out[3]&0x0F))
	return out, true
}

// lowerName reads the uncompressed question name at offset 12 into name,
// lower-cased and in presentation form, and returns the offset after it.
// ok is false for names that would need escapes in presentation form.
func lowerName(pkt, name []byte) ([]byte, int, bool) {
	off := hdrLen
	for {
		if off >= len(pkt) {
			return name, 0, false
		}
		l := int(pkt[off])
		if l == 0 {
			off++
			break
		}
		if l > 63 || off+1+l > len(pkt) {
			return name, 0, false
		}
		for _, c := range pkt[off+1 : off+1+l] {
			switch {
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '*', c == '/':
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			default:
				return name, 0, false
			}
			name = append(name, c)
		}
		name = append(name, '.')
		off += 1 + l
	}
	if len(name) == 0 {
		name = append(name, '.')
	}
	return name, off, true
}

// serveWire answers a raw query the full way: miekg/dns unpacks it, and
// the header checks of acceptQuery apply. It returns nil to send nothing.
func (s *server) serveWire(pkt []byte, client netip.Addr, udp, slip bool) []byte {
	proto := protoTCP
	if udp {
		proto = protoUDP
	}
	h := dns.Header{
		Id:      binary.BigEndian.Uint16(pkt),
		Bits:    binary.BigEndian.Uint16(pkt[2:]),
		Qdcount: binary.BigEndian.Uint16(pkt[4:]),
		Ancount: binary.BigEndian.Uint16(pkt[6:]),
		Nscount: binary.BigEndian.Uint16(pkt[8:]),
		Arcount: binary.BigEndian.Uint16(pkt[10:]),
	}
	var out []byte
	switch acceptQuery(h) {
	case dns.MsgIgnore:
		return nil
	case dns.MsgReject:
		out = headerReply(pkt, dns.RcodeFormatError)
	case dns.MsgRejectNotImplemented:
		out = headerReply(pkt, dns.RcodeNotImplemented)
	}
	if out != nil {
		s.met.shared().count(proto, rawQtype(pkt), replyRcode(out))
		return out
	}
	m := new(dns.Msg)
	if err := m.Unpack(pkt); err != nil {
		out = headerReply(pkt, dns.RcodeFormatError)
		s.met.shared().count(proto, rawQtype(pkt), dns.RcodeFormatError)
		return out
	}
	var qtype uint16
	if len(m.Question) > 0 {
		qtype = m.Question[0].Qtype
	}
	if out, ok := s.serveWireSpecial(pkt, m, client, udp); ok {
		return out
	}
	out, _, err := s.respond(nil, m, client, udp, slip)
	if err != nil {
		s.log.Debug("answering", "err", err)
		out = headerReply(pkt, dns.RcodeServerFailure)
	}
	s.met.shared().count(proto, qtype, replyRcode(out))
	return out
}

// rawQtype is the type of a raw query's first question, or 0 when the
// packet holds none that parses.
func rawQtype(pkt []byte) uint16 {
	if len(pkt) < hdrLen || binary.BigEndian.Uint16(pkt[4:]) == 0 {
		return 0
	}
	off, err := skipName(pkt, hdrLen)
	if err != nil || off+2 > len(pkt) {
		return 0
	}
	return binary.BigEndian.Uint16(pkt[off:])
}

// headerReply is a reply of header only: the query's ID, opcode and RD,
// with rcode.
func headerReply(pkt []byte, rcode int) []byte {
	out := make([]byte, hdrLen)
	copy(out, pkt[:4])
	out[2] = flagQR | pkt[2]&0x79 // opcode and RD kept
	out[3] = byte(rcode & 0xF)
	return out
}
