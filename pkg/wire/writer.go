package wire

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"
)

// ctrlFrame is a frame queued by the read loop, which never writes itself.
type ctrlFrame struct {
	t    FrameType
	id   uint32
	code ErrorCode
	val  uint64
}

const ctrlQueueSize = 128

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

// armWrite sets the connection's write deadline before bytes may reach
// it. Moving a deadline costs a timer update, so a deadline set less than
// a sixteenth of WriteTimeout ago is kept: every write still gets at
// least 15/16 of WriteTimeout.
func (s *Session) armWrite() {
	now := time.Now()
	if now.Sub(s.armedAt) < s.cfg.WriteTimeout/16 {
		return
	}
	s.armedAt = now
	s.conn.SetWriteDeadline(now.Add(s.cfg.WriteTimeout)) //nolint:errcheck // a failing conn fails the write itself
}

// disarmWrite forgets the armed deadline after another one was set.
func (s *Session) disarmWrite() { s.armedAt = time.Time{} }

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
		if err == nil {
			s.wroteOK()
		}
		return err
	}
	if len(s.wbuf)+len(payload)+Overhead > cap(s.wbuf) {
		if err := s.flushLocked(); err != nil {
			return err
		}
		if len(payload)+Overhead > cap(s.wbuf) {
			s.armWrite()
			_, err := s.conn.Write(appendFrameVersion(nil, s.version, t, f, id, payload))
			if err == nil {
				s.wroteOK()
			}
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
	if err == nil {
		s.wroteOK()
	}
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

// enqueue hands a frame to the control writer if the queue has room; the
// keepalive's PINGs use it and are simply skipped when replies are queued.
func (s *Session) enqueue(c ctrlFrame) {
	select {
	case s.ctrlCh <- c:
	default:
	}
}

// replyStall is how long the read loop waits for room in the reply queue
// while the connection accepts no write at all, before it decides the peer
// provokes replies it does not read (ENHANCE_YOUR_CALM).
const replyStall = time.Second

// reply queues an answer the read loop owes the peer (PONG, RESET). The
// read loop never writes itself; when the queue is full it stops reading
// until the control writer makes room, so a peer that reads its answers
// gets every one of them, however many it provokes. Only when the
// connection takes no write for replyStall (capped by WriteTimeout) is the
// peer cut off.
func (s *Session) reply(c ctrlFrame) {
	select {
	case s.ctrlCh <- c:
		return
	default:
	}
	stall := time.NewTimer(min(replyStall, s.cfg.WriteTimeout))
	defer stall.Stop()
	for {
		select {
		case s.ctrlCh <- c:
			return
		case <-s.wrote:
			stall.Reset(min(replyStall, s.cfg.WriteTimeout))
		case <-stall.C:
			s.overload.Store(true) // the read loop ends the session
			return
		case <-s.done:
			return
		}
	}
}

// wroteOK records that a write to the connection completed.
func (s *Session) wroteOK() {
	select {
	case s.wrote <- struct{}{}:
	default:
	}
}

// ctrlBatch bounds the replies the control writer puts in one flush.
const ctrlBatch = 256

func (s *Session) ctrlLoop() {
	defer s.wg.Done()
	for {
		var c ctrlFrame
		select {
		case <-s.done:
			return
		case c = <-s.ctrlCh:
		}
		// Everything queued goes out under one lock and one flush.
		s.writers.Add(1)
		s.wmu.Lock()
		err := s.writeCtrlLocked(c)
		for i := 1; err == nil && i < ctrlBatch; i++ {
			select {
			case c = <-s.ctrlCh:
				err = s.writeCtrlLocked(c)
				continue
			default:
			}
			break
		}
		if s.endWrite(err) != nil {
			return
		}
	}
}

func (s *Session) writeCtrlLocked(c ctrlFrame) error {
	switch c.t {
	case FramePong, FramePing:
		binary.BigEndian.PutUint64(s.wscratch[:8], c.val)
		return s.writeLocked(c.t, 0, 0, s.wscratch[:8])
	case FrameReset:
		binary.BigEndian.PutUint32(s.wscratch[:4], uint32(c.code))
		return s.writeLocked(FrameReset, 0, c.id, s.wscratch[:4])
	}
	return nil
}

// writeData sends one DATA frame, compressed when that was negotiated and
// pays off.
func (s *Session) writeData(id uint32, f Flags, p []byte) error {
	if s.compression != CompressionNone && len(p) >= minCompressSize {
		cb := getBuf(len(p) + len(p)/4 + 64)
		out, ok := compress(s.compression, *cb, p)
		var err error
		if ok {
			err = s.writeFrame(FrameData, f|FlagCompressed, id, out)
		}
		putBuf(cb)
		if ok {
			return err
		}
	}
	return s.writeFrame(FrameData, f, id, p)
}
