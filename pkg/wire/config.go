package wire

import (
	"errors"
	"fmt"
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
	// takes longer ends the session. The deadline is moved at most every
	// WriteTimeout/16, so a write gets at least 15/16 of it. Default 10s.
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
// connection by writev, referenced in place behind the frames already
// buffered, instead of being copied into the write buffer. Below it a
// copy and one write cost less CPU than a writev of three pieces (measured
// with bench/wire at 4 KiB writes).
const directWriteMin = 16 << 10

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
