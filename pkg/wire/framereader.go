package wire

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"net"
	"syscall"
)

// errWouldBlock reports that a non-blocking read found nothing to read.
var errWouldBlock = errors.New("wire: read would block")

// Read buffer sizes of a session. A session that receives little holds
// only the small buffer; one that receives a steady flow switches to a
// pooled large buffer, so a read syscall brings in many small frames at
// once, and back when the flow stops.
const (
	smallReadBuffer = 4 << 10
	// largeReadBuffer holds a whole default-size (64 KiB) DATA frame and
	// the header of the next, so one read takes in a frame that arrived
	// whole; larger frames read their payload with readv.
	largeReadBuffer = 128 << 10
	// lightReads is how many reads in a row must bring in under half the
	// small buffer before a session goes back to it.
	lightReads = 16
)

// frameReader reads frames off a session's connection. Headers, control
// frames and DATA frames that fit are read into its own buffer, many per
// syscall. A DATA payload that does not fit goes straight to its
// destination — the buffer of a Read waiting on the stream, or a queued
// chunk — with readv, which brings in the rest of the payload, the
// trailer and what follows in one syscall.
type frameReader struct {
	conn  net.Conn
	rc    syscall.RawConn // nil when conn is not a plain socket (no readv)
	buf   []byte          // unread bytes are buf[r:w]
	r, w  int
	small []byte
	large *[]byte // pooled; nil while the small buffer is in use
	last  int     // bytes the last read brought into buf
	light int     // reads in a row that brought in little
	iov   [3][]byte
	op    readvOp
	hdr   Header
	// beforeRead runs before every read that may wait for the connection.
	beforeRead func()
	// lean is set while large DATA frames arrive: reads then stop at the
	// next frame's header, so each payload is read with one readv straight
	// into its destination, trailer and next header included, and never
	// copied through the buffer.
	lean bool
}

// leanMin is the DATA payload size from which the reader goes lean.
const leanMin = 16 << 10

func newFrameReader(conn net.Conn) *frameReader {
	fr := &frameReader{conn: conn, small: make([]byte, smallReadBuffer)}
	fr.buf = fr.small
	fr.rc = rawConn(conn)
	return fr
}

// buffered returns the unread bytes.
func (fr *frameReader) buffered() int { return fr.w - fr.r }

// release returns the large buffer to its pool; the reader is unusable after.
func (fr *frameReader) release() {
	if fr.large != nil {
		putBuf(fr.large)
		fr.large = nil
	}
	fr.buf = nil
}

// resize switches buffers while the unread bytes fit: to the large one
// when a read filled the small one (or a frame needs it), back to the
// small one after lightReads reads in a row brought in little.
func (fr *frameReader) resize(need int) {
	if fr.last < len(fr.small)/2 {
		fr.light++
	} else {
		fr.light = 0
	}
	switch {
	case fr.large == nil && (need > len(fr.small) || fr.last == len(fr.small)):
		fr.large = getBuf(largeReadBuffer)
		n := copy(*fr.large, fr.buf[fr.r:fr.w])
		fr.buf, fr.r, fr.w = *fr.large, 0, n
	case fr.large != nil && fr.r == fr.w && need <= len(fr.small) && fr.light >= lightReads:
		putBuf(fr.large)
		fr.large = nil
		fr.buf, fr.r, fr.w = fr.small, 0, 0
	}
}

// fill reads until at least need (<= largeReadBuffer) bytes are buffered.
func (fr *frameReader) fill(need int) error {
	for fr.w-fr.r < need {
		if fr.r == fr.w {
			fr.r, fr.w = 0, 0
		}
		fr.resize(need)
		if fr.r+need > len(fr.buf) {
			fr.w = copy(fr.buf, fr.buf[fr.r:fr.w])
			fr.r = 0
		}
		if fr.beforeRead != nil {
			fr.beforeRead()
		}
		end := len(fr.buf)
		if fr.lean && fr.rc != nil {
			end = fr.r + need
		}
		n, err := fr.conn.Read(fr.buf[fr.w:end])
		fr.w += n
		fr.last = n
		if err != nil {
			if fr.w-fr.r >= need {
				return nil
			}
			if err == io.EOF && fr.w > fr.r {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// header returns the next frame's header, validated against maxSize,
// without consuming it.
func (fr *frameReader) header(maxSize int) (Header, error) {
	var h Header
	if err := fr.fill(HeaderSize); err != nil {
		return h, err
	}
	copy(h[:], fr.buf[fr.r:])
	if err := h.validate(maxSize); err != nil {
		return h, &DecodeError{Header: h, Err: err}
	}
	return h, nil
}

// fits reports whether the whole frame with header h can sit in the
// reader's buffer.
func fits(h *Header) bool {
	return int(h.Length())+Overhead <= largeReadBuffer
}

// payload reads the frame whose header h was returned by header, for a
// frame that fits, checks its trailer and consumes it. The payload
// aliases the reader's buffer until the next call.
func (fr *frameReader) payload(h *Header) ([]byte, error) {
	n := int(h.Length())
	if err := fr.fill(n + Overhead); err != nil {
		return nil, unexpected(err)
	}
	end := fr.r + HeaderSize + n
	f := fr.buf[fr.r:end]
	want := binary.BigEndian.Uint32(fr.buf[end:])
	fr.r = end + TrailerSize
	if crc32.Update(0, castagnoli, f) != want {
		return nil, &DecodeError{Header: *h, Err: ErrChecksum}
	}
	return f[HeaderSize:], nil
}

// frame reads one whole frame of at most maxSize payload bytes (which
// must fit the buffer); the payload aliases the buffer until the next call.
func (fr *frameReader) frame(maxSize int) (Frame, error) {
	h, err := fr.header(maxSize)
	if err != nil {
		return Frame{Header: h}, err
	}
	p, err := fr.payload(&h)
	return Frame{Header: h, Payload: p}, err
}

// skipHeader consumes the header that header returned.
func (fr *frameReader) skipHeader() { fr.r += HeaderSize }

// payloadTo reads the payload of the frame with header h (already
// consumed with skipHeader) into a and then b, len(a)+len(b) ==
// h.Length(), of which the first placed bytes are already there; then it
// checks the trailer and consumes it. With nonBlocking it returns done ==
// false as soon as it would have to wait for the connection (payload or
// trailer), so that the caller can take back a buffer it only borrowed
// and call again, blocking, with the bytes placed so far.
func (fr *frameReader) payloadTo(h *Header, a, b []byte, placed int, nonBlocking bool) (int, bool, error) {
	want := len(a) + len(b)
	for placed < want {
		if fr.r < fr.w { // whatever is buffered first
			var k int
			if placed < len(a) {
				k = copy(a[placed:], fr.buf[fr.r:fr.w])
			} else {
				k = copy(b[placed-len(a):], fr.buf[fr.r:fr.w])
			}
			fr.r += k
			placed += k
			continue
		}
		fr.r, fr.w = 0, 0
		fr.resize(0)
		iov := fr.iov[:0]
		if placed < len(a) {
			iov = append(iov, a[placed:])
			if len(b) > 0 {
				iov = append(iov, b)
			}
		} else {
			iov = append(iov, b[placed-len(a):])
		}
		if fr.lean {
			iov = append(iov, fr.buf[:TrailerSize+HeaderSize])
		} else {
			iov = append(iov, fr.buf)
		}
		if !nonBlocking && fr.beforeRead != nil {
			fr.beforeRead()
		}
		n, err := fr.readv(iov, nonBlocking)
		fr.iov = [3][]byte{}
		if n > 0 {
			got := min(n, want-placed)
			placed += got
			fr.w = n - got
			fr.last = fr.w
		}
		if err == errWouldBlock {
			return placed, false, nil
		}
		if err != nil {
			return placed, false, unexpected(err)
		}
	}
	if fr.buffered() < TrailerSize {
		if nonBlocking {
			return placed, false, nil
		}
		if err := fr.fill(TrailerSize); err != nil {
			return placed, false, unexpected(err)
		}
	}
	fr.hdr = *h // checksummed from the reader so that h does not escape
	sum := crc32.Update(crc32.Update(crc32.Update(0, castagnoli, fr.hdr[:]), castagnoli, a), castagnoli, b)
	got := binary.BigEndian.Uint32(fr.buf[fr.r:])
	fr.r += TrailerSize
	if sum != got {
		return placed, false, &DecodeError{Header: *h, Err: ErrChecksum}
	}
	return placed, true, nil
}

// readv reads into the iovecs with one readv where the connection allows
// it, else with one Read into the first. nonBlocking returns
// errWouldBlock instead of waiting when nothing is available.
func (fr *frameReader) readv(iov [][]byte, nonBlocking bool) (int, error) {
	if fr.rc == nil {
		if nonBlocking {
			return 0, errWouldBlock
		}
		n, err := fr.conn.Read(iov[0])
		if n == 0 && err == nil {
			err = io.ErrNoProgress
		}
		return n, err
	}
	return readvRaw(fr.rc, &fr.op, iov, nonBlocking)
}
