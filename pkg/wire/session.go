package wire

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Session multiplexes streams over one connection. Create one with Client
// or Server; Close, Shutdown or a connection failure ends it. All methods
// are safe for concurrent use.
type Session struct {
	conn   net.Conn
	cfg    Config
	client bool

	// Negotiated in the handshake, then read-only.
	version      byte
	peerMaxFrame int
	peerWindow   int
	compression  Compression

	fr    *frameReader // owned by the handshake, then by the read loop
	wakeq []*Stream    // readers to wake before the next read; the read loop's

	wmu      sync.Mutex // guards wbuf, iov, trailer, wscratch and the connection's write side
	wbuf     []byte     // frames waiting for the last writer out to flush
	writev   bool       // conn takes net.Buffers in one syscall
	iov      [3][]byte
	bufs     net.Buffers
	trailer  [TrailerSize]byte
	writers  atomic.Int32 // writers holding or waiting for wmu
	wscratch [16]byte
	armedAt  time.Time // when the write deadline was last set by armWrite

	mu         sync.Mutex
	streams    map[uint32]*Stream
	nextID     uint32
	lastPeerID uint32
	goAwaySent bool
	goAwayRecv bool
	pings      map[uint64]chan struct{}
	pingSeq    uint64
	streamGone chan struct{} // signalled when a stream leaves streams

	acceptCh  chan *Stream
	ctrlCh    chan ctrlFrame
	overload  atomic.Bool // a reply could not be queued
	done      chan struct{}
	closeOnce sync.Once
	err       error         // set before done is closed
	epoch     time.Time     // start of the session's clock
	lastRecv  atomic.Int64  // when the last frame arrived, since epoch
	wrote     chan struct{} // signalled after each completed write to conn
	wg        sync.WaitGroup
}

// Client runs the client handshake on conn and starts a session. It takes
// ownership of conn: conn is closed when the session ends or the handshake
// fails. Wrap conn with crypto/tls first for an encrypted session.
func Client(conn net.Conn, cfg Config) (*Session, error) {
	return newSession(conn, cfg, true)
}

// Server runs the server handshake on conn and starts a session; see Client.
func Server(conn net.Conn, cfg Config) (*Session, error) {
	return newSession(conn, cfg, false)
}

func newSession(conn net.Conn, cfg Config, client bool) (*Session, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		conn.Close()
		return nil, err
	}
	s := &Session{
		conn:       conn,
		cfg:        cfg,
		client:     client,
		fr:         newFrameReader(conn),
		streams:    make(map[uint32]*Stream),
		pings:      make(map[uint64]chan struct{}),
		streamGone: make(chan struct{}, 1),
		acceptCh:   make(chan *Stream, cfg.AcceptBacklog),
		ctrlCh:     make(chan ctrlFrame, ctrlQueueSize),
		done:       make(chan struct{}),
		wrote:      make(chan struct{}, 1),
		epoch:      time.Now(),
	}
	if client {
		s.nextID = 1
	} else {
		s.nextID = 2
	}
	if err := conn.SetDeadline(time.Now().Add(cfg.HandshakeTimeout)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("wire: handshake: %w", err)
	}
	if client {
		err = s.clientHandshake()
	} else {
		err = s.serverHandshake()
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("wire: handshake: %w", err)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("wire: handshake: %w", err)
	}
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		s.writev = true
	}
	if s.writev {
		// Payloads from directWriteMin up bypass the buffer, which
		// batches the small frames around them.
		s.wbuf = make([]byte, 0, 16<<10)
	} else {
		// Room for a full frame plus small frames batched around it.
		s.wbuf = make([]byte, 0, s.peerMaxFrame+Overhead+16<<10)
	}
	s.wg.Add(2)
	go s.readLoop()
	go s.ctrlLoop()
	if cfg.KeepAliveInterval > 0 {
		s.wg.Add(1)
		go s.keepAlive()
	}
	return s, nil
}

// IsClient reports whether this is the client side.
func (s *Session) IsClient() bool { return s.client }

// Compression returns the negotiated DATA compression (possibly none).
func (s *Session) Compression() Compression { return s.compression }

// PeerMaxFrameSize returns the largest payload the peer accepts.
func (s *Session) PeerMaxFrameSize() int { return s.peerMaxFrame }

// LocalAddr returns the connection's local address.
func (s *Session) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// RemoteAddr returns the connection's remote address.
func (s *Session) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Done returns a channel closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns why the session ended, or nil while it runs.
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// NumStreams returns the number of streams the session tracks.
func (s *Session) NumStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// Open opens a stream to the named service. It sends OPEN and returns at
// once: data may be written immediately, and a refusal by the peer (for
// example NO_SUCH_SERVICE) surfaces as a *StreamError from Read or Write.
func (s *Session) Open(ctx context.Context, service string) (*Stream, error) {
	if !ValidServiceName(service) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidService, service)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The id is allocated under the write lock so OPEN frames leave in
	// increasing id order.
	s.writers.Add(1)
	s.wmu.Lock()
	s.mu.Lock()
	var err error
	switch {
	case s.isDone():
		err = s.closedErr()
	case s.goAwaySent || s.goAwayRecv:
		err = ErrGoAway
	case len(s.streams) >= s.cfg.MaxStreams:
		err = ErrTooManyStreams
	case s.nextID > MaxStreamID:
		err = ErrStreamIDsExhausted
	}
	if err != nil {
		s.mu.Unlock()
		s.writers.Add(-1)
		s.wmu.Unlock()
		return nil, err
	}
	id := s.nextID
	s.nextID += 2
	st := newStream(s, id, service)
	s.streams[id] = st
	s.mu.Unlock()
	if err := s.endWrite(s.writeLocked(FrameOpen, 0, id, []byte(service))); err != nil {
		s.removeStream(id)
		return nil, err
	}
	return st, nil
}

// Accept waits for a stream opened by the peer. The stream's Service names
// what the peer asked for; refuse it with Reset(CodeNoSuchService) or
// similar.
func (s *Session) Accept(ctx context.Context) (*Stream, error) {
	select {
	case st := <-s.acceptCh:
		return st, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		// Streams that arrived before the end are still handed out.
		select {
		case st := <-s.acceptCh:
			return st, nil
		default:
		}
		return nil, s.closedErr()
	}
}

// Ping sends a PING and waits for its PONG, returning the round trip.
func (s *Session) Ping(ctx context.Context) (time.Duration, error) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.pingSeq++
	seq := s.pingSeq
	s.pings[seq] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pings, seq)
		s.mu.Unlock()
	}()
	start := time.Now()
	if err := s.writeU64(FramePing, seq); err != nil {
		return 0, err
	}
	select {
	case <-ch:
		return time.Since(start), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-s.done:
		return 0, s.closedErr()
	}
}

// GoAway tells the peer to open no more streams. With CodeNoError the
// streams already open carry on (see Shutdown); with any other code the
// session ends right after the GOAWAY is sent.
func (s *Session) GoAway(code ErrorCode, reason string) error {
	s.mu.Lock()
	s.goAwaySent = true
	last := s.lastPeerID
	s.mu.Unlock()
	err := s.writeGoAway(last, code, reason)
	if code != CodeNoError {
		s.fail(&SessionError{Code: code, Reason: reason})
	}
	return err
}

// Shutdown drains the session gracefully: it sends GOAWAY(NO_ERROR), waits
// until every stream has finished or ctx is done, then closes the session.
func (s *Session) Shutdown(ctx context.Context) error {
	if err := s.GoAway(CodeNoError, "shutdown"); err != nil {
		s.Close()
		return err
	}
	for {
		if s.NumStreams() == 0 {
			return s.Close()
		}
		select {
		case <-s.streamGone:
		case <-s.done:
			return nil
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		}
	}
}

// Close ends the session at once: it sends a best-effort GOAWAY(NO_ERROR)
// when the connection is idle, closes the connection and fails every
// stream's pending and future operations. It never blocks on the network.
func (s *Session) Close() error {
	if s.isDone() {
		return nil
	}
	if s.wmu.TryLock() {
		s.mu.Lock()
		last := s.lastPeerID
		s.mu.Unlock()
		s.disarmWrite()
		s.conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond)) //nolint:errcheck // best effort
		s.wbuf = appendFrameVersion(s.wbuf, s.version, FrameGoAway, 0, 0, AppendGoAway(nil, last, CodeNoError, ""))
		s.conn.Write(s.wbuf) //nolint:errcheck // best effort
		s.wbuf = s.wbuf[:0]
		s.wmu.Unlock()
	}
	s.fail(ErrSessionClosed)
	s.wg.Wait()
	return nil
}

func (s *Session) isDone() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *Session) closedErr() error {
	<-s.done
	if errors.Is(s.err, ErrSessionClosed) {
		return s.err
	}
	return fmt.Errorf("%w: %w", ErrSessionClosed, s.err)
}

// fail ends the session with err: the connection is closed and every
// stream is woken.
func (s *Session) fail(err error) {
	s.closeOnce.Do(func() {
		s.err = err
		close(s.done)
		s.conn.Close()
		s.mu.Lock()
		streams := make([]*Stream, 0, len(s.streams))
		for _, st := range s.streams {
			streams = append(streams, st)
		}
		s.mu.Unlock()
		serr := fmt.Errorf("%w: %w", ErrSessionClosed, err)
		if errors.Is(err, ErrSessionClosed) {
			serr = err
		}
		for _, st := range streams {
			st.sessionEnded(serr)
		}
	})
}

// failCode ends the session after a best-effort GOAWAY with code. The
// GOAWAY gets at most a second (less with a shorter WriteTimeout) to find
// the connection free and leave: a peer that does not read must not hold a
// failing session open for the whole WriteTimeout, and the session ends
// with code whatever becomes of the GOAWAY.
func (s *Session) failCode(code ErrorCode, cause error) {
	s.mu.Lock()
	last := s.lastPeerID
	s.mu.Unlock()
	final := &SessionError{Code: code, Err: cause}
	var se *SessionError
	if errors.As(cause, &se) && !se.Remote && se.Code == code {
		final = se
	}
	reason := ""
	if cause != nil {
		reason = cause.Error()
	}
	if se == final {
		reason = se.Reason
	}
	end := time.Now().Add(min(s.cfg.WriteTimeout, time.Second))
	locked := s.lockWriteWithin(time.Until(end))
	if locked && !s.isDone() {
		s.wbuf = appendFrameVersion(s.wbuf, s.version, FrameGoAway, 0, 0, AppendGoAway(nil, last, code, reason))
		s.disarmWrite()
		s.conn.SetWriteDeadline(end) //nolint:errcheck // best effort
		s.conn.Write(s.wbuf)         //nolint:errcheck // best effort: the session is ending
		s.wbuf = s.wbuf[:0]
	}
	s.fail(final)
	if locked {
		s.wmu.Unlock()
	}
}

// keepAliveStep decides, at time now, what keepalive owes a session whose
// last frame arrived at lastRecv and whose last PING left at lastPing (all
// on the session's clock): a PING once the peer has been silent for
// interval since the later of the two, the end of the session once it has
// been silent for timeout. wait is how long until the next decision is due.
func keepAliveStep(now, lastRecv, lastPing, interval, timeout time.Duration) (ping, expired bool, wait time.Duration) {
	if now-lastRecv >= timeout {
		return false, true, 0
	}
	since := max(lastRecv, lastPing)
	if now-since >= interval {
		ping, since = true, now
	}
	next := min(since+interval, lastRecv+timeout)
	return ping, false, next - now
}

func (s *Session) keepAlive() {
	defer s.wg.Done()
	interval, timeout := s.cfg.KeepAliveInterval, s.cfg.KeepAliveTimeout
	timer := time.NewTimer(min(interval, timeout))
	defer timer.Stop()
	lastPing := time.Duration(-1 << 62)
	for {
		select {
		case <-s.done:
			return
		case <-timer.C:
		}
		now := time.Since(s.epoch)
		ping, expired, wait := keepAliveStep(now, time.Duration(s.lastRecv.Load()), lastPing, interval, timeout)
		if expired {
			s.failCode(CodeTimeout, ErrKeepAliveTimeout)
			return
		}
		if ping {
			lastPing = now
			s.enqueue(ctrlFrame{t: FramePing, val: uint64(s.epoch.UnixNano() + int64(now))})
		}
		timer.Reset(wait)
	}
}

func (s *Session) isPeerID(id uint32) bool {
	return (id%2 == 0) == s.client
}

func (s *Session) lookup(id uint32) *Stream {
	s.mu.Lock()
	st := s.streams[id]
	s.mu.Unlock()
	return st
}

func (s *Session) removeStream(id uint32) {
	s.mu.Lock()
	_, ok := s.streams[id]
	delete(s.streams, id)
	s.mu.Unlock()
	if ok {
		select {
		case s.streamGone <- struct{}{}:
		default:
		}
	}
}
