package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"unicode/utf8"
)

// Wire constants. docs/wire.md is the normative description; every number
// here appears there.
const (
	// HeaderSize is the size of the fixed frame header in bytes.
	HeaderSize = 16
	// TrailerSize is the size of the CRC-32C trailer in bytes.
	TrailerSize = 4
	// Overhead is the number of bytes a frame adds around its payload.
	Overhead = HeaderSize + TrailerSize

	// Version is the newest protocol version this package speaks.
	Version = 1
	// MinVersion is the oldest protocol version this package speaks.
	MinVersion = 1

	// DefaultMaxFrameSize is the default largest payload a peer accepts.
	DefaultMaxFrameSize = 64 << 10
	// MinMaxFrameSize is the smallest max_frame_size a peer may announce.
	MinMaxFrameSize = 1 << 10
	// MaxMaxFrameSize is the largest max_frame_size a peer may announce.
	MaxMaxFrameSize = 16 << 20
	// HandshakeMaxFrameSize caps the payload of frames read before the
	// handshake completes (HELLO, HELLO_ACK, ERROR).
	HandshakeMaxFrameSize = helloFixedSize + MaxTokenSize

	// MaxTokenSize is the largest auth token a HELLO may carry.
	MaxTokenSize = 4096
	// MaxServiceNameSize is the largest service name an OPEN may carry.
	MaxServiceNameSize = 255
	// MaxReasonSize is the largest reason text in RESET, GOAWAY and ERROR.
	MaxReasonSize = 256

	// DataFrameCost is the flow-control credit a DATA frame consumes on top
	// of its (uncompressed) payload length. It bounds the receiver's per-frame
	// bookkeeping and makes empty DATA frames cost credit.
	DataFrameCost = 32
	// MaxWindow is the largest flow-control window a stream may have.
	MaxWindow = 1<<31 - 1
	// MaxStreamID is the largest stream id; a frame with a larger one is a
	// connection error PROTOCOL_ERROR.
	MaxStreamID = 1<<31 - 1
)

// magic is the first four bytes of every frame: "SWBD".
var magic = [4]byte{'S', 'W', 'B', 'D'}

// castagnoli is the CRC-32C table; hash/crc32 uses the CPU's CRC32
// instruction for it where one exists.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// FrameType identifies what a frame carries. Every frame has the 16-byte
// header and the 4-byte CRC-32C trailer described on Header; the comment on
// each type gives its stream id rule and payload layout (big-endian).
type FrameType byte

// Frame types.
const (
	// FrameHello (0x01) is the first frame a client sends. Stream id 0.
	//   min_version u8 | max_version u8 | token_len u16 |
	//   max_frame_size u32 | initial_window u32 | features u32 |
	//   token [token_len]byte
	FrameHello FrameType = 0x01
	// FrameHelloAck (0x02) accepts a HELLO. Stream id 0. Exactly 16 bytes:
	//   version u8 | reserved u8 (0) | reserved u16 (0) |
	//   max_frame_size u32 | initial_window u32 | features u32
	FrameHelloAck FrameType = 0x02
	// FramePing (0x03) asks for a PONG. Stream id 0. Exactly 8 opaque bytes.
	FramePing FrameType = 0x03
	// FramePong (0x04) answers a PING. Stream id 0. The PING's 8 bytes.
	FramePong FrameType = 0x04
	// FrameOpen (0x05) opens a stream to a named service. Stream id is new:
	// odd from the client, even from the server. Payload: the service name,
	// 1..255 bytes of UTF-8.
	FrameOpen FrameType = 0x05
	// FrameData (0x06) carries stream bytes. Stream id of an open stream.
	// Payload: 0..max_frame_size bytes, compressed when FlagCompressed is
	// set; FlagMore marks a message continued in the next DATA frame.
	FrameData FrameType = 0x06
	// FrameWindowUpdate (0x07) grants send credit on a stream. Stream id of
	// an open stream. Exactly 4 bytes: increment u32 (>= 1; a window pushed
	// past 2^31-1 is a FLOW_CONTROL_ERROR).
	FrameWindowUpdate FrameType = 0x07
	// FrameClose (0x08) half-closes a stream: the sender sends no more DATA.
	// Stream id of an open stream. Empty payload.
	FrameClose FrameType = 0x08
	// FrameReset (0x09) aborts a stream in both directions. Stream id of the
	// stream. Payload: code u32 | reason (0..256 bytes UTF-8).
	FrameReset FrameType = 0x09
	// FrameGoAway (0x0a) stops new streams. Stream id 0. Payload:
	//   last_stream_id u32 | code u32 | reason (0..256 bytes UTF-8)
	// With code NO_ERROR existing streams drain; with any other code the
	// sender closes the connection after it.
	FrameGoAway FrameType = 0x0a
	// FrameError (0x0b) reports a fatal connection error (for example a
	// refused HELLO); the sender closes the connection after it. Stream id 0.
	// Payload: code u32 | reason (0..256 bytes UTF-8).
	FrameError FrameType = 0x0b
)

var frameTypeNames = [...]string{
	FrameHello:        "HELLO",
	FrameHelloAck:     "HELLO_ACK",
	FramePing:         "PING",
	FramePong:         "PONG",
	FrameOpen:         "OPEN",
	FrameData:         "DATA",
	FrameWindowUpdate: "WINDOW_UPDATE",
	FrameClose:        "CLOSE",
	FrameReset:        "RESET",
	FrameGoAway:       "GOAWAY",
	FrameError:        "ERROR",
}

// String returns the spec name of t.
func (t FrameType) String() string {
	if int(t) < len(frameTypeNames) && frameTypeNames[t] != "" {
		return frameTypeNames[t]
	}
	return fmt.Sprintf("FrameType(0x%02x)", byte(t))
}

// Known reports whether t is a frame type defined by this version.
func (t FrameType) Known() bool {
	return t >= FrameHello && t <= FrameError
}

// Flags are the per-frame flag bits (header bytes 6-7).
type Flags uint16

// Flag bits. Bits not defined for a frame type are sent as zero and ignored
// on receipt.
const (
	// FlagMore (DATA) says the message continues in the next DATA frame of
	// the stream.
	FlagMore Flags = 0x0001
	// FlagCompressed (DATA) says the payload is compressed with the
	// algorithm negotiated in HELLO/HELLO_ACK.
	FlagCompressed Flags = 0x0002
)

// Header is the fixed 16-byte frame header:
//
//	0-3   magic "SWBD" (0x53 0x57 0x42 0x44)
//	4     version u8
//	5     type u8
//	6-7   flags u16
//	8-11  stream id u32
//	12-15 payload length u32
//
// All integers are big-endian. The payload follows, then a CRC-32C
// (Castagnoli) of header and payload as a big-endian u32.
type Header [HeaderSize]byte

// MakeHeader returns a version-1 header.
func MakeHeader(t FrameType, f Flags, streamID uint32, length int) Header {
	var h Header
	h.set(Version, t, f, streamID, uint32(length))
	return h
}

func (h *Header) set(v byte, t FrameType, f Flags, streamID, length uint32) {
	copy(h[0:4], magic[:])
	h[4] = v
	h[5] = byte(t)
	binary.BigEndian.PutUint16(h[6:8], uint16(f))
	binary.BigEndian.PutUint32(h[8:12], streamID)
	binary.BigEndian.PutUint32(h[12:16], length)
}

// Version returns the protocol version byte.
func (h *Header) Version() byte { return h[4] }

// Type returns the frame type.
func (h *Header) Type() FrameType { return FrameType(h[5]) }

// Flags returns the flag bits.
func (h *Header) Flags() Flags { return Flags(binary.BigEndian.Uint16(h[6:8])) }

// StreamID returns the stream id (0 for connection-level frames).
func (h *Header) StreamID() uint32 { return binary.BigEndian.Uint32(h[8:12]) }

// Length returns the payload length the header claims.
func (h *Header) Length() uint32 { return binary.BigEndian.Uint32(h[12:16]) }

// validate checks magic, version and the length cap.
func (h *Header) validate(maxSize int) error {
	if [4]byte(h[0:4]) != magic {
		return ErrBadMagic
	}
	if v := h.Version(); v < MinVersion || v > Version {
		return ErrUnknownVersion
	}
	if uint64(h.Length()) > uint64(maxSize) {
		return ErrFrameTooLarge
	}
	return nil
}

// Frame is one decoded frame. Payload aliases the buffer given to ReadFrame.
type Frame struct {
	Header  Header
	Payload []byte
}

// Decoding errors. ReadFrame returns them wrapped in a *DecodeError.
var (
	// ErrBadMagic means the first four bytes were not "SWBD".
	ErrBadMagic = errors.New("wire: bad magic")
	// ErrUnknownVersion means the header's version is not one this package speaks.
	ErrUnknownVersion = errors.New("wire: unknown protocol version")
	// ErrFrameTooLarge means the header claims a payload over the size cap.
	ErrFrameTooLarge = errors.New("wire: frame payload over size limit")
	// ErrChecksum means the CRC-32C trailer did not match.
	ErrChecksum = errors.New("wire: checksum mismatch")
)

// DecodeError is a decoding failure with the offending header. Use errors.Is
// with ErrBadMagic, ErrUnknownVersion, ErrFrameTooLarge or ErrChecksum.
type DecodeError struct {
	Header Header
	Err    error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("%v (type %v, stream %d, length %d)", e.Err, e.Header.Type(), e.Header.StreamID(), e.Header.Length())
}

// Unwrap returns the underlying sentinel error.
func (e *DecodeError) Unwrap() error { return e.Err }

// Code maps the error to the code a peer reports it with.
func (e *DecodeError) Code() ErrorCode {
	switch e.Err {
	case ErrFrameTooLarge:
		return CodeFrameSize
	case ErrChecksum:
		return CodeChecksum
	case ErrUnknownVersion:
		return CodeUnsupportedVersion
	default:
		return CodeProtocol
	}
}

// readHeader peeks at and validates the next frame header in br. It fails
// before any payload is read if the magic or version is wrong or the
// claimed length exceeds maxSize. The header stays buffered in br until
// readPayload consumes it, so its checksum is computed in place.
func readHeader(br *bufio.Reader, maxSize int) (Header, error) {
	var h Header
	p, err := br.Peek(HeaderSize)
	if err != nil {
		if err == io.EOF && len(p) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return h, err
	}
	copy(h[:], p)
	if err := h.validate(maxSize); err != nil {
		return h, &DecodeError{Header: h, Err: err}
	}
	return h, nil
}

// readPayload consumes the header that readHeader returned as h, reads the
// payload into buf (grown only up to h.Length(), already checked against
// the cap) and verifies the trailer.
func readPayload(br *bufio.Reader, h *Header, buf []byte) ([]byte, error) {
	hb, err := br.Peek(HeaderSize)
	if err != nil {
		return nil, unexpected(err)
	}
	sum := crc32.Update(0, castagnoli, hb)
	br.Discard(HeaderSize) //nolint:errcheck // Peek guaranteed the bytes.
	n := int(h.Length())
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(br, buf); err != nil {
		return nil, unexpected(err)
	}
	t, err := br.Peek(TrailerSize)
	if err != nil {
		return nil, unexpected(err)
	}
	want := binary.BigEndian.Uint32(t)
	br.Discard(TrailerSize) //nolint:errcheck // Peek guaranteed the bytes.
	if crc32.Update(sum, castagnoli, buf) != want {
		return nil, &DecodeError{Header: *h, Err: ErrChecksum}
	}
	return buf, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ReadFrame reads one frame from br into buf. A header claiming more than
// maxSize payload bytes is rejected before anything is allocated or read;
// buf is used when its capacity suffices, so a caller that passes a buffer
// of maxSize capacity reads without allocating. Decoding failures are
// *DecodeError values; io.EOF means a clean end between frames.
func ReadFrame(br *bufio.Reader, maxSize int, buf []byte) (Frame, error) {
	var f Frame
	var err error
	f.Header, err = readHeader(br, maxSize)
	if err != nil {
		return f, err
	}
	f.Payload, err = readPayload(br, &f.Header, buf)
	return f, err
}

// ParseFrame decodes the frame at the start of b without copying: the
// payload aliases b. It returns the frame and the number of bytes it
// occupied; io.ErrUnexpectedEOF means b holds only part of a frame. The
// checks are ReadFrame's.
func ParseFrame(b []byte, maxSize int) (Frame, int, error) {
	var f Frame
	if len(b) < HeaderSize {
		if len(b) == 0 {
			return f, 0, io.EOF
		}
		return f, 0, io.ErrUnexpectedEOF
	}
	f.Header = Header(b[:HeaderSize])
	if err := f.Header.validate(maxSize); err != nil {
		return f, 0, &DecodeError{Header: f.Header, Err: err}
	}
	end := HeaderSize + int(f.Header.Length())
	if len(b) < end+TrailerSize {
		return f, 0, io.ErrUnexpectedEOF
	}
	if crc32.Update(0, castagnoli, b[:end]) != binary.BigEndian.Uint32(b[end:]) {
		return f, 0, &DecodeError{Header: f.Header, Err: ErrChecksum}
	}
	f.Payload = b[HeaderSize:end:end]
	return f, end + TrailerSize, nil
}

// AppendFrame appends the encoding of a version-1 frame to dst.
func AppendFrame(dst []byte, t FrameType, f Flags, streamID uint32, payload []byte) []byte {
	return appendFrameVersion(dst, Version, t, f, streamID, payload)
}

// WriteFrame writes a version-1 frame to bw without allocating. It does not
// flush.
func WriteFrame(bw *bufio.Writer, t FrameType, f Flags, streamID uint32, payload []byte) error {
	if bw.Available() < HeaderSize {
		if err := bw.Flush(); err != nil {
			return err
		}
	}
	hb := appendHeader(bw.AvailableBuffer(), Version, t, f, streamID, len(payload))
	sum := crc32.Update(crc32.Update(0, castagnoli, hb), castagnoli, payload)
	if _, err := bw.Write(hb); err != nil {
		return err
	}
	if _, err := bw.Write(payload); err != nil {
		return err
	}
	if bw.Available() < TrailerSize {
		if err := bw.Flush(); err != nil {
			return err
		}
	}
	_, err := bw.Write(binary.BigEndian.AppendUint32(bw.AvailableBuffer(), sum))
	return err
}

func appendHeader(dst []byte, v byte, t FrameType, f Flags, streamID uint32, length int) []byte {
	dst = append(dst, magic[:]...)
	dst = append(dst, v, byte(t))
	dst = binary.BigEndian.AppendUint16(dst, uint16(f))
	dst = binary.BigEndian.AppendUint32(dst, streamID)
	return binary.BigEndian.AppendUint32(dst, uint32(length))
}

func appendFrameVersion(dst []byte, v byte, t FrameType, f Flags, streamID uint32, payload []byte) []byte {
	start := len(dst)
	dst = appendHeader(dst, v, t, f, streamID, len(payload))
	dst = append(dst, payload...)
	sum := crc32.Update(0, castagnoli, dst[start:])
	return binary.BigEndian.AppendUint32(dst, sum)
}

// Features are the HELLO feature bits.
type Features uint32

// Feature bits. A HELLO offers a set; the HELLO_ACK carries the subset in
// force, with at most one compression bit.
const (
	// FeatureZstd offers or selects zstd compression of DATA payloads.
	FeatureZstd Features = 0x0001
	// FeatureS2 offers or selects S2 compression of DATA payloads.
	FeatureS2 Features = 0x0002
)

const helloFixedSize = 16

// Hello is the payload of a HELLO frame.
type Hello struct {
	MinVersion    byte
	MaxVersion    byte
	MaxFrameSize  uint32
	InitialWindow uint32
	Features      Features
	Token         []byte
}

// AppendHello appends the HELLO payload encoding of m to dst.
func AppendHello(dst []byte, m *Hello) []byte {
	dst = append(dst, m.MinVersion, m.MaxVersion)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(m.Token)))
	dst = binary.BigEndian.AppendUint32(dst, m.MaxFrameSize)
	dst = binary.BigEndian.AppendUint32(dst, m.InitialWindow)
	dst = binary.BigEndian.AppendUint32(dst, uint32(m.Features))
	return append(dst, m.Token...)
}

// ParseHello decodes a HELLO payload. Token aliases p.
func ParseHello(p []byte) (Hello, error) {
	var m Hello
	if len(p) < helloFixedSize {
		return m, fmt.Errorf("%w: HELLO payload of %d bytes", ErrMalformed, len(p))
	}
	m.MinVersion, m.MaxVersion = p[0], p[1]
	n := int(binary.BigEndian.Uint16(p[2:4]))
	m.MaxFrameSize = binary.BigEndian.Uint32(p[4:8])
	m.InitialWindow = binary.BigEndian.Uint32(p[8:12])
	m.Features = Features(binary.BigEndian.Uint32(p[12:16]))
	if n > MaxTokenSize || len(p) != helloFixedSize+n {
		return m, fmt.Errorf("%w: HELLO token length %d in %d-byte payload", ErrMalformed, n, len(p))
	}
	if m.MinVersion == 0 || m.MinVersion > m.MaxVersion {
		return m, fmt.Errorf("%w: HELLO versions %d..%d", ErrMalformed, m.MinVersion, m.MaxVersion)
	}
	m.Token = p[helloFixedSize:]
	return m, nil
}

// HelloAck is the payload of a HELLO_ACK frame.
type HelloAck struct {
	Version       byte
	MaxFrameSize  uint32
	InitialWindow uint32
	Features      Features
}

// AppendHelloAck appends the HELLO_ACK payload encoding of m to dst.
func AppendHelloAck(dst []byte, m *HelloAck) []byte {
	dst = append(dst, m.Version, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, m.MaxFrameSize)
	dst = binary.BigEndian.AppendUint32(dst, m.InitialWindow)
	return binary.BigEndian.AppendUint32(dst, uint32(m.Features))
}

// ParseHelloAck decodes a HELLO_ACK payload.
func ParseHelloAck(p []byte) (HelloAck, error) {
	var m HelloAck
	if len(p) != 16 {
		return m, fmt.Errorf("%w: HELLO_ACK payload of %d bytes", ErrMalformed, len(p))
	}
	m.Version = p[0]
	m.MaxFrameSize = binary.BigEndian.Uint32(p[4:8])
	m.InitialWindow = binary.BigEndian.Uint32(p[8:12])
	m.Features = Features(binary.BigEndian.Uint32(p[12:16]))
	return m, nil
}

// AppendCodeReason appends the code u32 | reason payload shared by RESET and
// ERROR; the reason is cut to MaxReasonSize bytes.
func AppendCodeReason(dst []byte, code ErrorCode, reason string) []byte {
	if len(reason) > MaxReasonSize {
		reason = reason[:MaxReasonSize]
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(code))
	return append(dst, reason...)
}

// ParseCodeReason decodes a RESET or ERROR payload.
func ParseCodeReason(p []byte) (ErrorCode, string, error) {
	if len(p) < 4 || len(p) > 4+MaxReasonSize {
		return 0, "", fmt.Errorf("%w: code/reason payload of %d bytes", ErrMalformed, len(p))
	}
	return ErrorCode(binary.BigEndian.Uint32(p)), string(p[4:]), nil
}

// AppendGoAway appends a GOAWAY payload to dst.
func AppendGoAway(dst []byte, lastStreamID uint32, code ErrorCode, reason string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, lastStreamID)
	return AppendCodeReason(dst, code, reason)
}

// ParseGoAway decodes a GOAWAY payload.
func ParseGoAway(p []byte) (lastStreamID uint32, code ErrorCode, reason string, err error) {
	if len(p) < 4 {
		return 0, 0, "", fmt.Errorf("%w: GOAWAY payload of %d bytes", ErrMalformed, len(p))
	}
	code, reason, err = ParseCodeReason(p[4:])
	return binary.BigEndian.Uint32(p), code, reason, err
}

// ParseWindowUpdate decodes a WINDOW_UPDATE payload. Increment 0 is
// malformed; any other u32 parses, and an increment that would take a
// window past MaxWindow (every one from 2^31 up does) is the receiver's
// FLOW_CONTROL_ERROR, not a parse error.
func ParseWindowUpdate(p []byte) (uint32, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("%w: WINDOW_UPDATE payload of %d bytes", ErrMalformed, len(p))
	}
	inc := binary.BigEndian.Uint32(p)
	if inc == 0 {
		return 0, fmt.Errorf("%w: WINDOW_UPDATE increment %d", ErrMalformed, inc)
	}
	return inc, nil
}

// ValidServiceName reports whether name may appear in an OPEN frame: 1 to
// 255 bytes of UTF-8 without spaces or control characters.
func ValidServiceName(name string) bool {
	if len(name) == 0 || len(name) > MaxServiceNameSize || !utf8.ValidString(name) {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x21 || c == 0x7f {
			return false
		}
	}
	return true
}
