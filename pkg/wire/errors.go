package wire

import (
	"errors"
	"fmt"
)

// ErrorCode is the u32 code carried by RESET, GOAWAY and ERROR frames.
// Codes below 0x100 are defined by the protocol; 0x100 and up are free for
// applications.
type ErrorCode uint32

// Error codes.
const (
	// CodeNoError is a graceful close or drain.
	CodeNoError ErrorCode = 0x00
	// CodeProtocol is a violation of the protocol.
	CodeProtocol ErrorCode = 0x01
	// CodeInternal is a failure inside the sender.
	CodeInternal ErrorCode = 0x02
	// CodeFlowControl is a DATA frame over the receive window or a window
	// grown past 2^31-1.
	CodeFlowControl ErrorCode = 0x03
	// CodeStreamClosed is a frame for a stream the sender already closed.
	CodeStreamClosed ErrorCode = 0x04
	// CodeFrameSize is a frame over the negotiated max_frame_size.
	CodeFrameSize ErrorCode = 0x05
	// CodeRefused is a stream refused before any processing (too many
	// streams, backlog full, going away); it is safe to retry elsewhere.
	CodeRefused ErrorCode = 0x06
	// CodeCancel is a stream abandoned by the sender.
	CodeCancel ErrorCode = 0x07
	// CodeUnknownStream is a frame for a stream id that was never opened.
	CodeUnknownStream ErrorCode = 0x08
	// CodeNoSuchService is an OPEN naming a service the acceptor does not know.
	CodeNoSuchService ErrorCode = 0x09
	// CodeUnavailable is an OPEN naming a known service with no healthy
	// backend right now.
	CodeUnavailable ErrorCode = 0x0a
	// CodeUnauthorized is a HELLO whose token was refused.
	CodeUnauthorized ErrorCode = 0x0b
	// CodeUnsupportedVersion is a HELLO with no version in common.
	CodeUnsupportedVersion ErrorCode = 0x0c
	// CodeChecksum is a frame whose CRC-32C did not match.
	CodeChecksum ErrorCode = 0x0d
	// CodeTimeout is a peer silent for longer than the keepalive timeout.
	CodeTimeout ErrorCode = 0x0e
	// CodeCompression is a compressed payload that failed to decompress or
	// decompressed over max_frame_size.
	CodeCompression ErrorCode = 0x0f
	// CodeMessageTooLarge is a message over the receiver's reassembly bound.
	CodeMessageTooLarge ErrorCode = 0x10
	// CodeEnhanceYourCalm is a peer generating excessive load (for example
	// control frames faster than they can be answered).
	CodeEnhanceYourCalm ErrorCode = 0x11
)

var codeNames = [...]string{
	CodeNoError:            "NO_ERROR",
	CodeProtocol:           "PROTOCOL_ERROR",
	CodeInternal:           "INTERNAL_ERROR",
	CodeFlowControl:        "FLOW_CONTROL_ERROR",
	CodeStreamClosed:       "STREAM_CLOSED",
	CodeFrameSize:          "FRAME_SIZE_ERROR",
	CodeRefused:            "REFUSED_STREAM",
	CodeCancel:             "CANCEL",
	CodeUnknownStream:      "UNKNOWN_STREAM",
	CodeNoSuchService:      "NO_SUCH_SERVICE",
	CodeUnavailable:        "UNAVAILABLE",
	CodeUnauthorized:       "UNAUTHORIZED",
	CodeUnsupportedVersion: "UNSUPPORTED_VERSION",
	CodeChecksum:           "CHECKSUM_ERROR",
	CodeTimeout:            "TIMEOUT",
	CodeCompression:        "COMPRESSION_ERROR",
	CodeMessageTooLarge:    "MESSAGE_TOO_LARGE",
	CodeEnhanceYourCalm:    "ENHANCE_YOUR_CALM",
}

// String returns the spec name of c.
func (c ErrorCode) String() string {
	if int(c) < len(codeNames) && codeNames[c] != "" {
		return codeNames[c]
	}
	return fmt.Sprintf("ErrorCode(0x%x)", uint32(c))
}

// Session and stream errors.
var (
	// ErrMalformed means a frame payload does not match its type's layout.
	ErrMalformed = errors.New("wire: malformed payload")
	// ErrSessionClosed is returned by operations on a closed session.
	ErrSessionClosed = errors.New("wire: session closed")
	// ErrGoAway is returned by Open after either side sent GOAWAY.
	ErrGoAway = errors.New("wire: session is going away")
	// ErrTooManyStreams is returned by Open when MaxStreams are open.
	ErrTooManyStreams = errors.New("wire: too many open streams")
	// ErrStreamIDsExhausted is returned by Open when no stream ids are left.
	ErrStreamIDsExhausted = errors.New("wire: stream ids exhausted")
	// ErrMessageTooLarge is returned by ReadMessage for a message over the
	// bound; the rest of that message is discarded.
	ErrMessageTooLarge = errors.New("wire: message over size limit")
	// ErrKeepAliveTimeout ends a session whose peer went silent.
	ErrKeepAliveTimeout = errors.New("wire: keepalive timeout")
	// ErrInvalidService is returned by Open for a name OPEN cannot carry.
	ErrInvalidService = errors.New("wire: invalid service name")
)

// StreamError is a stream ended by a RESET.
type StreamError struct {
	StreamID uint32
	Code     ErrorCode
	Reason   string
	// Remote is true when the peer sent the RESET.
	Remote bool
}

func (e *StreamError) Error() string {
	who := "local"
	if e.Remote {
		who = "remote"
	}
	if e.Reason != "" {
		return fmt.Sprintf("wire: stream %d reset (%s): %v: %s", e.StreamID, who, e.Code, e.Reason)
	}
	return fmt.Sprintf("wire: stream %d reset (%s): %v", e.StreamID, who, e.Code)
}

// SessionError is a session ended with an error code, by a GOAWAY or ERROR
// frame or a local protocol check.
type SessionError struct {
	Code   ErrorCode
	Reason string
	// Remote is true when the peer reported the error.
	Remote bool
	// Err is the local cause, if any (for example a *DecodeError).
	Err error
}

func (e *SessionError) Error() string {
	who := "local"
	if e.Remote {
		who = "remote"
	}
	s := fmt.Sprintf("wire: session ended (%s): %v", who, e.Code)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the local cause.
func (e *SessionError) Unwrap() error { return e.Err }

// CodeOf returns the error code carried by err (a *StreamError,
// *SessionError or *DecodeError anywhere in its chain), or CodeInternal.
func CodeOf(err error) ErrorCode {
	var se *StreamError
	if errors.As(err, &se) {
		return se.Code
	}
	var ss *SessionError
	if errors.As(err, &ss) {
		return ss.Code
	}
	var fe *DecodeError
	if errors.As(err, &fe) {
		return fe.Code()
	}
	return CodeInternal
}
