package wire

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Stream is one bidirectional stream of a Session. It implements net.Conn;
// CloseWrite half-closes it. Every Write is also a message: its bytes go
// out as DATA frames of which all but the last carry FlagMore, so a peer
// may read it back whole with ReadMessage.
//
// Deadlines only bound the waiting of the call they apply to; a missed
// deadline leaves the stream intact and usable.
type Stream struct {
	s       *Session
	id      uint32
	service string

	mu           sync.Mutex
	q            chunkRing // received, unread DATA
	recvWindow   int       // credit the peer may still spend
	unacked      int       // credit consumed locally, not yet granted back
	sendWindow   int64     // credit we may still spend
	remoteClosed bool      // CLOSE received
	localClosed  bool      // Close called
	writeClosed  bool      // CloseWrite or Close called
	sentEnd      bool      // CLOSE or RESET sent, or RESET received: send nothing more
	recvEnd      bool      // CLOSE or RESET received
	resetDone    bool      // reset either way
	rerr         error     // returned by reads once the queue is empty
	werr         error     // returned by writes
	readWait     chan struct{}
	writeWait    chan struct{}

	// A Read parked for data offers its buffer (rwait); the read loop may
	// claim it (rclaim) and put a payload straight into it (rgot bytes,
	// freeing rcredit credit). A claimed buffer is never waited on for the
	// connection, and the Read does not return while it is claimed.
	rwait   []byte
	rclaim  bool
	rgot    int
	rcredit int

	wakeQueued bool // in the session's wake list; the read loop's alone

	writeMu sync.Mutex // one Write (message) at a time
	rdl     deadline
	wdl     deadline
}

var _ net.Conn = (*Stream)(nil)

func newStream(s *Session, id uint32, service string) *Stream {
	return &Stream{
		s:          s,
		id:         id,
		service:    service,
		recvWindow: s.cfg.WindowSize,
		sendWindow: int64(s.peerWindow),
		readWait:   make(chan struct{}, 1),
		writeWait:  make(chan struct{}, 1),
		rdl:        newDeadline(),
		wdl:        newDeadline(),
	}
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func passed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// ID returns the stream id (odd when the client opened it).
func (st *Stream) ID() uint32 { return st.id }

// Service returns the service name carried by the stream's OPEN frame.
func (st *Stream) Service() string { return st.service }

// Session returns the session the stream belongs to.
func (st *Stream) Session() *Session { return st.s }

// LocalAddr returns the session connection's local address.
func (st *Stream) LocalAddr() net.Addr { return st.s.conn.LocalAddr() }

// RemoteAddr returns the session connection's remote address.
func (st *Stream) RemoteAddr() net.Addr { return st.s.conn.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (st *Stream) SetDeadline(t time.Time) error {
	st.SetReadDeadline(t)  //nolint:errcheck // never fails
	st.SetWriteDeadline(t) //nolint:errcheck // never fails
	return nil
}

// SetReadDeadline bounds Read and ReadMessage; the zero time removes it.
func (st *Stream) SetReadDeadline(t time.Time) error {
	st.rdl.set(t)
	notify(st.readWait)
	return nil
}

// SetWriteDeadline bounds the wait for flow-control credit in Write; the
// zero time removes it. A write already handed to the connection completes
// or fails within the session's WriteTimeout.
func (st *Stream) SetWriteDeadline(t time.Time) error {
	st.wdl.set(t)
	notify(st.writeWait)
	return nil
}

// consumeLocked copies queued data into p and returns the byte count and
// the credit it frees.
func (st *Stream) consumeLocked(p []byte) (n, credit int) {
	for n < len(p) && st.q.len() > 0 {
		c := st.q.front()
		k := copy(p[n:], (*c.b)[c.off:])
		n += k
		c.off += k
		credit += k
		if c.off == len(*c.b) {
			putBuf(c.b)
			st.q.pop()
			credit += DataFrameCost
		}
	}
	// Drop empty frames at the head so a later Read does not stop on them.
	for st.q.len() > 0 && len(*st.q.front().b) == 0 {
		putBuf(st.q.front().b)
		st.q.pop()
		credit += DataFrameCost
	}
	return n, credit
}

// creditLocked records consumed credit and returns a WINDOW_UPDATE
// increment to send once a quarter of the window has been consumed.
func (st *Stream) creditLocked(credit int) uint32 {
	st.unacked += credit
	if st.recvEnd || st.unacked < st.s.cfg.WindowSize/4 {
		return 0
	}
	inc := st.unacked
	st.unacked = 0
	st.recvWindow += inc
	return uint32(inc)
}

func (st *Stream) grant(inc uint32) {
	if inc > 0 {
		st.s.writeU32(FrameWindowUpdate, st.id, inc) //nolint:errcheck // a failed write ends the session
	}
}

// Read reads stream data. It returns io.EOF after the peer's CLOSE and a
// *StreamError after a RESET, once the data received before it is read.
// While it waits, the session may read the next payload straight into p.
func (st *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		st.mu.Lock()
		if st.rclaim {
			// The read loop is filling p without waiting on the network;
			// it wakes us when done.
			st.mu.Unlock()
			<-st.readWait
			continue
		}
		st.rwait = nil
		if st.rgot > 0 {
			// Data queued behind the payload put in p follows it.
			k, credit := st.consumeLocked(p[st.rgot:])
			n := st.rgot + k
			inc := st.creditLocked(st.rcredit + credit)
			st.rgot, st.rcredit = 0, 0
			st.mu.Unlock()
			st.grant(inc)
			return n, nil
		}
		if st.localClosed {
			st.mu.Unlock()
			return 0, net.ErrClosed
		}
		dl := st.rdl.wait()
		if passed(dl) {
			st.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		if st.q.len() > 0 {
			n, credit := st.consumeLocked(p)
			inc := st.creditLocked(credit)
			st.mu.Unlock()
			st.grant(inc)
			if n > 0 {
				return n, nil
			}
			continue
		}
		if st.remoteClosed {
			st.mu.Unlock()
			return 0, io.EOF
		}
		if st.rerr != nil {
			err := st.rerr
			st.mu.Unlock()
			return 0, err
		}
		st.rwait = p
		st.mu.Unlock()
		select {
		case <-st.readWait:
		case <-dl:
		}
	}
}

// claimRead lends the read loop the buffer of a Read parked on st, cut to
// n, for a DATA payload of n bytes that may go there: nothing is queued
// before it and it is within the window. It returns nil otherwise.
func (st *Stream) claimRead(n int) []byte {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.rwait == nil || st.rclaim || st.rgot > 0 || st.q.len() > 0 || st.resetDone || st.remoteClosed ||
		st.localClosed || n+DataFrameCost > st.recvWindow {
		return nil
	}
	st.rclaim = true
	p := st.rwait
	st.rwait = nil
	return p[:min(len(p), n)]
}

// abandonClaim gives a claimed buffer back untouched (as far as the Read
// can tell: it returns nothing from it).
func (st *Stream) abandonClaim() {
	st.mu.Lock()
	st.rclaim = false
	st.mu.Unlock()
	notify(st.readWait)
}

// deliverClaim completes a claim: the first k bytes of an n-byte payload
// are in the Read's buffer, the rest (if any) in rest, queued behind.
func (st *Stream) deliverClaim(n, k int, rest *[]byte, more bool) {
	st.mu.Lock()
	st.rclaim = false
	st.recvWindow -= n + DataFrameCost
	st.rgot = k
	switch {
	case rest == nil:
		st.rcredit = k + DataFrameCost
	case st.resetDone || st.localClosed:
		st.rcredit = k
		putBuf(rest)
	default:
		st.rcredit = k
		st.q.push(chunk{b: rest, more: more})
	}
	st.mu.Unlock()
	st.s.wakeLater(st)
}

// WriteTo writes the stream's data to w until EOF, without an intermediate
// buffer. It implements io.WriterTo.
func (st *Stream) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		st.mu.Lock()
		if st.localClosed {
			st.mu.Unlock()
			return total, net.ErrClosed
		}
		dl := st.rdl.wait()
		if passed(dl) {
			st.mu.Unlock()
			return total, os.ErrDeadlineExceeded
		}
		if st.q.len() > 0 {
			c := *st.q.front()
			st.q.pop()
			inc := st.creditLocked(len(*c.b) - c.off + DataFrameCost)
			st.mu.Unlock()
			st.grant(inc)
			n, err := w.Write((*c.b)[c.off:])
			putBuf(c.b)
			total += int64(n)
			if err != nil {
				return total, err
			}
			continue
		}
		if st.remoteClosed {
			st.mu.Unlock()
			return total, nil
		}
		if st.rerr != nil {
			err := st.rerr
			st.mu.Unlock()
			return total, err
		}
		st.mu.Unlock()
		select {
		case <-st.readWait:
		case <-dl:
		}
	}
}

// ReadMessage reads the rest of the current message (one Write or
// WriteMessage by the peer) and appends it to dst. A message over the
// session's MaxMessageSize is consumed and discarded, and ErrMessageTooLarge
// is returned. At the end of the stream it returns io.EOF, or
// io.ErrUnexpectedEOF inside a message.
func (st *Stream) ReadMessage(dst []byte) ([]byte, error) {
	start, tooBig, got := len(dst), false, false
	limit := st.s.cfg.MaxMessageSize
	for {
		st.mu.Lock()
		if st.localClosed {
			st.mu.Unlock()
			return dst, net.ErrClosed
		}
		dl := st.rdl.wait()
		if passed(dl) {
			st.mu.Unlock()
			return dst, os.ErrDeadlineExceeded
		}
		credit, complete := 0, false
		for st.q.len() > 0 && !complete {
			c := st.q.front()
			b := (*c.b)[c.off:]
			if !tooBig && len(dst)-start+len(b) > limit {
				tooBig = true
				dst = dst[:start]
			}
			if !tooBig {
				dst = append(dst, b...)
			}
			credit += len(b) + DataFrameCost
			complete = !c.more
			putBuf(c.b)
			st.q.pop()
			got = true
		}
		inc := st.creditLocked(credit)
		remoteClosed, rerr := st.remoteClosed, st.rerr
		st.mu.Unlock()
		st.grant(inc)
		switch {
		case complete && tooBig:
			return dst[:start], ErrMessageTooLarge
		case complete:
			return dst, nil
		case credit > 0:
			continue
		case remoteClosed && got:
			return dst, io.ErrUnexpectedEOF
		case remoteClosed:
			return dst, io.EOF
		case rerr != nil:
			return dst, rerr
		}
		select {
		case <-st.readWait:
		case <-dl:
		}
	}
}

// Write writes p as one message. It blocks while the peer's window is
// exhausted, until the write deadline.
func (st *Stream) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return st.write(p)
}

// WriteMessage writes p as one message; unlike Write, an empty p sends an
// empty message.
func (st *Stream) WriteMessage(p []byte) error {
	_, err := st.write(p)
	return err
}

func (st *Stream) writeErrLocked() error {
	switch {
	case st.werr != nil:
		return st.werr
	case st.writeClosed:
		return fmt.Errorf("wire: stream %d closed for writing: %w", st.id, net.ErrClosed)
	}
	return nil
}

func (st *Stream) write(p []byte) (int, error) {
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	written, sent := 0, false
	for !sent || written < len(p) {
		st.mu.Lock()
		if err := st.writeErrLocked(); err != nil {
			st.mu.Unlock()
			return written, err
		}
		dl := st.wdl.wait()
		if passed(dl) {
			st.mu.Unlock()
			return written, os.ErrDeadlineExceeded
		}
		rest := len(p) - written
		n := min(rest, st.s.peerMaxFrame, int(st.sendWindow)-DataFrameCost)
		if n <= 0 && !(rest == 0 && st.sendWindow >= DataFrameCost) {
			st.mu.Unlock()
			select {
			case <-st.writeWait:
			case <-dl:
			}
			continue
		}
		n = max(n, 0)
		st.sendWindow -= int64(n + DataFrameCost)
		st.mu.Unlock()
		var f Flags
		if written+n < len(p) {
			f = FlagMore
		}
		if err := st.s.writeData(st.id, f, p[written:written+n]); err != nil {
			return written, err
		}
		written += n
		sent = true
	}
	return written, nil
}

// ReadFrom copies r to the stream until EOF. It implements io.ReaderFrom.
func (st *Stream) ReadFrom(r io.Reader) (int64, error) {
	bp := getBuf(st.s.peerMaxFrame)
	defer putBuf(bp)
	buf := *bp
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := st.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// CloseWrite half-closes the stream: the peer reads io.EOF after the data
// already written, while this side can still read. A Write in progress is
// interrupted.
func (st *Stream) CloseWrite() error {
	st.mu.Lock()
	if st.writeClosed || st.resetDone {
		st.mu.Unlock()
		return nil
	}
	st.writeClosed = true
	st.mu.Unlock()
	notify(st.writeWait)
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	return st.sendClose()
}

func (st *Stream) sendClose() error {
	st.mu.Lock()
	if st.sentEnd {
		st.mu.Unlock()
		return nil
	}
	st.sentEnd = true
	finished := st.recvEnd
	st.mu.Unlock()
	err := st.s.writeFrame(FrameClose, 0, st.id, nil)
	if finished {
		st.s.removeStream(st.id)
	}
	if st.s.isDone() {
		return nil // nothing left to close on a dead session
	}
	return err
}

// Close closes both directions: it sends CLOSE after the data already
// written, and unread or later data from the peer is discarded (with a
// RESET(CANCEL) if some was unread, or RESET(STREAM_CLOSED) when more
// arrives). Close never waits for the peer, and waits for the connection
// at most the session's WriteTimeout.
func (st *Stream) Close() error {
	st.mu.Lock()
	if st.localClosed {
		st.mu.Unlock()
		return nil
	}
	st.localClosed = true
	st.writeClosed = true
	unread := st.q.len() > 0
	for st.q.len() > 0 {
		putBuf(st.q.front().b)
		st.q.pop()
	}
	needReset := unread && !st.recvEnd && !st.resetDone
	st.mu.Unlock()
	notify(st.readWait)
	notify(st.writeWait)
	st.rdl.stop()
	st.wdl.stop()
	if needReset {
		return st.Reset(CodeCancel)
	}
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	return st.sendClose()
}

// Reset aborts the stream in both directions with code: the peer's reads
// and writes fail with a *StreamError carrying it. An acceptor refuses an
// OPEN this way, e.g. Reset(CodeNoSuchService).
func (st *Stream) Reset(code ErrorCode) error {
	return st.ResetWithReason(code, "")
}

// ResetWithReason is Reset with a human-readable reason for the peer (at
// most MaxReasonSize bytes are sent).
func (st *Stream) ResetWithReason(code ErrorCode, reason string) error {
	if !st.localReset(code, reason) {
		return nil
	}
	return st.s.writeReset(st.id, code, reason)
}

// localReset marks the stream reset by this side and reports whether it
// was not finished already (and so a RESET must be sent).
func (st *Stream) localReset(code ErrorCode, reason string) bool {
	st.mu.Lock()
	if st.resetDone || (st.sentEnd && st.recvEnd) {
		st.mu.Unlock()
		return false
	}
	st.resetDone, st.sentEnd = true, true
	err := &StreamError{StreamID: st.id, Code: code, Reason: reason}
	if st.rerr == nil {
		st.rerr = err
	}
	if st.werr == nil {
		st.werr = err
	}
	for st.q.len() > 0 {
		putBuf(st.q.front().b)
		st.q.pop()
	}
	st.mu.Unlock()
	notify(st.readWait)
	notify(st.writeWait)
	st.s.removeStream(st.id)
	return true
}

func (st *Stream) remoteReset(code ErrorCode, reason string) {
	st.mu.Lock()
	if st.resetDone {
		st.mu.Unlock()
		return
	}
	// The stream is finished: this side sends nothing more on it, not even
	// the CLOSE a later Close would otherwise send (docs/wire.md 6.3).
	st.resetDone, st.recvEnd, st.sentEnd = true, true, true
	err := &StreamError{StreamID: st.id, Code: code, Reason: reason, Remote: true}
	if st.rerr == nil {
		st.rerr = err
	}
	if st.werr == nil {
		st.werr = err
	}
	st.mu.Unlock()
	notify(st.readWait)
	notify(st.writeWait)
	st.s.removeStream(st.id)
}

func (st *Stream) remoteClose() {
	st.mu.Lock()
	if st.recvEnd {
		st.mu.Unlock()
		return
	}
	st.remoteClosed, st.recvEnd = true, true
	finished := st.sentEnd
	st.mu.Unlock()
	notify(st.readWait)
	if finished {
		st.s.removeStream(st.id)
	}
}

func (st *Stream) sessionEnded(err error) {
	st.mu.Lock()
	if st.rerr == nil {
		st.rerr = err
	}
	if st.werr == nil {
		st.werr = err
	}
	st.mu.Unlock()
	notify(st.readWait)
	notify(st.writeWait)
}

// addCredit applies a WINDOW_UPDATE; false means the window overflowed.
func (st *Stream) addCredit(inc uint32) bool {
	st.mu.Lock()
	if st.sendWindow+int64(inc) > MaxWindow {
		st.mu.Unlock()
		return false
	}
	st.sendWindow += int64(inc)
	st.mu.Unlock()
	notify(st.writeWait)
	return true
}

// pushData queues a received DATA payload; a non-zero code means the frame
// broke the protocol and the stream must be reset with it.
func (st *Stream) pushData(bp *[]byte, more bool) ErrorCode {
	n := len(*bp)
	st.mu.Lock()
	var code ErrorCode
	switch {
	case st.resetDone:
		// In flight when the stream was reset: drop.
	case st.remoteClosed:
		code = CodeStreamClosed
	case n+DataFrameCost > st.recvWindow:
		code = CodeFlowControl
	case st.localClosed:
		st.recvWindow -= n + DataFrameCost
		code = CodeStreamClosed
	default:
		st.recvWindow -= n + DataFrameCost
		st.q.push(chunk{b: bp, more: more})
		st.mu.Unlock()
		st.s.wakeLater(st)
		return CodeNoError
	}
	st.mu.Unlock()
	putBuf(bp)
	return code
}
