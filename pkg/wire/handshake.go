package wire

import (
	"errors"
	"fmt"
)

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
	f, err := s.fr.frame(HandshakeMaxFrameSize)
	if err != nil {
		var de *DecodeError
		if errors.As(err, &de) {
			s.refuse(de.Code(), de.Err.Error())
		}
		return err
	}
	switch {
	case f.Header.Type() == FrameError && f.Header.StreamID() == 0:
		code, reason, perr := ParseCodeReason(f.Payload)
		if perr != nil {
			return s.refuse(CodeProtocol, perr.Error())
		}
		return &SessionError{Code: code, Reason: reason, Remote: true}
	case f.Header.Type() != FrameHelloAck || f.Header.StreamID() != 0:
		return s.refuse(CodeProtocol, "expected HELLO_ACK on stream 0, got "+f.Header.Type().String())
	}
	ack, err := ParseHelloAck(f.Payload)
	if err != nil {
		return s.refuse(CodeProtocol, err.Error())
	}
	switch {
	case ack.Version < MinVersion || ack.Version > Version || ack.Version < hello.MinVersion || ack.Version > hello.MaxVersion:
		return s.refuse(CodeUnsupportedVersion, fmt.Sprintf("server chose version %d", ack.Version))
	case ack.MaxFrameSize < MinMaxFrameSize || ack.MaxFrameSize > MaxMaxFrameSize:
		return s.refuse(CodeProtocol, fmt.Sprintf("max_frame_size %d out of range", ack.MaxFrameSize))
	case ack.InitialWindow < MinWindow || ack.InitialWindow > MaxWindow:
		return s.refuse(CodeProtocol, fmt.Sprintf("initial_window %d out of range", ack.InitialWindow))
	case ack.Features&^hello.Features != 0:
		return s.refuse(CodeProtocol, "server selected features not offered")
	case ack.Features&FeatureZstd != 0 && ack.Features&FeatureS2 != 0:
		return s.refuse(CodeProtocol, "server selected two compressions")
	}
	s.version = ack.Version
	s.peerMaxFrame = int(ack.MaxFrameSize)
	s.peerWindow = int(ack.InitialWindow)
	s.compression = compressionOf(ack.Features)
	return nil
}

func (s *Session) serverHandshake() error {
	f, err := s.fr.frame(HandshakeMaxFrameSize)
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

// refuse answers a failed handshake, on either side, with an ERROR frame
// (never GOAWAY: no session exists yet, docs/wire.md 11.1) and returns the
// matching local error.
func (s *Session) refuse(code ErrorCode, reason string) error {
	s.conn.Write(AppendFrame(nil, FrameError, 0, 0, AppendCodeReason(nil, code, reason))) //nolint:errcheck // best effort: the session is ending.
	return &SessionError{Code: code, Reason: reason}
}
