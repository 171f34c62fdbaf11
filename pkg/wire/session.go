package wire

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Config tunes a Session. The zero value is usable: every zero field takes
// the default named in its comment.
type Config struct {
	// MaxFrameSize is the largest DATA payload this side accepts, announced
	// in HELLO/HELLO_ACK. Default DefaultMaxFrameSize (64 KiB); range
	// MinMaxFrameSize..MaxMaxFrameSize.
	MaxFrameSize int
	// WindowSize is the per-stream receive window this side grants, in
	// credit bytes (see DataFrameCost). Default 1 MiB; range MinWindow..MaxWindow.
	// A session buffers at most about 2*WindowSize per stream.
	WindowSize int
	// MaxStreams bounds the open streams (both directions). Default 1024.
	MaxStreams int
	// AcceptBacklog bounds the streams opened by the peer and not yet
	// returned by Accept; more are refused with REFUSED_STREAM. Default 256.
	AcceptBacklog int
	// MaxMessageSize bounds a message reassembled by ReadMessage. Default 4 MiB.
	MaxMessageSize int
	// KeepAliveInterval is how long the connection may be idle before a
	// PING is sent. Default 15s; negative disables keepalive.
	KeepAliveInterval time.Duration
	// KeepAliveTimeout ends the session when nothing at all has been
	// received for this long. Default 3*KeepAliveInterval.
	KeepAliveTimeout time.Duration
	// HandshakeTimeout bounds the HELLO exchange. Default 10s.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds every write to the connection; a write that
	// takes longer ends the session. Default 10s.
	WriteTimeout time.Duration
	// Token is sent in the client's HELLO (at most MaxTokenSize bytes).
	Token []byte
	// Authenticate, on the server, checks the client's token; an error
	// refuses the session with UNAUTHORIZED. Nil accepts every token.
	Authenticate func(token []byte) error
	// Compression lists the algorithms this side offers (client) or its
	// preference order (server). Empty means no compression.
	Compression []Compression
}

// directWriteMin is the payload size from which DATA goes to a TCP or Unix
// connection by writev instead of being copied into the write buffer.
const directWriteMin = 16 << 10

// sessionReadBuffer sizes the session's bufio.Reader: large enough to batch
// small frames into one read, small enough that most of a large payload is
// read straight into its own buffer instead of being copied through it.
const sessionReadBuffer = 16 << 10

// MinWindow is the smallest initial_window a peer may announce.
const MinWindow = 1 << 10

func (c Config) withDefaults() (Config, error) {
	if c.MaxFrameSize == 0 {
		c.MaxFrameSize = DefaultMaxFrameSize
	}
	if c.WindowSize == 0 {
		c.WindowSize = 1 << 20
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = 1024
	}
	if c.AcceptBacklog == 0 {
		c.AcceptBacklog = 256
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 4 << 20
	}
	if c.KeepAliveInterval == 0 {
		c.KeepAliveInterval = 15 * time.Second
	}
	if c.KeepAliveTimeout == 0 {
		c.KeepAliveTimeout = 3 * c.KeepAliveInterval
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	switch {
	case c.MaxFrameSize < MinMaxFrameSize || c.MaxFrameSize > MaxMaxFrameSize:
		return c, fmt.Errorf("wire: MaxFrameSize %d outside %d..%d", c.MaxFrameSize, MinMaxFrameSize, MaxMaxFrameSize)
	case c.WindowSize < MinWindow || c.WindowSize > MaxWindow:
		return c, fmt.Errorf("wire: WindowSize %d outside %d..%d", c.WindowSize, MinWindow, MaxWindow)
	case len(c.Token) > MaxTokenSize:
		return c, fmt.Errorf("wire: token of %d bytes over %d", len(c.Token), MaxTokenSize)
	case c.MaxStreams < 0 || c.AcceptBacklog < 0 || c.MaxMessageSize < 0:
		return c, errors.New("wire: negative limit in Config")
	}
	for _, a := range c.Compression {
		if a.feature() == 0 {
			return c, fmt.Errorf("wire: unknown compression %q", a)
		}
	}
	return c, nil
}

// ctrlFrame is a frame queued by the read loop, which never writes itself.
type ctrlFrame struct {
	t    FrameType
	id   uint32
	code ErrorCode
	val  uint64
}

const ctrlQueueSize = 128

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

	br *bufio.Reader

	wmu      sync.Mutex // guards wbuf, iov, trailer, wscratch and the connection's write side
	wbuf     []byte     // frames waiting for the last writer out to flush
	writev   bool       // conn takes net.Buffers in one syscall
	iov      [3][]byte
	bufs     net.Buffers
	trailer  [TrailerSize]byte
	writers  atomic.Int32 // writers holding or waiting for wmu
	wscratch [16]byte

	mu         sync.Mutex
	streams    map[uint32]*Stream
	nextID     uint32
	lastPeerID uint32
	goAwaySent bool
	goAwayRecv bool
	remoteErr  *SessionError // from GOAWAY with a code, or ERROR
	pings      map[uint64]chan struct{}
	pingSeq    uint64
	streamGone chan struct{} // signalled when a stream leaves streams

	acceptCh  chan *Stream
	ctrlCh    chan ctrlFrame
	overload  atomic.Bool // a reply could not be queued
	done      chan struct{}
	closeOnce sync.Once
	err       error // set before done is closed
	recvCount atomic.Uint64
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
		br:         bufio.NewReaderSize(conn, sessionReadBuffer),
		streams:    make(map[uint32]*Stream),
		pings:      make(map[uint64]chan struct{}),
		streamGone: make(chan struct{}, 1),
		acceptCh:   make(chan *Stream, cfg.AcceptBacklog),
		ctrlCh:     make(chan ctrlFrame, ctrlQueueSize),
		done:       make(chan struct{}),
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
		// Payloads from directWriteMin up bypass the buffer.
		s.wbuf = make([]byte, 0, 64<<10)
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

func (s *Session) offered() Features {
	var f Features
	for _, a := range s.cfg.Compression {
		f |= a.feature()
	}
	return f
}

func (s *Session) clientHandshake() error {
	hello := Hello{
		MinVersion:    MinVersion,
		MaxVersion:    Version,
		MaxFrameSize:  uint32(s.cfg.MaxFrameSize),
		InitialWindow: uint32(s.cfg.WindowSize),
		Features:      s.offered(),
		Token:         s.cfg.Token,
	}
	// HELLO always travels with the version-1 header layout.
	if _, err := s.conn.Write(AppendFrame(nil, FrameHello, 0, 0, AppendHello(nil, &hello))); err != nil {
		return err
	}
	f, err := ReadFrame(s.br, HandshakeMaxFrameSize, nil)
	if err != nil {
		return err
	}
	switch f.Header.Type() {
	case FrameHelloAck:
	case FrameError:
		code, reason, perr := ParseCodeReason(f.Payload)
		if perr != nil {
			return perr
		}
		return &SessionError{Code: code, Reason: reason, Remote: true}
	default:
		return &SessionError{Code: CodeProtocol, Reason: "expected HELLO_ACK, got " + f.Header.Type().String()}
	}
	ack, err := ParseHelloAck(f.Payload)
	if err != nil {
		return err
	}
	switch {
	case ack.Version < MinVersion || ack.Version > Version:
		return &SessionError{Code: CodeUnsupportedVersion, Reason: fmt.Sprintf("server chose version %d", ack.Version)}
	case ack.MaxFrameSize < MinMaxFrameSize || ack.MaxFrameSize > MaxMaxFrameSize:
		return &SessionError{Code: CodeProtocol, Reason: fmt.Sprintf("max_frame_size %d out of range", ack.MaxFrameSize)}
	case ack.InitialWindow < MinWindow || ack.InitialWindow > MaxWindow:
		return &SessionError{Code: CodeProtocol, Reason: fmt.Sprintf("initial_window %d out of range", ack.InitialWindow)}
	case ack.Features&^hello.Features != 0:
		return &SessionError{Code: CodeProtocol, Reason: "server selected features not offered"}
	case ack.Features&FeatureZstd != 0 && ack.Features&FeatureS2 != 0:
		return &SessionError{Code: CodeProtocol, Reason: "server selected two compressions"}
	}
	s.version = ack.Version
	s.peerMaxFrame = int(ack.MaxFrameSize)
	s.peerWindow = int(ack.InitialWindow)
	s.compression = compressionOf(ack.Features)
	return nil
}

func (s *Session) serverHandshake() error {
	f, err := ReadFrame(s.br, HandshakeMaxFrameSize, nil)
	if err != nil {
		var de *DecodeError
		if errors.As(err, &de) {
			s.refuse(de.Code(), de.Err.Error())
		}
		return err
	}
	if f.Header.Type() != FrameHello || f.Header.StreamID() != 0 {
		return s.refuse(CodeProtocol, "expected HELLO on stream 0")
	}
	hello, err := ParseHello(f.Payload)
	if err != nil {
		return s.refuse(CodeProtocol, err.Error())
	}
	v := min(byte(Version), hello.MaxVersion)
	if v < max(byte(MinVersion), hello.MinVersion) {
		return s.refuse(CodeUnsupportedVersion, fmt.Sprintf("no common version: client %d..%d, server %d..%d", hello.MinVersion, hello.MaxVersion, MinVersion, Version))
	}
	if hello.MaxFrameSize < MinMaxFrameSize || hello.MaxFrameSize > MaxMaxFrameSize {
		return s.refuse(CodeProtocol, fmt.Sprintf("max_frame_size %d out of range", hello.MaxFrameSize))
	}
	if hello.InitialWindow < MinWindow || hello.InitialWindow > MaxWindow {
		return s.refuse(CodeProtocol, fmt.Sprintf("initial_window %d out of range", hello.InitialWindow))
	}
	if s.cfg.Authenticate != nil {
		if err := s.cfg.Authenticate(hello.Token); err != nil {
			return s.refuse(CodeUnauthorized, "unauthorized")
		}
	}
	var chosen Features
	for _, a := range s.cfg.Compression {
		if hello.Features&a.feature() != 0 {
			chosen = a.feature()
			break
		}
	}
	ack := HelloAck{Version: v, MaxFrameSize: uint32(s.cfg.MaxFrameSize), InitialWindow: uint32(s.cfg.WindowSize), Features: chosen}
	if _, err := s.conn.Write(AppendFrame(nil, FrameHelloAck, 0, 0, AppendHelloAck(nil, &ack))); err != nil {
		return err
	}
	s.version = v
	s.peerMaxFrame = int(hello.MaxFrameSize)
	s.peerWindow = int(hello.InitialWindow)
	s.compression = compressionOf(chosen)
	return nil
}

// refuse sends an ERROR frame during the handshake and returns the matching
// local error.
func (s *Session) refuse(code ErrorCode, reason string) error {
	s.conn.Write(AppendFrame(nil, FrameError, 0, 0, AppendCodeReason(nil, code, reason))) //nolint:errcheck // best effort: the session is ending.
	return &SessionError{Code: code, Reason: reason}
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
	case s.nextID > MaxWindow:
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

// failCode ends the session after a best-effort GOAWAY with code.
func (s *Session) failCode(code ErrorCode, cause error) {
	s.mu.Lock()
	last := s.lastPeerID
	s.mu.Unlock()
	reason := ""
	if cause != nil {
		reason = cause.Error()
	}
	// Best effort and bounded: a writer stuck on a peer that does not read
	// must not hold the session open.
	if s.lockWriteWithin(min(s.cfg.WriteTimeout, time.Second)) {
		s.writers.Add(1)
		payload := AppendGoAway(nil, last, code, reason)
		s.endWrite(s.writeLocked(FrameGoAway, 0, 0, payload)) //nolint:errcheck // the session is ending
	}
	s.fail(&SessionError{Code: code, Reason: reason, Err: cause})
}

// lockWriteWithin takes wmu if it becomes free within d.
func (s *Session) lockWriteWithin(d time.Duration) bool {
	end := time.Now().Add(d)
	for !s.wmu.TryLock() {
		if time.Now().After(end) || s.isDone() {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// armWrite sets the connection's write deadline before bytes may reach it.
func (s *Session) armWrite() {
	s.conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout)) //nolint:errcheck // a failing conn fails the write itself
}

// writeFrame writes one frame. Writers queue on wmu; the last one out
// flushes, so concurrent writers share syscalls.
func (s *Session) writeFrame(t FrameType, f Flags, id uint32, payload []byte) error {
	s.writers.Add(1)
	s.wmu.Lock()
	err := s.writeLocked(t, f, id, payload)
	return s.endWrite(err)
}

func (s *Session) writeLocked(t FrameType, f Flags, id uint32, payload []byte) error {
	if s.isDone() {
		return s.closedErr()
	}
	if s.writev && len(payload) >= directWriteMin {
		// Large payload: hand it to the kernel in place, behind whatever
		// is buffered and the new header, in one writev.
		start := len(s.wbuf)
		s.wbuf = appendHeader(s.wbuf, s.version, t, f, id, len(payload))
		sum := crc32.Update(crc32.Update(0, castagnoli, s.wbuf[start:]), castagnoli, payload)
		binary.BigEndian.PutUint32(s.trailer[:], sum)
		s.iov = [3][]byte{s.wbuf, payload, s.trailer[:]}
		s.bufs = s.iov[:]
		s.armWrite()
		_, err := s.bufs.WriteTo(s.conn)
		s.iov = [3][]byte{}
		s.wbuf = s.wbuf[:0]
		return err
	}
	if len(s.wbuf)+len(payload)+Overhead > cap(s.wbuf) {
		if err := s.flushLocked(); err != nil {
			return err
		}
		if len(payload)+Overhead > cap(s.wbuf) {
			s.armWrite()
			_, err := s.conn.Write(appendFrameVersion(nil, s.version, t, f, id, payload))
			return err
		}
	}
	s.wbuf = appendFrameVersion(s.wbuf, s.version, t, f, id, payload)
	return nil
}

func (s *Session) flushLocked() error {
	if len(s.wbuf) == 0 {
		return nil
	}
	s.armWrite()
	_, err := s.conn.Write(s.wbuf)
	s.wbuf = s.wbuf[:0]
	return err
}

func (s *Session) endWrite(err error) error {
	if s.writers.Add(-1) == 0 && err == nil {
		err = s.flushLocked()
	}
	s.wmu.Unlock()
	if err != nil && !s.isDone() {
		s.fail(fmt.Errorf("wire: write: %w", err))
	}
	return err
}

// writeU32 writes a frame whose payload is one u32 (WINDOW_UPDATE) or, for
// PING/PONG, a u64.
func (s *Session) writeU32(t FrameType, id uint32, v uint32) error {
	s.writers.Add(1)
	s.wmu.Lock()
	binary.BigEndian.PutUint32(s.wscratch[:4], v)
	return s.endWrite(s.writeLocked(t, 0, id, s.wscratch[:4]))
}

func (s *Session) writeU64(t FrameType, v uint64) error {
	s.writers.Add(1)
	s.wmu.Lock()
	binary.BigEndian.PutUint64(s.wscratch[:8], v)
	return s.endWrite(s.writeLocked(t, 0, 0, s.wscratch[:8]))
}

func (s *Session) writeGoAway(last uint32, code ErrorCode, reason string) error {
	return s.writeFrame(FrameGoAway, 0, 0, AppendGoAway(nil, last, code, reason))
}

func (s *Session) writeReset(id uint32, code ErrorCode, reason string) error {
	if reason == "" {
		s.writers.Add(1)
		s.wmu.Lock()
		binary.BigEndian.PutUint32(s.wscratch[:4], uint32(code))
		return s.endWrite(s.writeLocked(FrameReset, 0, id, s.wscratch[:4]))
	}
	return s.writeFrame(FrameReset, 0, id, AppendCodeReason(nil, code, reason))
}

// enqueue hands a frame to the control writer without blocking; a peer
// that provokes replies faster than they drain is cut off.
func (s *Session) enqueue(c ctrlFrame) {
	select {
	case s.ctrlCh <- c:
	default:
		s.overload.Store(true) // the read loop ends the session
	}
}

func (s *Session) ctrlLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.done:
			return
		case c := <-s.ctrlCh:
			var err error
			switch c.t {
			case FramePong, FramePing:
				err = s.writeU64(c.t, c.val)
			case FrameReset:
				err = s.writeReset(c.id, c.code, "")
			case FrameGoAway:
				s.failCode(c.code, nil)
				return
			}
			if err != nil {
				return
			}
		}
	}
}

func (s *Session) keepAlive() {
	defer s.wg.Done()
	tick := time.NewTicker(min(s.cfg.KeepAliveInterval, s.cfg.KeepAliveTimeout) / 2)
	defer tick.Stop()
	last := s.recvCount.Load()
	lastChange := time.Now()
	for {
		select {
		case <-s.done:
			return
		case now := <-tick.C:
			if c := s.recvCount.Load(); c != last {
				last, lastChange = c, now
				continue
			}
			idle := now.Sub(lastChange)
			if idle >= s.cfg.KeepAliveTimeout {
				s.failCode(CodeTimeout, ErrKeepAliveTimeout)
				return
			}
			if idle >= s.cfg.KeepAliveInterval {
				s.enqueue(ctrlFrame{t: FramePing, val: uint64(now.UnixNano())})
			}
		}
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

// maxControlPayload bounds the payload of every frame type but DATA.
const maxControlPayload = 8 + MaxReasonSize

func (s *Session) readLoop() {
	defer s.wg.Done()
	ctl := make([]byte, 0, maxControlPayload)
	for {
		h, err := readHeader(s.br, s.cfg.MaxFrameSize)
		if err == nil {
			s.recvCount.Add(1)
			err = s.handle(&h, ctl)
			if err == nil && s.overload.Load() {
				err = &SessionError{Code: CodeEnhanceYourCalm, Reason: "peer provokes replies faster than they drain"}
			}
		}
		if err != nil {
			s.readFailed(err)
			return
		}
	}
}

// readFailed ends the session after the read loop stops.
func (s *Session) readFailed(err error) {
	if s.isDone() {
		return
	}
	var de *DecodeError
	var se *SessionError
	switch {
	case errors.As(err, &de):
		s.failCode(de.Code(), err)
	case errors.As(err, &se) && !se.Remote:
		s.failCode(se.Code, se)
	case errors.Is(err, ErrMalformed):
		s.failCode(CodeProtocol, err)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed):
		s.mu.Lock()
		rerr := s.remoteErr
		s.mu.Unlock()
		if rerr != nil {
			s.fail(rerr)
		} else {
			s.fail(fmt.Errorf("wire: connection closed by peer: %w", err))
		}
	default:
		if se != nil {
			s.fail(se)
		} else {
			s.fail(fmt.Errorf("wire: read: %w", err))
		}
	}
}

func protoErr(format string, args ...any) error {
	return &SessionError{Code: CodeProtocol, Reason: fmt.Sprintf(format, args...)}
}

// handle processes one frame whose header has been read.
func (s *Session) handle(h *Header, ctl []byte) error {
	if h.Version() != s.version {
		return protoErr("frame version %d on a version %d session", h.Version(), s.version)
	}
	t, id := h.Type(), h.StreamID()
	if t == FrameData {
		return s.handleData(h)
	}
	if h.Length() > maxControlPayload {
		return &SessionError{Code: CodeFrameSize, Reason: fmt.Sprintf("%v payload of %d bytes", t, h.Length())}
	}
	p, err := readPayload(s.br, h, ctl)
	if err != nil {
		return err
	}
	switch t {
	case FramePing, FramePong:
		if id != 0 || len(p) != 8 {
			return protoErr("bad %v", t)
		}
		v := binary.BigEndian.Uint64(p)
		if t == FramePing {
			s.enqueue(ctrlFrame{t: FramePong, val: v})
			return nil
		}
		s.mu.Lock()
		if ch, ok := s.pings[v]; ok {
			close(ch)
			delete(s.pings, v)
		}
		s.mu.Unlock()
		return nil
	case FrameOpen:
		return s.handleOpen(id, p)
	case FrameWindowUpdate, FrameClose, FrameReset:
		if id == 0 {
			return protoErr("%v on stream 0", t)
		}
		st := s.lookup(id)
		if st == nil {
			s.unknownStream(id, t)
			return nil
		}
		switch t {
		case FrameWindowUpdate:
			inc, err := ParseWindowUpdate(p)
			if err != nil {
				s.resetStream(st, CodeProtocol)
				return nil
			}
			if !st.addCredit(inc) {
				s.resetStream(st, CodeFlowControl)
			}
		case FrameClose:
			if len(p) != 0 {
				return protoErr("CLOSE with payload")
			}
			st.remoteClose()
		case FrameReset:
			code, reason, err := ParseCodeReason(p)
			if err != nil {
				return err
			}
			st.remoteReset(code, reason)
		}
		return nil
	case FrameGoAway:
		if id != 0 {
			return protoErr("GOAWAY on stream %d", id)
		}
		last, code, reason, err := ParseGoAway(p)
		if err != nil {
			return err
		}
		s.handleGoAway(last, code, reason)
		return nil
	case FrameError:
		code, reason, err := ParseCodeReason(p)
		if err != nil {
			return err
		}
		return &SessionError{Code: code, Reason: reason, Remote: true}
	default: // HELLO/HELLO_ACK after the handshake, or unknown types
		return protoErr("unexpected %v frame", t)
	}
}

func (s *Session) handleOpen(id uint32, p []byte) error {
	s.mu.Lock()
	if id == 0 || !s.isPeerID(id) || id <= s.lastPeerID {
		s.mu.Unlock()
		return protoErr("OPEN with stream id %d (last %d)", id, s.lastPeerID)
	}
	s.lastPeerID = id
	name := string(p)
	var refuse ErrorCode
	switch {
	case !ValidServiceName(name):
		refuse = CodeProtocol
	case s.goAwaySent:
		refuse = CodeRefused
	case len(s.streams) >= s.cfg.MaxStreams:
		refuse = CodeRefused
	}
	if refuse != 0 {
		s.mu.Unlock()
		s.enqueue(ctrlFrame{t: FrameReset, id: id, code: refuse})
		return nil
	}
	st := newStream(s, id, name)
	s.streams[id] = st
	s.mu.Unlock()
	select {
	case s.acceptCh <- st:
	default:
		s.removeStream(id)
		s.enqueue(ctrlFrame{t: FrameReset, id: id, code: CodeRefused})
	}
	return nil
}

func (s *Session) handleGoAway(last uint32, code ErrorCode, reason string) {
	s.mu.Lock()
	s.goAwayRecv = true
	if code != CodeNoError {
		s.remoteErr = &SessionError{Code: code, Reason: reason, Remote: true}
	}
	var refused []*Stream
	for id, st := range s.streams {
		if !s.isPeerID(id) && id > last {
			refused = append(refused, st)
		}
	}
	s.mu.Unlock()
	for _, st := range refused {
		st.remoteReset(CodeRefused, "stream not processed before GOAWAY")
	}
}

// unknownStream answers a frame for a stream the session does not track.
// Ids at or below the highest seen belong to streams already finished and
// the frame is dropped; higher ids were never opened and are reset.
func (s *Session) unknownStream(id uint32, t FrameType) {
	s.mu.Lock()
	var never bool
	if s.isPeerID(id) {
		never = id > s.lastPeerID
	} else {
		never = id >= s.nextID
	}
	s.mu.Unlock()
	if never && t != FrameReset {
		s.enqueue(ctrlFrame{t: FrameReset, id: id, code: CodeUnknownStream})
	}
}

// resetStream resets st from the read loop.
func (s *Session) resetStream(st *Stream, code ErrorCode) {
	if st.localReset(code, "") {
		s.enqueue(ctrlFrame{t: FrameReset, id: st.id, code: code})
	}
}

func (s *Session) handleData(h *Header) error {
	id, n := h.StreamID(), int(h.Length())
	if id == 0 {
		return protoErr("DATA on stream 0")
	}
	bp := getBuf(n)
	p, err := readPayload(s.br, h, *bp)
	if err != nil {
		putBuf(bp)
		return err
	}
	st := s.lookup(id)
	if st == nil {
		putBuf(bp)
		s.unknownStream(id, FrameData)
		return nil
	}
	if h.Flags()&FlagCompressed != 0 {
		if s.compression == CompressionNone {
			putBuf(bp)
			s.resetStream(st, CodeCompression)
			return nil
		}
		dp := getBuf(s.cfg.MaxFrameSize)
		out, err := decompress(s.compression, *dp, p, s.cfg.MaxFrameSize)
		putBuf(bp)
		if err != nil || len(out) > s.cfg.MaxFrameSize || (len(out) > 0 && &out[0] != &(*dp)[:1][0]) {
			putBuf(dp)
			s.resetStream(st, CodeCompression)
			return nil
		}
		if classOf(len(out)) < classOf(cap(*dp)) {
			// Keep queued memory proportional to the data: move a small
			// result out of the max-frame-size buffer.
			bp = getBuf(len(out))
			copy(*bp, out)
			putBuf(dp)
		} else {
			*dp = out
			bp = dp
		}
	}
	if code := st.pushData(bp, h.Flags()&FlagMore != 0); code != CodeNoError {
		s.resetStream(st, code)
	}
	return nil
}
