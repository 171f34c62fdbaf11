package wire

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The conformance tests extend the golden frames to behaviour: a scripted
// peer sends frames to a Server session and asserts the frames (or the
// end of the connection) that come back. Each case names the section of
// docs/wire.md whose rule it pins.

// confEnv is the session under test and the scripted peer facing it.
type confEnv struct {
	s        *Session
	p        *rawPeer
	accepted chan *Stream
	streams  map[uint32]*Stream // streams the application holds, by id
}

// stream returns the stream the application accepted or opened with id.
func (e *confEnv) stream(t *testing.T, id uint32) *Stream {
	t.Helper()
	if st := e.streams[id]; st != nil {
		return st
	}
	select {
	case st := <-e.accepted:
		if st.ID() != id {
			t.Fatalf("accepted stream %d, want %d", st.ID(), id)
		}
		e.streams[id] = st
		return st
	case <-time.After(5 * time.Second):
		t.Fatalf("stream %d was not accepted", id)
	}
	return nil
}

// step is one line of a script: send bytes, run an application action,
// or expect something from the session.
type step struct {
	send  []byte
	async bool // send from a goroutine (the peer reads while it writes)
	do    func(t *testing.T, e *confEnv)
	want  *wantFrame
	quiet bool // nothing is owed: a PING sent now is answered first
	eof   bool // the connection ends (after any frame expected before)
}

type wantFrame struct {
	t    FrameType
	id   uint32
	code ErrorCode // for RESET, GOAWAY and ERROR
}

func send(t FrameType, id uint32, payload []byte) step {
	return step{send: AppendFrame(nil, t, 0, id, payload)}
}

func sendRaw(b []byte) step { return step{send: b} }

func open(id uint32) step { return send(FrameOpen, id, []byte("svc")) }

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func reset(code ErrorCode) []byte { return AppendCodeReason(nil, code, "") }

func expect(t FrameType, id uint32, code ErrorCode) step {
	return step{want: &wantFrame{t: t, id: id, code: code}}
}

func expectReset(id uint32, code ErrorCode) step { return expect(FrameReset, id, code) }

// connError expects GOAWAY with code and the end of the connection.
func connError(code ErrorCode) []step {
	return []step{expect(FrameGoAway, 0, code), {eof: true}}
}

// handshakeError expects ERROR with code and the end of the connection.
func handshakeError(code ErrorCode) []step {
	return []step{expect(FrameError, 0, code), {eof: true}}
}

var quiet = step{quiet: true}

func do(f func(t *testing.T, e *confEnv)) step { return step{do: f} }

func script(parts ...any) []step {
	var out []step
	for _, p := range parts {
		switch v := p.(type) {
		case step:
			out = append(out, v)
		case []step:
			out = append(out, v...)
		default:
			panic("script: bad part")
		}
	}
	return out
}

type confCase struct {
	name        string // "<section> <rule>"
	cfg         Config
	noHandshake bool // the script starts before HELLO
	noAccept    bool // the application never calls Accept
	steps       []step
}

func hello(mut func(b []byte)) []byte {
	b := AppendFrame(nil, FrameHello, 0, 0, AppendHello(nil, &Hello{MinVersion: 1, MaxVersion: 1, MaxFrameSize: 64 << 10, InitialWindow: 1 << 20}))
	if mut != nil {
		mut(b)
	}
	return b
}

// readErrCode waits for the stream's Read to fail and returns the code.
func readErrCode(t *testing.T, st *Stream) ErrorCode {
	t.Helper()
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer st.SetReadDeadline(time.Time{})
	_, err := st.Read(make([]byte, 16))
	var se *StreamError
	if !errors.As(err, &se) {
		t.Fatalf("Read = %v, want a *StreamError", err)
	}
	return se.Code
}

func conformanceCases() []confCase {
	burst := make([]byte, 0, 2000*(Overhead+3))
	for id := uint32(1); id < 4000; id += 2 {
		burst = AppendFrame(burst, FrameOpen, 0, id, []byte("svc"))
	}
	var refusals []step
	for id := uint32(9); id < 4000; id += 2 {
		refusals = append(refusals, expectReset(id, CodeRefused))
	}
	return []confCase{
		// 6.1: stream ids are 1..2^31-1; a frame with a larger id is a
		// connection error.
		{name: "6.1 OPEN with id 2^31+1", steps: script(open(1<<31+1), connError(CodeProtocol))},
		{name: "6.1 DATA with id 2^32-1", steps: script(send(FrameData, 0xffffffff, []byte("x")), connError(CodeProtocol))},
		{name: "6.1 RESET with id 2^31", steps: script(send(FrameReset, 1<<31, reset(CodeCancel)), connError(CodeProtocol))},
		{name: "6.1 OPEN with id 2^31-1 is served", steps: script(open(MaxStreamID), do(func(t *testing.T, e *confEnv) {
			e.stream(t, MaxStreamID)
		}), quiet)},

		// 6.3: once the peer RESETs a stream, nothing more is sent on it,
		// not even the CLOSE of an application that then closes it.
		{name: "6.3 no CLOSE after the peer's RESET", steps: script(open(1), do(func(t *testing.T, e *confEnv) {
			e.stream(t, 1)
		}), send(FrameReset, 1, reset(CodeCancel)), do(func(t *testing.T, e *confEnv) {
			st := e.stream(t, 1)
			if code := readErrCode(t, st); code != CodeCancel {
				t.Errorf("Read after RESET: code %v, want CANCEL", code)
			}
			if _, err := st.Write([]byte("x")); CodeOf(err) != CodeCancel {
				t.Errorf("Write after RESET = %v, want CANCEL", err)
			}
			st.CloseWrite()
			st.Close()
		}), quiet)},

		// 6.4: DATA after the peer's own CLOSE on a stream still open here
		// is a stream error STREAM_CLOSED; frames for a finished stream are
		// dropped; frames for a never-opened id draw UNKNOWN_STREAM.
		{name: "6.4 DATA after CLOSE on an open stream", steps: script(open(1), send(FrameClose, 1, nil),
			send(FrameData, 1, []byte("late")), expectReset(1, CodeStreamClosed), quiet)},
		{name: "6.4 frames for a finished stream are dropped", steps: script(open(1), send(FrameClose, 1, nil),
			do(func(t *testing.T, e *confEnv) { e.stream(t, 1).Close() }), expect(FrameClose, 1, 0),
			send(FrameData, 1, []byte("late")), send(FrameWindowUpdate, 1, u32(100)),
			send(FrameClose, 1, nil), send(FrameReset, 1, reset(CodeCancel)), quiet)},
		{name: "6.4 frames after a RESET the receiver sent are dropped", steps: script(open(1),
			do(func(t *testing.T, e *confEnv) { e.stream(t, 1).Reset(CodeCancel) }), expectReset(1, CodeCancel),
			send(FrameData, 1, []byte("in flight")), send(FrameClose, 1, nil), quiet)},
		{name: "6.4 DATA for a never-opened id", steps: script(send(FrameData, 7, []byte("x")), expectReset(7, CodeUnknownStream), quiet)},
		{name: "6.4 WINDOW_UPDATE for an id this side never opened", steps: script(send(FrameWindowUpdate, 4, u32(1)), expectReset(4, CodeUnknownStream), quiet)},
		{name: "6.4 RESET for a never-opened id draws nothing", steps: script(send(FrameReset, 7, reset(CodeCancel)), quiet)},

		// 4: a payload length the frame type does not allow is a
		// connection error FRAME_SIZE_ERROR, checked before the stream.
		{name: "4 CLOSE with a payload", steps: script(open(1), send(FrameClose, 1, []byte{0}), connError(CodeFrameSize))},
		{name: "4 CLOSE with a payload on an unknown stream", steps: script(send(FrameClose, 9, []byte{0}), connError(CodeFrameSize))},
		{name: "4 RESET of 3 bytes", steps: script(open(1), send(FrameReset, 1, []byte{0, 0, 7}), connError(CodeFrameSize))},
		{name: "4 RESET with a 257-byte reason", steps: script(open(1), send(FrameReset, 1, append(u32(7), bytes.Repeat([]byte("r"), 257)...)), connError(CodeFrameSize))},
		{name: "4 GOAWAY of 7 bytes", steps: script(send(FrameGoAway, 0, make([]byte, 7)), connError(CodeFrameSize))},
		{name: "4 PING of 7 bytes", steps: script(send(FramePing, 0, make([]byte, 7)), connError(CodeFrameSize))},
		{name: "4 PONG of 9 bytes", steps: script(send(FramePong, 0, make([]byte, 9)), connError(CodeFrameSize))},
		{name: "4 ERROR of 3 bytes", steps: script(send(FrameError, 0, make([]byte, 3)), connError(CodeFrameSize))},
		{name: "4 WINDOW_UPDATE of 5 bytes", steps: script(open(1), send(FrameWindowUpdate, 1, make([]byte, 5)), connError(CodeFrameSize))},
		{name: "4 PING on a stream", steps: script(send(FramePing, 1, make([]byte, 8)), connError(CodeProtocol))},
		{name: "4 CLOSE on stream 0", steps: script(send(FrameClose, 0, nil), connError(CodeProtocol))},
		{name: "4 RESET with a long reason is kept within 256 bytes", steps: script(open(1),
			send(FrameReset, 1, append(u32(uint32(CodeCancel)), bytes.Repeat([]byte("r"), 256)...)), quiet)},

		// 8.2: increment 0 is a stream PROTOCOL_ERROR; any increment that
		// takes the window past 2^31-1, including every one from 2^31 up,
		// is a stream FLOW_CONTROL_ERROR.
		{name: "8.2 increment 2^31", steps: script(open(1), send(FrameWindowUpdate, 1, u32(1<<31)), expectReset(1, CodeFlowControl), quiet)},
		{name: "8.2 increment 2^32-1", steps: script(open(1), send(FrameWindowUpdate, 1, u32(0xffffffff)), expectReset(1, CodeFlowControl), quiet)},
		{name: "8.2 window past 2^31-1", steps: script(open(1), send(FrameWindowUpdate, 1, u32(MaxWindow-(1<<20)+1)), expectReset(1, CodeFlowControl), quiet)},
		{name: "8.2 window up to 2^31-1", steps: script(open(1), send(FrameWindowUpdate, 1, u32(MaxWindow-(1<<20))), quiet)},
		{name: "8.2 increment 0", steps: script(open(1), send(FrameWindowUpdate, 1, u32(0)), expectReset(1, CodeProtocol), quiet)},

		// 10: every OPEN over the accept backlog is refused with its own
		// RESET REFUSED_STREAM, however many arrive, while the peer reads.
		{name: "10 2000 OPENs over a backlog of 4", cfg: Config{AcceptBacklog: 4}, noAccept: true,
			steps: script(step{send: burst, async: true}, refusals, quiet)},

		// 11.1: before the handshake completes a connection error is
		// answered with ERROR (there is no session to GOAWAY from yet).
		{name: "11.1 bad magic instead of HELLO", noHandshake: true,
			steps: script(sendRaw([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")), handshakeError(CodeProtocol))},
		{name: "11.1 HELLO with a bad checksum", noHandshake: true,
			steps: script(sendRaw(hello(func(b []byte) { b[len(b)-1] ^= 1 })), handshakeError(CodeChecksum))},
		{name: "11.1 HELLO with header version 9", noHandshake: true,
			steps: script(sendRaw(hello(func(b []byte) { b[4] = 9 })), handshakeError(CodeUnsupportedVersion))},
		{name: "11.1 HELLO claiming 5000 bytes", noHandshake: true,
			steps: script(sendRaw(hello(func(b []byte) { binary.BigEndian.PutUint32(b[12:], 5000) })), handshakeError(CodeFrameSize))},
		{name: "11.1 PING before HELLO", noHandshake: true,
			steps: script(send(FramePing, 0, make([]byte, 8)), handshakeError(CodeProtocol))},
		{name: "11.1 bad magic after the handshake", steps: script(sendRaw(hello(func(b []byte) { b[0] = 'X' })), connError(CodeProtocol))},

		// 13: after receiving GOAWAY a side opens nothing and refuses the
		// peer's OPENs; its own streams above last_stream_id fail with
		// REFUSED_STREAM, the others carry on; a code other than NO_ERROR
		// ends the connection.
		{name: "13 OPEN after the peer's GOAWAY is refused", steps: script(send(FrameGoAway, 0, AppendGoAway(nil, 0, CodeNoError, "")),
			open(1), expectReset(1, CodeRefused), quiet, do(func(t *testing.T, e *confEnv) {
				if _, err := e.s.Open(ctxT(t), "back"); !errors.Is(err, ErrGoAway) {
					t.Errorf("Open after GOAWAY = %v, want ErrGoAway", err)
				}
			}))},
		{name: "13 streams above last_stream_id fail, the rest carry on", steps: script(do(func(t *testing.T, e *confEnv) {
			for _, id := range []uint32{2, 4} {
				st, err := e.s.Open(ctxT(t), "back")
				if err != nil || st.ID() != id {
					t.Fatalf("Open = %v, %v", st, err)
				}
				e.streams[id] = st
			}
		}), expect(FrameOpen, 2, 0), expect(FrameOpen, 4, 0), send(FrameGoAway, 0, AppendGoAway(nil, 2, CodeNoError, "")),
			do(func(t *testing.T, e *confEnv) {
				if code := readErrCode(t, e.streams[4]); code != CodeRefused {
					t.Errorf("stream 4: code %v, want REFUSED_STREAM", code)
				}
				if _, err := e.streams[2].Write([]byte("x")); err != nil {
					t.Errorf("stream 2 Write = %v", err)
				}
			}), expect(FrameData, 2, 0), quiet)},
		{name: "13 GOAWAY with an error code ends the connection", steps: script(open(1),
			send(FrameGoAway, 0, AppendGoAway(nil, 0, CodeInternal, "boom")), step{eof: true}, do(func(t *testing.T, e *confEnv) {
				<-e.s.Done()
				var se *SessionError
				if !errors.As(e.s.Err(), &se) || se.Code != CodeInternal || !se.Remote {
					t.Errorf("session error %v, want remote INTERNAL_ERROR", e.s.Err())
				}
				if _, err := e.stream(t, 1).Read(make([]byte, 1)); CodeOf(err) != CodeInternal {
					t.Errorf("stream 1 Read = %v, want INTERNAL_ERROR", err)
				}
			}))},
	}
}

func TestConformance(t *testing.T) {
	for _, tc := range conformanceCases() {
		t.Run(tc.name, func(t *testing.T) { runConformance(t, tc) })
	}
}

func runConformance(t *testing.T, tc confCase) {
	cfg := tc.cfg
	cfg.KeepAliveInterval = -1
	c, sc := tcpPair(t)
	p := newRawPeer(t, c)
	e := &confEnv{p: p, accepted: make(chan *Stream, 64), streams: map[uint32]*Stream{}}
	ch := make(chan *Session, 1)
	go func() {
		s, _ := Server(sc, cfg)
		ch <- s
	}()
	if !tc.noHandshake {
		p.handshakeAsClient(1 << 20)
		e.s = <-ch
		if e.s == nil {
			t.Fatal("handshake failed")
		}
		t.Cleanup(func() { e.s.Close() })
		if !tc.noAccept {
			go func() {
				for {
					st, err := e.s.Accept(context.Background())
					if err != nil {
						return
					}
					e.accepted <- st
				}
			}()
		}
	}
	pings := uint64(0)
	for i, st := range tc.steps {
		switch {
		case st.send != nil && st.async:
			go func() {
				p.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := p.conn.Write(st.send); err != nil {
					t.Errorf("step %d: write: %v", i, err)
				}
			}()
		case st.send != nil:
			p.sendRaw(st.send)
		case st.do != nil:
			st.do(t, e)
		case st.want != nil:
			f, err := p.read()
			if err != nil {
				t.Fatalf("step %d: want %v on stream %d: %v", i, st.want.t, st.want.id, err)
			}
			checkFrame(t, i, f, st.want)
		case st.quiet:
			pings++
			p.send(FramePing, 0, 0, binary.BigEndian.AppendUint64(nil, pings))
			f, err := p.read()
			if err != nil {
				t.Fatalf("step %d: want PONG: %v", i, err)
			}
			if f.Header.Type() != FramePong || binary.BigEndian.Uint64(f.Payload) != pings {
				t.Fatalf("step %d: got %s, want only the PONG", i, describe(f))
			}
		case st.eof:
			f, err := p.read()
			if err == nil {
				t.Fatalf("step %d: got %s, want the connection to end", i, describe(f))
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !strings.Contains(err.Error(), "reset by peer") {
				t.Fatalf("step %d: read %v, want the connection closed", i, err)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("step %d: connection still open", i)
			}
		}
		if t.Failed() {
			return
		}
	}
}

func describe(f Frame) string {
	var b strings.Builder
	b.WriteString(f.Header.Type().String())
	b.WriteString(" stream ")
	b.WriteString(strconv.FormatUint(uint64(f.Header.StreamID()), 10))
	if code, ok := frameCode(f); ok {
		b.WriteString(" ")
		b.WriteString(code.String())
	}
	return b.String()
}

func frameCode(f Frame) (ErrorCode, bool) {
	switch f.Header.Type() {
	case FrameReset, FrameError:
		code, _, err := ParseCodeReason(f.Payload)
		return code, err == nil
	case FrameGoAway:
		_, code, _, err := ParseGoAway(f.Payload)
		return code, err == nil
	}
	return 0, false
}

func checkFrame(t *testing.T, i int, f Frame, w *wantFrame) {
	t.Helper()
	code, _ := frameCode(f)
	if f.Header.Type() != w.t || f.Header.StreamID() != w.id || code != w.code {
		t.Fatalf("step %d: got %s, want %s", i, describe(f), describe(Frame{Header: MakeHeader(w.t, 0, w.id, 0), Payload: codePayload(w)}))
	}
}

func codePayload(w *wantFrame) []byte {
	if w.t == FrameGoAway {
		return AppendGoAway(nil, 0, w.code, "")
	}
	return AppendCodeReason(nil, w.code, "")
}
