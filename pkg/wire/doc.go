// Package wire implements the Switchboard wire protocol: binary framing and
// stream multiplexing over one connection. docs/wire.md is the
// specification; testdata/golden holds its worked examples as hex.
//
// # Frames
//
// Every frame is a 16-byte Header (magic "SWBD", version, FrameType, Flags,
// stream id, payload length), the payload, and a CRC-32C trailer over both.
// ReadFrame decodes one frame into the caller's buffer and rejects a bad
// magic, an unknown version or a length over the cap before reading or
// allocating anything for the payload; ParseFrame decodes in place from
// memory; AppendFrame and WriteFrame encode. None of them allocate per
// frame. Decoding failures are *DecodeError values matching ErrBadMagic,
// ErrUnknownVersion, ErrFrameTooLarge or ErrChecksum.
//
// # Sessions and streams
//
// Client and Server run the HELLO/HELLO_ACK handshake on a net.Conn (wrap
// it with crypto/tls for encryption) and return a *Session, which
// multiplexes *Stream values:
//
//	sess, err := wire.Client(conn, wire.Config{Token: token})
//	st, err := sess.Open(ctx, "billing")   // OPEN naming a service
//
//	sess, err := wire.Server(conn, wire.Config{Authenticate: check})
//	st, err := sess.Accept(ctx)
//	if !known(st.Service()) {
//		st.Reset(wire.CodeNoSuchService)
//	}
//
// A Stream is a net.Conn with CloseWrite (half-close), Reset (abort with an
// ErrorCode), deadlines that bound only the call they apply to, and
// per-stream credit flow control, so a slow reader holds back only its own
// writer. Every Write is also a message; ReadMessage reassembles one
// (fragmented with FlagMore) under a size bound. Sessions send PINGs when
// idle and end when the peer goes silent; GoAway and Shutdown drain
// gracefully; Close never blocks on the network.
//
// Bad input never panics and never allocates what a header claims: framing
// errors end the session with a GOAWAY carrying the matching code, and
// stream-level violations (window overflow, frames for unknown streams,
// DATA after CLOSE) reset just that stream.
//
// # Request/response
//
// NewCaller and ServeRPC run request/response traffic over one stream,
// matching responses to waiting callers by request id, with timeouts.
//
// # Compression
//
// Config.Compression offers zstd or S2 (github.com/klauspost/compress);
// when both sides agree in the handshake, DATA payloads of 512 bytes and up
// are compressed frame by frame when that makes them smaller.
package wire
