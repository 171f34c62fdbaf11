package wiretransport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/switchboard-net/switchboard/pkg/wire"
)

// The QUIC mapping (docs/wire.md, section 17.3), in short:
//
//   - ALPN "switchboard-wire/1", TLS 1.3 (QUIC's own handshake).
//   - The client's first bidirectional stream is the control stream. It
//     carries wire frames: HELLO, then HELLO_ACK or ERROR, then GOAWAY.
//   - Every other bidirectional stream is one wire stream. Its first bytes
//     are a u8 length n (1..255) and the n-byte service name (what OPEN
//     carries); everything after is stream data, with no wire framing.
//   - CLOSE is the QUIC FIN; RESET is RESET_STREAM plus STOP_SENDING with
//     the wire error code as the application error code; flow control and
//     liveness are QUIC's (stream and connection windows, PING frames and
//     the idle timeout); a connection error is CONNECTION_CLOSE with the
//     wire code.

// maxCtrlPayload bounds control frames after the handshake (GOAWAY and
// ERROR: 8 bytes and a reason of up to 256).
const maxCtrlPayload = 8 + wire.MaxReasonSize

// QUICConfig returns the quic-go configuration matching cfg: stream limits,
// windows and timeouts. Zero fields take pkg/wire's defaults.
func QUICConfig(cfg wire.Config) *quic.Config {
	cfg = defaults(cfg)
	window := uint64(cfg.WindowSize)
	return &quic.Config{
		HandshakeIdleTimeout:           cfg.HandshakeTimeout,
		MaxIdleTimeout:                 cfg.KeepAliveTimeout,
		KeepAlivePeriod:                cfg.KeepAliveInterval,
		InitialStreamReceiveWindow:     window,
		MaxStreamReceiveWindow:         max(window, 6<<20),
		InitialConnectionReceiveWindow: window * 2,
		MaxConnectionReceiveWindow:     max(2*window, 15<<20),
		MaxIncomingStreams:             int64(cfg.MaxStreams),
		MaxIncomingUniStreams:          -1,
	}
}

// defaults fills zero fields of cfg the way pkg/wire does.
func defaults(cfg wire.Config) wire.Config {
	if cfg.WindowSize == 0 {
		cfg.WindowSize = 1 << 20
	}
	if cfg.MaxStreams == 0 {
		cfg.MaxStreams = 1024
	}
	if cfg.AcceptBacklog == 0 {
		cfg.AcceptBacklog = 256
	}
	if cfg.KeepAliveInterval == 0 {
		cfg.KeepAliveInterval = 15 * time.Second
	}
	if cfg.KeepAliveInterval < 0 {
		cfg.KeepAliveInterval = 0
	}
	if cfg.KeepAliveTimeout == 0 {
		cfg.KeepAliveTimeout = 3 * max(cfg.KeepAliveInterval, 15*time.Second)
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	return cfg
}

// quicTLS returns tc set up for the QUIC mapping: TLS 1.3, ALPN.
func quicTLS(tc *tls.Config) *tls.Config { return serverTLS(tc, tls.VersionTLS13, ALPN) }

// WithALPN returns a copy of the server configuration tc that negotiates
// protos. A configuration that picks its certificate per connection
// (GetConfigForClient, as pkg/certs' reloader does) gets them on every
// configuration it returns too.
func WithALPN(tc *tls.Config, protos ...string) *tls.Config { return serverTLS(tc, 0, protos...) }

// serverTLS is WithALPN that also raises the minimum version to
// minVersion when it is not 0.
func serverTLS(tc *tls.Config, minVersion uint16, protos ...string) *tls.Config {
	set := func(c *tls.Config) {
		c.NextProtos = protos
		if minVersion != 0 {
			c.MinVersion = minVersion
		}
	}
	tc = tc.Clone()
	set(tc)
	if get := tc.GetConfigForClient; get != nil {
		tc.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := get(hello)
			if c == nil || err != nil {
				return c, err
			}
			c = c.Clone()
			set(c)
			return c, nil
		}
	}
	return tc
}

// QUICListener accepts QUIC connections of the wire mapping. Close stops
// accepting and leaves established connections running, so their
// sessions can drain (Shutdown); CloseAll ends them too.
type QUICListener struct {
	tr *quic.Transport
	ln *quic.Listener
}

// ListenQUIC listens on UDP addr; tc must hold the server certificate.
// Hand each accepted *quic.Conn to ServeQUIC.
func ListenQUIC(addr string, tc *tls.Config, cfg wire.Config) (*QUICListener, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	l, err := ListenQUICConn(pc, tc, cfg)
	if err != nil {
		pc.Close()
		return nil, err
	}
	return l, nil
}

// ListenQUICConn is ListenQUIC on a UDP socket the caller opened and
// closes.
func ListenQUICConn(pc net.PacketConn, tc *tls.Config, cfg wire.Config) (*QUICListener, error) {
	tr := &quic.Transport{Conn: pc}
	ln, err := tr.Listen(quicTLS(tc), QUICConfig(cfg))
	if err != nil {
		tr.Close()
		return nil, err
	}
	return &QUICListener{tr: tr, ln: ln}, nil
}

// Accept waits for the next connection.
func (l *QUICListener) Accept(ctx context.Context) (*quic.Conn, error) { return l.ln.Accept(ctx) }

// Addr is the UDP address the listener is bound to.
func (l *QUICListener) Addr() net.Addr { return l.ln.Addr() }

// Close stops accepting connections; established ones carry on.
func (l *QUICListener) Close() error { return l.ln.Close() }

// CloseAll closes the listener and every connection it accepted.
func (l *QUICListener) CloseAll() error {
	l.ln.Close()
	return l.tr.Close()
}

// DialQUIC connects to a wire server over QUIC and runs the handshake.
// cfg.Compression is ignored (see ErrNoCompressionOverQUIC).
func DialQUIC(ctx context.Context, addr string, tc *tls.Config, cfg wire.Config) (*QUICSession, error) {
	cfg = defaults(cfg)
	hctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	conn, err := quic.DialAddr(hctx, addr, quicTLS(tc), QUICConfig(cfg))
	if err != nil {
		return nil, fmt.Errorf("edge %s: quic: %w", addr, err)
	}
	s := newQUICSession(conn, cfg, true)
	if err := s.clientHandshake(hctx); err != nil {
		conn.CloseWithError(quic.ApplicationErrorCode(wire.CodeOf(err)), "") //nolint:errcheck // ending anyway
		return nil, fmt.Errorf("edge %s: %w", addr, err)
	}
	s.start()
	return s, nil
}

// ServeQUIC runs the server side of the handshake on a connection from a
// listener of ListenQUIC: it reads HELLO on the control stream, calls
// cfg.Authenticate, and answers. On failure the connection is closed with
// the error's code.
func ServeQUIC(ctx context.Context, conn *quic.Conn, cfg wire.Config) (*QUICSession, error) {
	cfg = defaults(cfg)
	hctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	s := newQUICSession(conn, cfg, false)
	if err := s.serverHandshake(hctx); err != nil {
		conn.CloseWithError(quic.ApplicationErrorCode(wire.CodeOf(err)), reasonOf(err)) //nolint:errcheck // ending anyway
		return nil, fmt.Errorf("wire: quic handshake: %w", err)
	}
	s.start()
	return s, nil
}

func reasonOf(err error) string {
	var se *wire.SessionError
	if errors.As(err, &se) {
		return se.Reason
	}
	return ""
}

// QUICSession is a wire session over one QUIC connection.
type QUICSession struct {
	conn   *quic.Conn
	cfg    wire.Config
	client bool
	ctrl   *quic.Stream
	ctrlBR *bufio.Reader

	ctrlMu sync.Mutex // serialises control frames

	mu         sync.Mutex
	open       int // streams not yet closed or reset locally
	goAwaySent bool
	goAwayRecv bool
	finishing  bool // closing after the peer's GOAWAY
	streamGone chan struct{}

	acceptCh  chan *quicStream
	done      chan struct{}
	closeOnce sync.Once
	err       error
	wg        sync.WaitGroup
}

func newQUICSession(conn *quic.Conn, cfg wire.Config, client bool) *QUICSession {
	return &QUICSession{conn: conn, cfg: cfg, client: client,
		streamGone: make(chan struct{}, 1),
		acceptCh:   make(chan *quicStream, cfg.AcceptBacklog),
		done:       make(chan struct{})}
}

// Conn returns the underlying QUIC connection.
func (s *QUICSession) Conn() *quic.Conn { return s.conn }

func (s *QUICSession) clientHandshake(ctx context.Context) error {
	ctrl, err := s.conn.OpenStreamSync(ctx)
	if err != nil {
		return quicErr(err)
	}
	s.ctrl, s.ctrlBR = ctrl, bufio.NewReaderSize(ctrl, 512)
	if dl, ok := ctx.Deadline(); ok {
		ctrl.SetDeadline(dl) //nolint:errcheck // never fails
	}
	hello := wire.Hello{MinVersion: wire.MinVersion, MaxVersion: wire.Version,
		MaxFrameSize: wire.DefaultMaxFrameSize, InitialWindow: uint32(s.cfg.WindowSize), Token: s.cfg.Token}
	if _, err := ctrl.Write(wire.AppendFrame(nil, wire.FrameHello, 0, 0, wire.AppendHello(nil, &hello))); err != nil {
		return quicErr(err)
	}
	f, err := wire.ReadFrame(s.ctrlBR, wire.HandshakeMaxFrameSize, nil)
	if err != nil {
		return quicErr(err)
	}
	switch f.Header.Type() {
	case wire.FrameHelloAck:
	case wire.FrameError:
		code, reason, perr := wire.ParseCodeReason(f.Payload)
		if perr != nil {
			return perr
		}
		return &wire.SessionError{Code: code, Reason: reason, Remote: true}
	default:
		return &wire.SessionError{Code: wire.CodeProtocol, Reason: "expected HELLO_ACK, got " + f.Header.Type().String()}
	}
	ack, err := wire.ParseHelloAck(f.Payload)
	if err != nil {
		return &wire.SessionError{Code: wire.CodeProtocol, Err: err}
	}
	switch {
	case ack.Version < wire.MinVersion || ack.Version > wire.Version:
		return &wire.SessionError{Code: wire.CodeUnsupportedVersion, Reason: fmt.Sprintf("server chose version %d", ack.Version)}
	case ack.Features != 0:
		return &wire.SessionError{Code: wire.CodeProtocol, Reason: "server selected features not offered"}
	}
	ctrl.SetDeadline(time.Time{}) //nolint:errcheck // never fails
	return nil
}

func (s *QUICSession) serverHandshake(ctx context.Context) error {
	ctrl, err := s.conn.AcceptStream(ctx)
	if err != nil {
		return quicErr(err)
	}
	s.ctrl, s.ctrlBR = ctrl, bufio.NewReaderSize(ctrl, 512)
	if dl, ok := ctx.Deadline(); ok {
		ctrl.SetDeadline(dl) //nolint:errcheck // never fails
	}
	f, err := wire.ReadFrame(s.ctrlBR, wire.HandshakeMaxFrameSize, nil)
	if err != nil {
		var de *wire.DecodeError
		if errors.As(err, &de) {
			return s.refuse(de.Code(), de.Err.Error())
		}
		return quicErr(err)
	}
	if f.Header.Type() != wire.FrameHello || f.Header.StreamID() != 0 {
		return s.refuse(wire.CodeProtocol, "expected HELLO on the control stream")
	}
	hello, err := wire.ParseHello(f.Payload)
	if err != nil {
		return s.refuse(wire.CodeProtocol, err.Error())
	}
	v := min(byte(wire.Version), hello.MaxVersion)
	if v < max(byte(wire.MinVersion), hello.MinVersion) {
		return s.refuse(wire.CodeUnsupportedVersion, fmt.Sprintf("no common version: client %d..%d, server %d..%d", hello.MinVersion, hello.MaxVersion, wire.MinVersion, wire.Version))
	}
	if s.cfg.Authenticate != nil {
		if err := s.cfg.Authenticate(hello.Token); err != nil {
			return s.refuse(wire.CodeUnauthorized, "unauthorized")
		}
	}
	// Frame size and window are QUIC's business here; the fields are
	// echoed for the record. No compression: there are no DATA frames.
	ack := wire.HelloAck{Version: v, MaxFrameSize: wire.DefaultMaxFrameSize, InitialWindow: uint32(s.cfg.WindowSize)}
	if _, err := ctrl.Write(wire.AppendFrame(nil, wire.FrameHelloAck, 0, 0, wire.AppendHelloAck(nil, &ack))); err != nil {
		return quicErr(err)
	}
	ctrl.SetDeadline(time.Time{}) //nolint:errcheck // never fails
	return nil
}

// refuse answers the handshake with ERROR; the caller then closes the
// connection with the same code, which is what reaches the client if the
// frame does not.
func (s *QUICSession) refuse(code wire.ErrorCode, reason string) error {
	s.ctrl.Write(wire.AppendFrame(nil, wire.FrameError, 0, 0, wire.AppendCodeReason(nil, code, reason))) //nolint:errcheck // best effort
	return &wire.SessionError{Code: code, Reason: reason}
}

func (s *QUICSession) start() {
	s.wg.Add(3)
	go s.ctrlLoop()
	go s.acceptLoop()
	go func() {
		defer s.wg.Done()
		select {
		case <-s.conn.Context().Done():
			s.fail(quicErr(context.Cause(s.conn.Context())))
		case <-s.done:
		}
	}()
}

// ctrlLoop reads control frames after the handshake: GOAWAY and ERROR.
func (s *QUICSession) ctrlLoop() {
	defer s.wg.Done()
	for {
		f, err := wire.ReadFrame(s.ctrlBR, maxCtrlPayload, nil)
		if err != nil {
			if !s.isDone() {
				var de *wire.DecodeError
				if errors.As(err, &de) {
					s.closeWith(&wire.SessionError{Code: de.Code(), Err: err})
				} else if errors.Is(err, io.EOF) {
					s.closeWith(&wire.SessionError{Code: wire.CodeProtocol, Reason: "control stream closed"})
				} else {
					s.fail(quicErr(err))
				}
			}
			return
		}
		switch f.Header.Type() {
		case wire.FrameGoAway:
			_, code, reason, err := wire.ParseGoAway(f.Payload)
			if err != nil {
				s.closeWith(&wire.SessionError{Code: wire.CodeProtocol, Err: err})
				return
			}
			s.mu.Lock()
			s.goAwayRecv = true
			s.mu.Unlock()
			if code != wire.CodeNoError {
				s.fail(&wire.SessionError{Code: code, Reason: reason, Remote: true})
				return
			}
			s.finishIfIdle()
		case wire.FrameError:
			code, reason, _ := wire.ParseCodeReason(f.Payload)
			s.fail(&wire.SessionError{Code: code, Reason: reason, Remote: true})
			return
		default:
			s.closeWith(&wire.SessionError{Code: wire.CodeProtocol, Reason: f.Header.Type().String() + " on the control stream"})
			return
		}
	}
}

// acceptLoop takes the streams the peer opens; each reads its service
// name on a goroutine of its own, under the handshake timeout.
func (s *QUICSession) acceptLoop() {
	defer s.wg.Done()
	ctx := s.conn.Context()
	for {
		qs, err := s.conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.admit(qs)
		}()
	}
}

func (s *QUICSession) admit(qs *quic.Stream) {
	qs.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout)) //nolint:errcheck // never fails
	var n [1]byte
	if _, err := io.ReadFull(qs, n[:]); err != nil {
		resetQUIC(qs, wire.CodeProtocol)
		return
	}
	name := make([]byte, n[0])
	if _, err := io.ReadFull(qs, name); err != nil || !wire.ValidServiceName(string(name)) {
		resetQUIC(qs, wire.CodeProtocol)
		return
	}
	qs.SetReadDeadline(time.Time{}) //nolint:errcheck // never fails
	s.mu.Lock()
	refuse := s.goAwaySent || s.open >= s.cfg.MaxStreams
	if !refuse {
		s.open++
	}
	s.mu.Unlock()
	if refuse {
		resetQUIC(qs, wire.CodeRefused)
		return
	}
	st := &quicStream{s: s, qs: qs, service: string(name)}
	select {
	case s.acceptCh <- st:
	default:
		st.Reset(wire.CodeRefused) //nolint:errcheck // never fails
	}
}

func resetQUIC(qs *quic.Stream, code wire.ErrorCode) {
	qs.CancelWrite(quic.StreamErrorCode(code))
	qs.CancelRead(quic.StreamErrorCode(code))
}

// Open opens a QUIC stream to service. It waits, within ctx, while the
// peer's stream limit is reached.
func (s *QUICSession) Open(ctx context.Context, service string) (Stream, error) {
	if !wire.ValidServiceName(service) {
		return nil, fmt.Errorf("%w: %q", wire.ErrInvalidService, service)
	}
	s.mu.Lock()
	switch {
	case s.isDone():
		s.mu.Unlock()
		return nil, s.closedErr()
	case s.goAwaySent || s.goAwayRecv:
		s.mu.Unlock()
		return nil, wire.ErrGoAway
	}
	s.open++
	s.mu.Unlock()
	qs, err := s.conn.OpenStreamSync(ctx)
	if err != nil {
		s.streamDone()
		if s.isDone() {
			return nil, s.closedErr()
		}
		return nil, quicErr(err)
	}
	st := &quicStream{s: s, qs: qs, service: service}
	pre := append([]byte{byte(len(service))}, service...)
	qs.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout)) //nolint:errcheck // never fails
	_, err = qs.Write(pre)
	qs.SetWriteDeadline(time.Time{}) //nolint:errcheck // never fails
	if err != nil {
		st.Reset(wire.CodeCancel) //nolint:errcheck // never fails
		return nil, quicErr(err)
	}
	return st, nil
}

// Accept waits for a stream the peer opened.
func (s *QUICSession) Accept(ctx context.Context) (Stream, error) {
	select {
	case st := <-s.acceptCh:
		return st, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		select {
		case st := <-s.acceptCh:
			return st, nil
		default:
		}
		return nil, s.closedErr()
	}
}

// GoAway sends GOAWAY on the control stream. last_stream_id is 0: a
// stream that arrives later is refused with REFUSED_STREAM.
func (s *QUICSession) GoAway(code wire.ErrorCode, reason string) error {
	s.mu.Lock()
	s.goAwaySent = true
	s.mu.Unlock()
	err := s.writeCtrl(wire.FrameGoAway, wire.AppendGoAway(nil, 0, code, reason))
	if code != wire.CodeNoError {
		s.closeWith(&wire.SessionError{Code: code, Reason: reason})
	}
	return err
}

func (s *QUICSession) writeCtrl(t wire.FrameType, payload []byte) error {
	s.ctrlMu.Lock()
	defer s.ctrlMu.Unlock()
	s.ctrl.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout)) //nolint:errcheck // never fails
	_, err := s.ctrl.Write(wire.AppendFrame(nil, t, 0, 0, payload))
	return quicErr(err)
}

// Shutdown sends GOAWAY(NO_ERROR) and waits until every stream has been
// closed or reset locally; then, as CONNECTION_CLOSE would discard stream
// data not yet acknowledged, it waits for the peer to close the
// connection (which it does once its own streams are done), at most the
// WriteTimeout. It closes the connection itself when ctx ends first.
func (s *QUICSession) Shutdown(ctx context.Context) error {
	if err := s.GoAway(wire.CodeNoError, "shutdown"); err != nil {
		s.Close()
		return err
	}
	for s.NumStreams() > 0 {
		select {
		case <-s.streamGone:
		case <-s.done:
			return nil
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		}
	}
	t := time.NewTimer(s.cfg.WriteTimeout)
	defer t.Stop()
	select {
	case <-s.done:
		s.wg.Wait()
		return nil
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	case <-t.C:
		return s.Close()
	}
}

// finishIfIdle closes the connection once the peer has sent GOAWAY and
// this side's streams are all done: the peer is waiting for that. It
// lingers a few round trips first, for this side's last stream data to
// be acknowledged.
func (s *QUICSession) finishIfIdle() {
	s.mu.Lock()
	idle := s.goAwayRecv && s.open == 0 && !s.finishing
	if idle {
		s.finishing = true
	}
	s.mu.Unlock()
	if !idle {
		return
	}
	linger := min(max(4*s.conn.ConnectionStats().SmoothedRTT, 50*time.Millisecond), 2*time.Second)
	time.AfterFunc(linger, func() { s.closeWith(wire.ErrSessionClosed) })
}

// NumStreams returns the streams not yet closed or reset locally.
func (s *QUICSession) NumStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// Close closes the connection (CONNECTION_CLOSE with NO_ERROR) and fails
// every stream; it does not wait for the peer.
func (s *QUICSession) Close() error {
	s.closeWith(wire.ErrSessionClosed)
	s.wg.Wait()
	return nil
}

// closeWith closes the connection with err's code and ends the session.
func (s *QUICSession) closeWith(err error) {
	code := wire.CodeNoError
	if !errors.Is(err, wire.ErrSessionClosed) {
		code = wire.CodeOf(err)
	}
	s.conn.CloseWithError(quic.ApplicationErrorCode(code), reasonOf(err)) //nolint:errcheck // ending anyway
	s.fail(err)
}

func (s *QUICSession) fail(err error) {
	s.closeOnce.Do(func() {
		s.err = err
		close(s.done)
		s.conn.CloseWithError(0, "") //nolint:errcheck // no-op when closed already
	})
}

func (s *QUICSession) isDone() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *QUICSession) closedErr() error {
	<-s.done
	if errors.Is(s.err, wire.ErrSessionClosed) {
		return s.err
	}
	return fmt.Errorf("%w: %w", wire.ErrSessionClosed, s.err)
}

func (s *QUICSession) streamDone() {
	s.mu.Lock()
	s.open--
	s.mu.Unlock()
	select {
	case s.streamGone <- struct{}{}:
	default:
	}
	s.finishIfIdle()
}

// Done is closed when the session has ended.
func (s *QUICSession) Done() <-chan struct{} { return s.done }

// Err says why the session ended, or nil while it runs.
func (s *QUICSession) Err() error {
	if !s.isDone() {
		return nil
	}
	return s.err
}

// RemoteAddr is the peer's UDP address.
func (s *QUICSession) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Compression is always none over QUIC.
func (s *QUICSession) Compression() wire.Compression { return wire.CompressionNone }

// quicErr translates quic-go errors into pkg/wire's: a stream reset into
// a *wire.StreamError, a connection closed by the application into a
// *wire.SessionError with its code, an idle timeout into TIMEOUT.
func quicErr(err error) error {
	if err == nil {
		return nil
	}
	var se *quic.StreamError
	if errors.As(err, &se) {
		return &wire.StreamError{StreamID: uint32(se.StreamID), Code: wire.ErrorCode(se.ErrorCode), Remote: se.Remote}
	}
	var ae *quic.ApplicationError
	if errors.As(err, &ae) {
		if ae.ErrorCode == 0 && ae.Remote {
			return wire.ErrSessionClosed
		}
		return &wire.SessionError{Code: wire.ErrorCode(ae.ErrorCode), Reason: ae.ErrorMessage, Remote: ae.Remote}
	}
	var it *quic.IdleTimeoutError
	if errors.As(err, &it) {
		return &wire.SessionError{Code: wire.CodeTimeout, Err: err}
	}
	return err
}

// quicStream is one wire stream on its own QUIC stream.
type quicStream struct {
	s       *QUICSession
	qs      *quic.Stream
	service string
	once    sync.Once // counts the stream finished once
	mu      sync.Mutex
	wdone   bool
}

func (st *quicStream) finished() { st.once.Do(st.s.streamDone) }

func (st *quicStream) Read(p []byte) (int, error) {
	n, err := st.qs.Read(p)
	if err != nil && err != io.EOF && !errors.Is(err, os.ErrDeadlineExceeded) {
		err = st.sessionErr(err)
	}
	return n, err
}

func (st *quicStream) Write(p []byte) (int, error) {
	n, err := st.qs.Write(p)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		err = st.sessionErr(err)
	}
	return n, err
}

// sessionErr maps err, preferring the session's own end.
func (st *quicStream) sessionErr(err error) error {
	err = quicErr(err)
	var se *wire.StreamError
	if !errors.As(err, &se) && st.s.isDone() {
		return st.s.closedErr()
	}
	return err
}

// CloseWrite sends FIN after the data written.
func (st *quicStream) CloseWrite() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.wdone {
		return nil
	}
	st.wdone = true
	return st.qs.Close()
}

// Close sends FIN and stops reading: unread and later data from the peer
// is discarded with STOP_SENDING(CANCEL).
func (st *quicStream) Close() error {
	err := st.CloseWrite()
	st.qs.CancelRead(quic.StreamErrorCode(wire.CodeCancel))
	st.finished()
	return err
}

func (st *quicStream) Reset(code wire.ErrorCode) error { return st.ResetWithReason(code, "") }

// ResetWithReason resets both directions with code; QUIC carries no reason.
func (st *quicStream) ResetWithReason(code wire.ErrorCode, _ string) error {
	st.mu.Lock()
	st.wdone = true
	st.mu.Unlock()
	resetQUIC(st.qs, code)
	st.finished()
	return nil
}

func (st *quicStream) Service() string                    { return st.service }
func (st *quicStream) LocalAddr() net.Addr                { return st.s.conn.LocalAddr() }
func (st *quicStream) RemoteAddr() net.Addr               { return st.s.conn.RemoteAddr() }
func (st *quicStream) SetDeadline(t time.Time) error      { return st.qs.SetDeadline(t) }
func (st *quicStream) SetReadDeadline(t time.Time) error  { return st.qs.SetReadDeadline(t) }
func (st *quicStream) SetWriteDeadline(t time.Time) error { return st.qs.SetWriteDeadline(t) }
