package bandwidth

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// MaxSessions bounds concurrent tests a server runs.
const MaxSessions = 8

// Server is the far end of bandwidth tests: a TCP listener for control and
// bulk data and a UDP socket on the same port for datagrams.
type Server struct {
	ln    net.Listener
	pc    net.PacketConn
	log   *slog.Logger
	allow func(netip.Addr) bool

	mu       sync.Mutex
	sessions map[uint64]*udpSession
	active   int
	conns    map[net.Conn]struct{}
}

type udpSession struct {
	peer    netip.Addr // the control connection's peer
	mode    byte
	stats   udpStats      // udp-up receiver stats
	dst     chan net.Addr // udp-down: where hello came from (first only)
	dstOnce sync.Once
}

// NewServer serves on ln (TCP) and pc (UDP); Serve runs it. allow, when
// set, decides which client addresses may run tests (others are refused
// with status 3 before any data flows).
func NewServer(ln net.Listener, pc net.PacketConn, log *slog.Logger, allow func(netip.Addr) bool) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	setBuffers(pc)
	return &Server{ln: ln, pc: pc, log: log, allow: allow, sessions: map[uint64]*udpSession{}, conns: map[net.Conn]struct{}{}}
}

// Serve accepts tests until ctx ends; it closes both sockets on return.
func (s *Server) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() {
		s.ln.Close()
		s.pc.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	defer stop()
	wg.Add(1)
	go func() { defer wg.Done(); s.readUDP() }()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.mu.Lock()
		if s.active >= MaxSessions {
			s.mu.Unlock()
			_, _ = c.Write([]byte{2, 0, 0, 0}) // busy
			c.Close()
			continue
		}
		s.active++
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				c.Close()
				s.mu.Lock()
				s.active--
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			if err := s.handle(ctx, c); err != nil {
				s.log.Debug("bandwidth test ended", "peer", c.RemoteAddr(), "err", err)
			}
		}()
	}
}

func (s *Server) handle(ctx context.Context, c net.Conn) error {
	if s.allow != nil && !s.allow(addrOf(c.RemoteAddr())) {
		_, _ = c.Write([]byte{3, 0, 0, 0})
		return fmt.Errorf("client %s not in the allowlist", c.RemoteAddr())
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, requestLen)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	req, err := parseRequest(b)
	if err != nil {
		_, _ = c.Write([]byte{1, 0, 0, 0})
		return err
	}
	reply := []byte{0, 0, 0, 0}
	if ua, ok := s.pc.LocalAddr().(*net.UDPAddr); ok {
		binary.BigEndian.PutUint16(reply[2:], uint16(ua.Port))
	}
	// Every phase is bounded: the test, plus slack for the tail.
	_ = c.SetDeadline(time.Now().Add(req.duration + 10*time.Second))
	peer := addrOf(c.RemoteAddr())
	var sess *udpSession
	if req.mode == modeUDPUp || req.mode == modeUDPDown {
		sess = &udpSession{peer: peer, mode: req.mode, dst: make(chan net.Addr, 1)}
		s.mu.Lock()
		if _, dup := s.sessions[req.token]; dup {
			s.mu.Unlock()
			_, _ = c.Write([]byte{1, 0, 0, 0})
			return errors.New("duplicate token")
		}
		s.sessions[req.token] = sess
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.sessions, req.token)
			s.mu.Unlock()
		}()
	}
	if _, err := c.Write(reply); err != nil {
		return err
	}
	switch req.mode {
	case modeTCPUp:
		n, el, err := drain(c)
		if err != nil {
			return err
		}
		out := make([]byte, 16)
		binary.BigEndian.PutUint64(out, n)
		binary.BigEndian.PutUint64(out[8:], uint64(el))
		_, err = c.Write(out)
		return err
	case modeTCPDown:
		buf := make([]byte, 128<<10)
		end := time.Now().Add(req.duration)
		for time.Now().Before(end) && ctx.Err() == nil {
			if _, err := c.Write(buf); err != nil {
				return err
			}
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 1)) // wait for the client's close
		return nil
	case modeUDPUp:
		nb := make([]byte, 8)
		if _, err := io.ReadFull(c, nb); err != nil {
			return err
		}
		time.Sleep(grace) // datagrams still in flight
		s.mu.Lock()
		st := sess.stats
		s.mu.Unlock()
		out := make([]byte, 48)
		for i, v := range []uint64{st.received, st.bytes, st.reordered, uint64(st.jitter), uint64(st.duration()), st.highest} {
			binary.BigEndian.PutUint64(out[8*i:], v)
		}
		_, err := c.Write(out)
		return err
	default: // modeUDPDown
		var dst net.Addr
		select {
		case dst = <-sess.dst:
		case <-time.After(5 * time.Second):
			return errors.New("no hello datagram")
		case <-ctx.Done():
			return ctx.Err()
		}
		buf := make([]byte, req.size)
		stop := make(chan struct{})
		cancelStop := context.AfterFunc(ctx, func() { close(stop) })
		defer cancelStop()
		sent := pace(stop, req.duration, req.rate, int(req.size), func(seq uint64) error {
			putDatagram(buf, dgData, req.token, seq, uint64(time.Now().UnixNano()))
			_, err := s.pc.WriteTo(buf, dst)
			return err
		})
		out := make([]byte, 8)
		binary.BigEndian.PutUint64(out, sent)
		if _, err := c.Write(out); err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 1))
		return nil
	}
}

// readUDP dispatches datagrams to sessions by token until the socket closes.
func (s *Server) readUDP() {
	buf := make([]byte, MaxPacket+64)
	ack := make([]byte, dgHeader)
	lastAck := map[uint64]time.Time{}
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		now := time.Now()
		typ, token, seq, ts, ok := parseDatagram(buf[:n])
		if !ok {
			continue
		}
		s.mu.Lock()
		sess := s.sessions[token]
		if sess == nil || addrOf(from) != sess.peer {
			s.mu.Unlock()
			continue // unknown token, or not from the control peer
		}
		switch {
		case typ == dgData && sess.mode == modeUDPUp:
			sess.stats.add(seq, int64(ts), n, now)
			if now.Sub(lastAck[token]) >= ackEvery {
				lastAck[token] = now
				putDatagram(ack, dgAck, token, sess.stats.received, sess.stats.highest)
				_, _ = s.pc.WriteTo(ack, from)
			}
		case typ == dgHello && sess.mode == modeUDPDown:
			sess.dstOnce.Do(func() { sess.dst <- from })
		}
		if len(lastAck) > 4*MaxSessions {
			clear(lastAck)
		}
		s.mu.Unlock()
	}
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}
