package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// maxControlPayload bounds the payload of every frame type but DATA.
const maxControlPayload = 8 + MaxReasonSize

func (s *Session) readLoop() {
	defer s.wg.Done()
	defer s.fr.release()
	defer s.wakeAll()
	s.fr.beforeRead = s.wakeAll
	for {
		h, err := s.fr.header(s.cfg.MaxFrameSize)
		if err == nil {
			s.lastRecv.Store(int64(time.Since(s.epoch)))
			err = s.handle(&h)
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

// wakeLater schedules a wake-up of st's reader for before the read loop
// next reads the connection, so a reader is woken once for all the frames
// one read brought in, not once per frame. Only the read loop calls it.
func (s *Session) wakeLater(st *Stream) {
	if !st.wakeQueued {
		st.wakeQueued = true
		s.wakeq = append(s.wakeq, st)
	}
}

// wakeAll wakes the readers wakeLater scheduled.
func (s *Session) wakeAll() {
	for i, st := range s.wakeq {
		st.wakeQueued = false
		notify(st.readWait)
		s.wakeq[i] = nil
	}
	s.wakeq = s.wakeq[:0]
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
		s.fail(fmt.Errorf("wire: connection closed by peer: %w", err))
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
func (s *Session) handle(h *Header) error {
	if h.Version() != s.version {
		return protoErr("frame version %d on a version %d session", h.Version(), s.version)
	}
	t, id := h.Type(), h.StreamID()
	if id > MaxStreamID {
		return protoErr("%v with stream id %d over 2^31-1", t, id)
	}
	if t == FrameData {
		return s.handleData(h)
	}
	if h.Length() > maxControlPayload {
		return sizeErr(t, int(h.Length()))
	}
	p, err := s.fr.payload(h)
	if err != nil {
		return err
	}
	if err := checkControl(t, id, len(p)); err != nil {
		return err
	}
	switch t {
	case FramePing:
		s.reply(ctrlFrame{t: FramePong, val: binary.BigEndian.Uint64(p)})
		return nil
	case FramePong:
		v := binary.BigEndian.Uint64(p)
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
		st := s.lookup(id)
		if st == nil {
			s.unknownStream(id, t)
			return nil
		}
		switch t {
		case FrameWindowUpdate:
			inc := binary.BigEndian.Uint32(p)
			if inc == 0 {
				s.resetStream(st, CodeProtocol)
			} else if !st.addCredit(inc) {
				s.resetStream(st, CodeFlowControl)
			}
		case FrameClose:
			st.remoteClose()
		case FrameReset:
			code, reason, _ := ParseCodeReason(p)
			st.remoteReset(code, reason)
		}
		return nil
	case FrameGoAway:
		last, code, reason, _ := ParseGoAway(p)
		return s.handleGoAway(last, code, reason)
	case FrameError:
		code, reason, _ := ParseCodeReason(p)
		return &SessionError{Code: code, Reason: reason, Remote: true}
	default: // HELLO/HELLO_ACK after the handshake, or unknown types
		return protoErr("unexpected %v frame", t)
	}
}

// checkControl applies the stream id class and payload length rules of
// docs/wire.md sections 4 and 6.1 to a frame other than DATA: a wrong
// class is a PROTOCOL_ERROR, a payload length its type does not allow a
// FRAME_SIZE_ERROR, both connection errors.
func checkControl(t FrameType, id uint32, n int) error {
	connLevel := t == FramePing || t == FramePong || t == FrameGoAway || t == FrameError
	if !t.Known() || t == FrameHello || t == FrameHelloAck {
		return protoErr("unexpected %v frame", t)
	}
	if connLevel != (id == 0) {
		return protoErr("%v on stream %d", t, id)
	}
	var ok bool
	switch t {
	case FramePing, FramePong:
		ok = n == 8
	case FrameWindowUpdate:
		ok = n == 4
	case FrameClose:
		ok = n == 0
	case FrameReset, FrameError:
		ok = n >= 4 && n <= 4+MaxReasonSize
	case FrameGoAway:
		ok = n >= 8 && n <= 8+MaxReasonSize
	case FrameOpen:
		ok = true // a bad name is a stream error (section 6.2)
	}
	if !ok {
		return sizeErr(t, n)
	}
	return nil
}

func sizeErr(t FrameType, n int) error {
	return &SessionError{Code: CodeFrameSize, Reason: fmt.Sprintf("%v payload of %d bytes", t, n)}
}

func (s *Session) handleOpen(id uint32, p []byte) error {
	s.mu.Lock()
	if !s.isPeerID(id) || id <= s.lastPeerID {
		s.mu.Unlock()
		return protoErr("OPEN with stream id %d (last %d)", id, s.lastPeerID)
	}
	s.lastPeerID = id
	name := string(p)
	var refuse ErrorCode
	switch {
	case !ValidServiceName(name):
		refuse = CodeProtocol
	case s.goAwaySent || s.goAwayRecv:
		refuse = CodeRefused
	case len(s.streams) >= s.cfg.MaxStreams:
		refuse = CodeRefused
	}
	if refuse != 0 {
		s.mu.Unlock()
		s.reply(ctrlFrame{t: FrameReset, id: id, code: refuse})
		return nil
	}
	st := newStream(s, id, name)
	s.streams[id] = st
	s.mu.Unlock()
	select {
	case s.acceptCh <- st:
	default:
		s.removeStream(id)
		s.reply(ctrlFrame{t: FrameReset, id: id, code: CodeRefused})
	}
	return nil
}

// handleGoAway applies a received GOAWAY (docs/wire.md section 13): no
// stream opens on this connection any more, this side's streams above
// last were not processed and fail with REFUSED_STREAM, and a code other
// than NO_ERROR ends the session.
func (s *Session) handleGoAway(last uint32, code ErrorCode, reason string) error {
	s.mu.Lock()
	s.goAwayRecv = true
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
	if code != CodeNoError {
		return &SessionError{Code: code, Reason: reason, Remote: true}
	}
	return nil
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
		s.reply(ctrlFrame{t: FrameReset, id: id, code: CodeUnknownStream})
	}
}

// resetStream resets st from the read loop.
func (s *Session) resetStream(st *Stream, code ErrorCode) {
	if st.localReset(code, "") {
		s.reply(ctrlFrame{t: FrameReset, id: st.id, code: code})
	}
}

func (s *Session) handleData(h *Header) error {
	id, n := h.StreamID(), int(h.Length())
	if id == 0 {
		return protoErr("DATA on stream 0")
	}
	st := s.lookup(id)
	compressed := h.Flags()&FlagCompressed != 0
	if s.fr.rc == nil && fits(h) {
		// No readv: bring in the frame and what follows with one Read.
		if err := s.fr.fill(n + Overhead); err != nil {
			return unexpected(err)
		}
	}
	s.fr.skipHeader()
	s.fr.lean = n >= leanMin
	var bp *[]byte
	if st != nil && !compressed && n > 0 && (s.fr.rc != nil || s.fr.buffered() >= n+TrailerSize) {
		if p := st.claimRead(n); p != nil {
			var err error
			if bp, err = s.readClaimed(h, st, p); bp == nil || err != nil {
				return err
			}
		}
	}
	if bp == nil {
		bp = getBuf(n)
		if _, _, err := s.fr.payloadTo(h, *bp, nil, 0, false); err != nil {
			putBuf(bp)
			return err
		}
	}
	if st == nil {
		putBuf(bp)
		s.unknownStream(id, FrameData)
		return nil
	}
	if compressed {
		if s.compression == CompressionNone {
			putBuf(bp)
			s.resetStream(st, CodeCompression)
			return nil
		}
		p := *bp
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

// readClaimed reads a DATA payload straight into p, the buffer of a Read
// parked on st, and the rest (if p is shorter) into a chunk, as long as
// that needs no waiting for the connection. Then the Read returns and
// readClaimed returns nil. When the frame is not all there yet, the bytes
// placed so far move to a chunk, the Read gets its buffer back, and the
// chunk is returned for the caller to finish and queue.
func (s *Session) readClaimed(h *Header, st *Stream, p []byte) (*[]byte, error) {
	n := int(h.Length())
	var rest *[]byte
	var b []byte
	if len(p) < n {
		rest = getBuf(n - len(p))
		b = *rest
	}
	placed, done, err := s.fr.payloadTo(h, p, b, 0, true)
	if err != nil {
		st.abandonClaim()
		putBuf(rest)
		return nil, err
	}
	if done {
		st.deliverClaim(n, len(p), rest, h.Flags()&FlagMore != 0)
		return nil, nil
	}
	bp := getBuf(n)
	copy(*bp, p[:min(placed, len(p))])
	if placed > len(p) {
		copy((*bp)[len(p):], b[:placed-len(p)])
	}
	putBuf(rest)
	st.abandonClaim()
	if _, _, err := s.fr.payloadTo(h, *bp, nil, placed, false); err != nil {
		putBuf(bp)
		return nil, err
	}
	return bp, nil
}
