package wire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// echoServer accepts streams until the session ends and echoes each one
// back, half-closing when the peer does.
func echoServer(t testing.TB, s *Session) {
	go func() {
		for {
			st, err := s.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				defer st.Close()
				io.Copy(st, st) //nolint:errcheck // ends with the stream
				st.CloseWrite()
			}()
		}
	}()
}

func TestEchoAllTransports(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			c, s := sessionPair(t, tr, Config{}, Config{})
			echoServer(t, s)
			st, err := c.Open(ctxT(t), "echo")
			if err != nil {
				t.Fatal(err)
			}
			msg := bytes.Repeat([]byte("switchboard "), 10000)
			go func() {
				st.Write(msg)
				st.CloseWrite()
			}()
			got, err := io.ReadAll(st)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("echo returned %d bytes, want %d", len(got), len(msg))
			}
			st.Close()
			within(t, 5*time.Second, "streams to be released", func() bool { return c.NumStreams() == 0 && s.NumStreams() == 0 })
		})
	}
}

// roundTrip checks an echo stream answers, which also proves the peer
// has processed its OPEN.
func roundTrip(t testing.TB, st *Stream) {
	t.Helper()
	if _, err := st.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("round trip: %q, %v", buf, err)
	}
}

func TestAcceptSeesService(t *testing.T) {
	c, s := sessionPair(t, transports()[0], Config{}, Config{})
	go c.Open(ctxT(t), "billing.service")
	st, err := s.Accept(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Service() != "billing.service" || st.ID() != 1 {
		t.Errorf("accepted service %q id %d", st.Service(), st.ID())
	}
	if _, err := c.Open(ctxT(t), "bad name"); !errors.Is(err, ErrInvalidService) {
		t.Errorf("Open(bad name) = %v", err)
	}
}

// TestTransfer100MB moves 100 MB each way at once over every transport
// with a small window, so flow control throttles both directions.
func TestTransfer100MB(t *testing.T) {
	size := 100 << 20
	if testing.Short() {
		size = 8 << 20
	}
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			cfg := Config{WindowSize: 256 << 10}
			c, s := sessionPair(t, tr, cfg, cfg)
			src := make([]byte, 1<<20)
			for i := range src {
				src[i] = byte(rand.Uint32())
			}
			send := func(st *Stream) error {
				for off := 0; off < size; {
					n := min(size-off, 48<<10+off%4099)
					p := src[off%len(src):]
					n = min(n, len(p))
					if _, err := st.Write(p[:n]); err != nil {
						return err
					}
					off += n
				}
				return st.CloseWrite()
			}
			want := uint32(0)
			for off := 0; off < size; {
				n := min(size-off, 48<<10+off%4099)
				p := src[off%len(src):]
				n = min(n, len(p))
				want = crc32.Update(want, castagnoli, p[:n])
				off += n
			}
			recv := func(st *Stream) (int, uint32, error) {
				buf := make([]byte, 37<<10)
				total, sum := 0, uint32(0)
				for {
					n, err := st.Read(buf)
					total += n
					sum = crc32.Update(sum, castagnoli, buf[:n])
					if err == io.EOF {
						return total, sum, nil
					}
					if err != nil {
						return total, sum, err
					}
				}
			}
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			check := func(who string, st *Stream) {
				defer wg.Done()
				n, sum, err := recv(st)
				if err != nil || n != size || sum != want {
					errs <- errors.New(who + ": bad transfer")
					t.Errorf("%s received %d bytes (want %d), crc ok=%v, err %v", who, n, size, sum == want, err)
				}
			}
			wg.Add(4)
			go func() {
				defer wg.Done()
				st, err := s.Accept(ctxT(t))
				if err != nil {
					t.Error(err)
					return
				}
				go check("server", st)
				if err := send(st); err != nil {
					t.Errorf("server send: %v", err)
				}
			}()
			st, err := c.Open(ctxT(t), "bulk")
			if err != nil {
				t.Fatal(err)
			}
			go check("client", st)
			if err := send(st); err != nil {
				t.Errorf("client send: %v", err)
			}
			wg.Done()
			wg.Wait()
		})
	}
}

// TestFlowControlBoundsBuffering checks that a writer whose peer does not
// read stops after one window of credit, and resumes as the peer reads.
func TestFlowControlBoundsBuffering(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			window := 16 << 10
			c, s := sessionPair(t, tr, Config{}, Config{WindowSize: window})
			st, err := c.Open(ctxT(t), "slow")
			if err != nil {
				t.Fatal(err)
			}
			peer, err := s.Accept(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			st.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			n, err := st.Write(make([]byte, 1<<20))
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Write = %d, %v; want a timeout", n, err)
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("timeout error %v is not a net.Error with Timeout", err)
			}
			if n > window || n < window/2 {
				t.Errorf("wrote %d bytes without the peer reading; window is %d", n, window)
			}
			// The stream survives the write timeout: the rest goes through
			// once the peer reads, and reads still work both ways.
			st.SetWriteDeadline(time.Time{})
			done := make(chan error, 1)
			go func() {
				_, err := st.Write(make([]byte, 1<<20-n))
				if err == nil {
					err = st.CloseWrite()
				}
				done <- err
			}()
			got, err := io.ReadAll(peer)
			if err != nil || len(got) != 1<<20 {
				t.Fatalf("peer read %d bytes, %v", len(got), err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			peer.Write([]byte("ok"))
			buf := make([]byte, 2)
			if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "ok" {
				t.Fatalf("read after write timeout: %q %v", buf, err)
			}
		})
	}
}

func TestReadDeadline(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			c, s := sessionPair(t, tr, Config{}, Config{})
			st, _ := c.Open(ctxT(t), "x")
			peer, err := s.Accept(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			st.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := st.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Read = %v, want timeout", err)
			}
			// Extending the deadline from another goroutine wakes nobody
			// wrongly; data then arrives normally.
			st.SetReadDeadline(time.Time{})
			go peer.Write([]byte("late"))
			buf := make([]byte, 4)
			if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "late" {
				t.Fatalf("read after timeout: %q, %v", buf, err)
			}
			// A deadline set while a Read is blocked interrupts it.
			errc := make(chan error, 1)
			go func() {
				_, err := st.Read(buf)
				errc <- err
			}()
			st.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("blocked Read = %v, want timeout", err)
			}
		})
	}
}

func TestResetWithCode(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			c, s := sessionPair(t, tr, Config{}, Config{})
			go func() {
				st, err := s.Accept(context.Background())
				if err == nil {
					st.ResetWithReason(CodeNoSuchService, "no such service: "+st.Service())
				}
			}()
			st, err := c.Open(ctxT(t), "nothing")
			if err != nil {
				t.Fatal(err)
			}
			_, err = st.Read(make([]byte, 1))
			var se *StreamError
			if !errors.As(err, &se) || se.Code != CodeNoSuchService || !se.Remote || se.Reason != "no such service: nothing" {
				t.Fatalf("Read = %v, want remote NO_SUCH_SERVICE", err)
			}
			if CodeOf(err) != CodeNoSuchService {
				t.Errorf("CodeOf = %v", CodeOf(err))
			}
			if _, err := st.Write([]byte("x")); !errors.As(err, &se) {
				t.Errorf("Write after reset = %v", err)
			}
			within(t, 5*time.Second, "reset stream to be released", func() bool { return c.NumStreams() == 0 && s.NumStreams() == 0 })
		})
	}
}

func TestGracefulShutdown(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			c, s := sessionPair(t, tr, Config{}, Config{})
			echoServer(t, s)
			st, err := c.Open(ctxT(t), "echo")
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, st)
			done := make(chan error, 1)
			go func() { done <- s.Shutdown(ctxT(t)) }()
			within(t, 5*time.Second, "client to see GOAWAY", func() bool {
				extra, err := c.Open(ctxT(t), "echo")
				if err == nil {
					extra.Close() // opened before GOAWAY reached us
				}
				return errors.Is(err, ErrGoAway)
			})
			// The stream opened before GOAWAY keeps working.
			if _, err := st.Write([]byte("still here")); err != nil {
				t.Fatal(err)
			}
			st.CloseWrite()
			got, err := io.ReadAll(st)
			if err != nil || string(got) != "still here" {
				t.Fatalf("drained stream: %q %v", got, err)
			}
			st.Close()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Shutdown = %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Shutdown did not return after the last stream closed")
			}
			within(t, 5*time.Second, "client session to end", func() bool { return c.Err() != nil })
		})
	}
}

func TestGoAwayWithCodeEndsSession(t *testing.T) {
	c, s := sessionPair(t, transports()[1], Config{}, Config{})
	echoServer(t, s)
	st, _ := c.Open(ctxT(t), "x")
	roundTrip(t, st)
	s.GoAway(CodeEnhanceYourCalm, "too busy")
	_, err := st.Read(make([]byte, 1))
	var se *SessionError
	if !errors.As(err, &se) || se.Code != CodeEnhanceYourCalm || !se.Remote {
		t.Fatalf("Read = %v, want remote ENHANCE_YOUR_CALM", err)
	}
	if !errors.Is(err, ErrSessionClosed) {
		t.Errorf("%v does not match ErrSessionClosed", err)
	}
}

// TestCloseNeverHangs closes a stream and a session whose peer has stopped
// reading, with the connection's buffers full.
func TestCloseNeverHangs(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			c, s := sessionPair(t, tr, Config{WriteTimeout: 300 * time.Millisecond}, Config{WindowSize: 8 << 20})
			st, _ := c.Open(ctxT(t), "x")
			// Stop the server from reading by wedging its connection: we
			// cannot pause its read loop, so fill the window instead and
			// never read on the server side.
			_, _ = s.Accept(ctxT(t))
			go st.Write(make([]byte, 8<<20))
			start := time.Now()
			st.Close()
			c.Close()
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Close took %v", d)
			}
			if _, err := st.Write([]byte("x")); err == nil {
				t.Error("Write after Close succeeded")
			}
		})
	}
}

func TestSessionCloseWakesEveryone(t *testing.T) {
	c, s := sessionPair(t, transports()[0], Config{}, Config{})
	st, _ := c.Open(ctxT(t), "x")
	s.Accept(ctxT(t))
	errs := make(chan error, 3)
	go func() { _, err := st.Read(make([]byte, 1)); errs <- err }()
	go func() { _, err := c.Accept(context.Background()); errs <- err }()
	go func() { _, err := s.Ping(context.Background()); errs <- err }()
	s.Close()
	for i := 0; i < 3; i++ {
		select {
		case err := <-errs:
			if err == nil {
				t.Error("blocked call returned nil after close")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("blocked call not woken by Close")
		}
	}
}

func TestKeepAlive(t *testing.T) {
	t.Run("ping", func(t *testing.T) {
		c, _ := sessionPair(t, transports()[1], Config{}, Config{})
		rtt, err := c.Ping(ctxT(t))
		if err != nil || rtt <= 0 {
			t.Fatalf("Ping = %v, %v", rtt, err)
		}
	})
	t.Run("silent peer", func(t *testing.T) {
		const interval, timeout = 100 * time.Millisecond, 600 * time.Millisecond
		cfg := Config{KeepAliveInterval: interval, KeepAliveTimeout: timeout}
		s, p := rawServerSession(t, cfg)
		silentSince := time.Now() // the handshake was the peer's last frame
		// The raw peer answers nothing: PINGs come, then GOAWAY TIMEOUT.
		pings := 0
		for {
			f, err := p.read()
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if f.Header.Type() == FramePing {
				pings++
				continue
			}
			if f.Header.Type() != FrameGoAway {
				t.Fatalf("got %v, want PING or GOAWAY", f.Header.Type())
			}
			if _, code, _, _ := ParseGoAway(f.Payload); code != CodeTimeout {
				t.Errorf("GOAWAY code %v, want TIMEOUT", code)
			}
			break
		}
		if d := time.Since(silentSince); d < timeout {
			t.Errorf("GOAWAY TIMEOUT after %v of silence, before the %v timeout", d, timeout)
		}
		if pings < 2 {
			t.Errorf("%d PINGs before the timeout, want one per interval of silence", pings)
		}
		<-s.Done()
		if !errors.Is(s.Err(), ErrKeepAliveTimeout) {
			t.Errorf("Err = %v, want keepalive timeout", s.Err())
		}
	})
	t.Run("idle but alive", func(t *testing.T) {
		cfg := Config{KeepAliveInterval: 20 * time.Millisecond, KeepAliveTimeout: 100 * time.Millisecond}
		c, s := sessionPair(t, transports()[1], cfg, cfg)
		// Several timeouts pass with no traffic but PING/PONG.
		deadline := time.Now().Add(500 * time.Millisecond)
		for time.Now().Before(deadline) {
			if c.Err() != nil || s.Err() != nil {
				t.Fatalf("idle session died: %v / %v", c.Err(), s.Err())
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// TestKeepAliveStep pins the keepalive schedule of docs/wire.md section 12:
// a PING after each interval of silence, the end exactly at the timeout
// (not at the next tick after it).
func TestKeepAliveStep(t *testing.T) {
	const iv, to = 15 * time.Second, 45 * time.Second
	never := time.Duration(-1 << 62)
	s := time.Second
	tests := []struct {
		name                string
		now, recv, lastPing time.Duration
		ping, expired       bool
		wait                time.Duration
	}{
		{"busy", 10 * s, 9 * s, never, false, false, 14 * s},
		{"first idle interval", 15 * s, 0, never, true, false, 15 * s},
		{"pinged, still silent", 20 * s, 0, 15 * s, false, false, 10 * s},
		{"second interval", 30 * s, 0, 15 * s, true, false, 15 * s},
		{"third interval ends at the timeout", 44 * s, 0, 30 * s, false, false, 1 * s},
		{"timeout exactly", 45 * s, 0, 30 * s, false, true, 0},
		{"frame after a ping restarts", 31 * s, 30 * s, 15 * s, false, false, 14 * s},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ping, expired, wait := keepAliveStep(tt.now, tt.recv, tt.lastPing, iv, to)
			if ping != tt.ping || expired != tt.expired || (!expired && wait != tt.wait) {
				t.Errorf("keepAliveStep = ping %v, expired %v, wait %v; want %v, %v, %v", ping, expired, wait, tt.ping, tt.expired, tt.wait)
			}
		})
	}
}

func TestHandshake(t *testing.T) {
	tr := transports()[1]
	t.Run("auth refused", func(t *testing.T) {
		cc, sc := tr.pair(t)
		go Server(sc, Config{Authenticate: func(tok []byte) error {
			if string(tok) != "letmein" {
				return errors.New("bad token")
			}
			return nil
		}})
		_, err := Client(cc, Config{Token: []byte("guess")})
		var se *SessionError
		if !errors.As(err, &se) || se.Code != CodeUnauthorized || !se.Remote {
			t.Fatalf("Client = %v, want remote UNAUTHORIZED", err)
		}
	})
	t.Run("auth accepted", func(t *testing.T) {
		check := func(tok []byte) error {
			if string(tok) != "letmein" {
				return errors.New("bad token")
			}
			return nil
		}
		sessionPair(t, tr, Config{Token: []byte("letmein")}, Config{Authenticate: check})
	})
	versions := []struct {
		name     string
		min, max byte
		wantAck  bool
	}{
		{"exact", 1, 1, true},
		{"newer client", 1, 9, true},
		{"only newer", 2, 3, false},
	}
	for _, v := range versions {
		t.Run("version "+v.name, func(t *testing.T) {
			c, sc := tr.pair(t)
			go Server(sc, Config{})
			p := newRawPeer(t, c)
			p.send(FrameHello, 0, 0, AppendHello(nil, &Hello{MinVersion: v.min, MaxVersion: v.max, MaxFrameSize: 4096, InitialWindow: 4096}))
			f, err := p.read()
			if err != nil {
				t.Fatal(err)
			}
			if v.wantAck {
				ack, err := ParseHelloAck(f.Payload)
				if f.Header.Type() != FrameHelloAck || err != nil || ack.Version != 1 {
					t.Fatalf("got %v %+v %v, want HELLO_ACK version 1", f.Header.Type(), ack, err)
				}
				return
			}
			code, _, err := ParseCodeReason(f.Payload)
			if f.Header.Type() != FrameError || err != nil || code != CodeUnsupportedVersion {
				t.Fatalf("got %v code %v, want ERROR UNSUPPORTED_VERSION", f.Header.Type(), code)
			}
		})
	}
	t.Run("garbage instead of hello", func(t *testing.T) {
		c, sc := tr.pair(t)
		errc := make(chan error, 1)
		go func() { _, err := Server(sc, Config{}); errc <- err }()
		p := newRawPeer(t, c)
		p.sendRaw([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		if err := <-errc; !errors.Is(err, ErrBadMagic) {
			t.Errorf("Server = %v, want bad magic", err)
		}
		if f, err := p.read(); err != nil || f.Header.Type() != FrameError {
			t.Errorf("peer got %v, %v; want ERROR", f.Header.Type(), err)
		}
	})
	t.Run("silent client", func(t *testing.T) {
		c, sc := tr.pair(t)
		defer c.Close()
		start := time.Now()
		_, err := Server(sc, Config{HandshakeTimeout: 100 * time.Millisecond})
		if err == nil || time.Since(start) > 5*time.Second {
			t.Fatalf("Server = %v after %v", err, time.Since(start))
		}
	})
}

func TestCompression(t *testing.T) {
	for _, alg := range []Compression{CompressionZstd, CompressionS2} {
		t.Run(string(alg), func(t *testing.T) {
			cc, sc := tcpPair(t)
			counter := &countingConn{Conn: cc}
			type res struct {
				s   *Session
				err error
			}
			ch := make(chan res, 1)
			go func() {
				s, err := Server(sc, Config{Compression: []Compression{alg}})
				ch <- res{s, err}
			}()
			c, err := Client(counter, Config{Compression: []Compression{CompressionS2, CompressionZstd}})
			if err != nil {
				t.Fatal(err)
			}
			r := <-ch
			if r.err != nil {
				t.Fatal(r.err)
			}
			defer c.Close()
			defer r.s.Close()
			if c.Compression() != alg || r.s.Compression() != alg {
				t.Fatalf("negotiated %q/%q, want %q", c.Compression(), r.s.Compression(), alg)
			}
			echoServer(t, r.s)
			st, _ := c.Open(ctxT(t), "echo")
			msg := bytes.Repeat([]byte("compressible text "), 100000)
			go func() {
				st.Write(msg)
				st.CloseWrite()
			}()
			got, err := io.ReadAll(st)
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("echo: %d bytes, %v", len(got), err)
			}
			if w := counter.written(); w > int64(len(msg))/4 {
				t.Errorf("wrote %d bytes on the wire for %d compressible bytes", w, len(msg))
			}
		})
	}
}

type countingConn struct {
	net.Conn
	mu sync.Mutex
	n  int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.n += int64(n)
	c.mu.Unlock()
	return n, err
}

func (c *countingConn) written() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func TestMessages(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			cfg := Config{MaxFrameSize: 4 << 10, MaxMessageSize: 200 << 10, WindowSize: 64 << 10}
			c, s := sessionPair(t, tr, cfg, cfg)
			st, _ := c.Open(ctxT(t), "msg")
			peer, err := s.Accept(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			msgs := [][]byte{
				[]byte("one"),
				{},
				bytes.Repeat([]byte{7}, 100<<10), // 25 fragments with MORE
				bytes.Repeat([]byte{8}, 300<<10), // over the bound
				[]byte("after"),
			}
			go func() {
				for _, m := range msgs {
					if err := st.WriteMessage(m); err != nil {
						t.Error(err)
						return
					}
				}
				st.CloseWrite()
			}()
			var buf []byte
			for i, m := range msgs {
				buf, err = peer.ReadMessage(buf[:0])
				if i == 3 {
					if !errors.Is(err, ErrMessageTooLarge) {
						t.Fatalf("message %d: err %v, want ErrMessageTooLarge", i, err)
					}
					continue
				}
				if err != nil || !bytes.Equal(buf, m) {
					t.Fatalf("message %d: %d bytes, %v; want %d bytes", i, len(buf), err, len(m))
				}
			}
			if _, err := peer.ReadMessage(buf[:0]); err != io.EOF {
				t.Fatalf("after last message: %v, want EOF", err)
			}
		})
	}
}

func TestManyStreams(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			c, s := sessionPair(t, tr, Config{}, Config{})
			echoServer(t, s)
			var wg sync.WaitGroup
			for i := 0; i < 50; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					st, err := c.Open(ctxT(t), "echo")
					if err != nil {
						t.Error(err)
						return
					}
					defer st.Close()
					msg := bytes.Repeat([]byte{byte(i)}, 1000*i+1)
					go func() {
						st.Write(msg)
						st.CloseWrite()
					}()
					got, err := io.ReadAll(st)
					if err != nil || !bytes.Equal(got, msg) {
						t.Errorf("stream %d: %d bytes, %v", i, len(got), err)
					}
				}(i)
			}
			wg.Wait()
		})
	}
}

func TestStreamLimits(t *testing.T) {
	t.Run("max streams", func(t *testing.T) {
		c, _ := sessionPair(t, transports()[0], Config{MaxStreams: 2}, Config{})
		c.Open(ctxT(t), "a")
		c.Open(ctxT(t), "b")
		if _, err := c.Open(ctxT(t), "c"); !errors.Is(err, ErrTooManyStreams) {
			t.Fatalf("third Open = %v", err)
		}
	})
	t.Run("backlog full", func(t *testing.T) {
		c, _ := sessionPair(t, transports()[1], Config{}, Config{AcceptBacklog: 1})
		c.Open(ctxT(t), "a")
		st, _ := c.Open(ctxT(t), "b")
		_, err := st.Read(make([]byte, 1))
		if CodeOf(err) != CodeRefused {
			t.Fatalf("Read on refused stream = %v", err)
		}
	})
	t.Run("server refuses after goaway", func(t *testing.T) {
		s, p := rawServerSession(t, Config{})
		s.GoAway(CodeNoError, "")
		p.expect(FrameGoAway)
		p.send(FrameOpen, 0, 1, []byte("x"))
		f := p.expect(FrameReset)
		if code, _, _ := ParseCodeReason(f.Payload); code != CodeRefused {
			t.Errorf("RESET code %v, want REFUSED_STREAM", code)
		}
	})
}

// TestHostileInput drives a server session with a hand-written peer and
// checks that each kind of bad input gets the answer the spec gives it.
func TestHostileInput(t *testing.T) {
	type want struct {
		t    FrameType
		code ErrorCode
		dead bool // the session must end
	}
	tests := []struct {
		name string
		feed func(p *rawPeer)
		want want
	}{
		{"bad magic", func(p *rawPeer) {
			b := AppendFrame(nil, FramePing, 0, 0, make([]byte, 8))
			b[0] = 'Z'
			p.sendRaw(b)
		}, want{FrameGoAway, CodeProtocol, true}},
		{"unknown version", func(p *rawPeer) {
			var h Header
			h.set(7, FramePing, 0, 0, 8)
			p.sendRaw(append(h[:], make([]byte, 12)...))
		}, want{FrameGoAway, CodeUnsupportedVersion, true}},
		{"4 GiB length", func(p *rawPeer) {
			var h Header
			h.set(1, FrameData, 0, 1, 0xffffffff)
			p.sendRaw(h[:])
		}, want{FrameGoAway, CodeFrameSize, true}},
		{"control frame too long", func(p *rawPeer) {
			p.send(FramePing, 0, 0, make([]byte, 4000))
		}, want{FrameGoAway, CodeFrameSize, true}},
		{"checksum", func(p *rawPeer) {
			b := AppendFrame(nil, FramePing, 0, 0, make([]byte, 8))
			b[len(b)-1] ^= 0xff
			p.sendRaw(b)
		}, want{FrameGoAway, CodeChecksum, true}},
		{"unknown frame type", func(p *rawPeer) {
			p.send(FrameType(0x42), 0, 0, nil)
		}, want{FrameGoAway, CodeProtocol, true}},
		{"second hello", func(p *rawPeer) {
			p.send(FrameHello, 0, 0, AppendHello(nil, &Hello{MinVersion: 1, MaxVersion: 1, MaxFrameSize: 4096, InitialWindow: 4096}))
		}, want{FrameGoAway, CodeProtocol, true}},
		{"data on stream 0", func(p *rawPeer) {
			p.send(FrameData, 0, 0, []byte("x"))
		}, want{FrameGoAway, CodeProtocol, true}},
		{"open with server parity", func(p *rawPeer) {
			p.send(FrameOpen, 0, 2, []byte("x"))
		}, want{FrameGoAway, CodeProtocol, true}},
		{"open reusing an id", func(p *rawPeer) {
			p.send(FrameOpen, 0, 5, []byte("x"))
			p.send(FrameOpen, 0, 3, []byte("x"))
		}, want{FrameGoAway, CodeProtocol, true}},
		{"data on unknown stream", func(p *rawPeer) {
			p.send(FrameData, 0, 9, []byte("x"))
		}, want{FrameReset, CodeUnknownStream, false}},
		{"window update on unknown stream", func(p *rawPeer) {
			p.send(FrameWindowUpdate, 0, 4, []byte{0, 0, 1, 0})
		}, want{FrameReset, CodeUnknownStream, false}},
		{"data over window", func(p *rawPeer) {
			p.send(FrameOpen, 0, 1, []byte("x"))
			for i := 0; i < 3; i++ { // server window is 64 KiB below
				p.send(FrameData, 0, 1, make([]byte, 30<<10))
			}
		}, want{FrameReset, CodeFlowControl, false}},
		{"window overflow", func(p *rawPeer) {
			p.send(FrameOpen, 0, 1, []byte("x"))
			p.send(FrameWindowUpdate, 0, 1, []byte{0x7f, 0xff, 0xff, 0xff})
		}, want{FrameReset, CodeFlowControl, false}},
		{"data after close", func(p *rawPeer) {
			p.send(FrameOpen, 0, 1, []byte("x"))
			p.send(FrameClose, 0, 1, nil)
			p.send(FrameData, 0, 1, []byte("x"))
		}, want{FrameReset, CodeStreamClosed, false}},
		{"compressed without negotiation", func(p *rawPeer) {
			p.send(FrameOpen, 0, 1, []byte("x"))
			p.send(FrameData, FlagCompressed, 1, []byte("garbage"))
		}, want{FrameReset, CodeCompression, false}},
		{"invalid service name", func(p *rawPeer) {
			p.send(FrameOpen, 0, 1, []byte("has space"))
		}, want{FrameReset, CodeProtocol, false}},
		{"malformed RESET", func(p *rawPeer) {
			p.send(FrameOpen, 0, 1, []byte("x"))
			p.send(FrameReset, 0, 1, []byte{0, 0})
		}, want{FrameGoAway, CodeFrameSize, true}},
		{"malformed GOAWAY", func(p *rawPeer) {
			p.send(FrameGoAway, 0, 0, []byte{0, 0})
		}, want{FrameGoAway, CodeFrameSize, true}},
		{"zero WINDOW_UPDATE", func(p *rawPeer) {
			p.send(FrameOpen, 0, 1, []byte("x"))
			p.send(FrameWindowUpdate, 0, 1, []byte{0, 0, 0, 0})
		}, want{FrameReset, CodeProtocol, false}},
		{"ERROR from peer", func(p *rawPeer) {
			p.send(FrameError, 0, 0, AppendCodeReason(nil, CodeInternal, "boom"))
		}, want{0, 0, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, p := rawServerSession(t, Config{WindowSize: 64 << 10, KeepAliveInterval: -1})
			go func() { // accept and hold streams so they stay open
				for {
					if _, err := s.Accept(context.Background()); err != nil {
						return
					}
				}
			}()
			tt.feed(p)
			if tt.want.t != 0 {
				f := p.expect(tt.want.t)
				var code ErrorCode
				if tt.want.t == FrameGoAway {
					_, code, _, _ = ParseGoAway(f.Payload)
				} else {
					code, _, _ = ParseCodeReason(f.Payload)
				}
				if code != tt.want.code {
					t.Errorf("%v code %v, want %v", tt.want.t, code, tt.want.code)
				}
			}
			if tt.want.dead {
				select {
				case <-s.Done():
				case <-time.After(5 * time.Second):
					t.Fatal("session survived fatal input")
				}
				if tt.want.t == FrameGoAway && CodeOf(s.Err()) != tt.want.code {
					t.Errorf("session error %v, want code %v", s.Err(), tt.want.code)
				}
				return
			}
			// The session survives stream-level errors.
			p.send(FramePing, 0, 0, []byte("survived"))
			if f := p.expect(FramePong); string(f.Payload) != "survived" || s.Err() != nil {
				t.Errorf("after stream error: PONG %q, session error %v", f.Payload, s.Err())
			}
		})
	}
}

// TestHostileLengthSession sends a live session a DATA header claiming a
// 4 GiB payload: the session must answer GOAWAY FRAME_SIZE_ERROR and end,
// having allocated less than one max-size frame for it.
func TestHostileLengthSession(t *testing.T) {
	s, p := rawServerSession(t, Config{KeepAliveInterval: -1})
	p.send(FrameOpen, 0, 1, []byte("x"))
	p.send(FramePing, 0, 0, make([]byte, 8))
	p.expect(FramePong) // the OPEN has been processed
	var hdr Header
	hdr.set(Version, FrameData, 0, 1, 0xffffffff)
	hostile := append(hdr[:], bytes.Repeat([]byte{0xee}, 1<<16)...)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p.sendRaw(hostile)
	f := p.expect(FrameGoAway)
	<-s.Done()
	runtime.ReadMemStats(&after)
	if _, code, _, _ := ParseGoAway(f.Payload); code != CodeFrameSize {
		t.Errorf("GOAWAY code %v, want FRAME_SIZE_ERROR", code)
	}
	grew := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %d bytes handling the hostile header", grew)
	if grew > DefaultMaxFrameSize {
		t.Errorf("allocated %d bytes, more than the %d-byte frame limit", grew, DefaultMaxFrameSize)
	}
}

// TestPingFlood sends PINGs from a peer that never reads: the session must
// cut it off with ENHANCE_YOUR_CALM instead of queueing PONGs without bound,
// and must do so in about a second of stalled replies however long its
// WriteTimeout is: neither the stall nor the parting GOAWAY waits for it.
func TestPingFlood(t *testing.T) {
	const writeTimeout = time.Minute
	c, sc := net.Pipe()
	p := newRawPeer(t, c)
	ch := make(chan *Session, 1)
	go func() {
		s, err := Server(sc, Config{KeepAliveInterval: -1, WriteTimeout: writeTimeout})
		if err != nil {
			t.Error(err)
		}
		ch <- s
	}()
	p.handshakeAsClient(1 << 20)
	s := <-ch
	if s == nil {
		t.FailNow()
	}
	defer s.Close()
	start := time.Now()
	ping := AppendFrame(nil, FramePing, 0, 0, make([]byte, 8))
	go func() {
		for i := 0; i < 10*ctrlQueueSize; i++ {
			c.SetWriteDeadline(time.Now().Add(writeTimeout))
			if _, err := c.Write(ping); err != nil {
				return // the session hung up
			}
		}
	}()
	select {
	case <-s.Done():
	case <-time.After(writeTimeout / 2):
		t.Fatal("session kept absorbing a ping flood")
	}
	if CodeOf(s.Err()) != CodeEnhanceYourCalm {
		t.Errorf("session error %v, want ENHANCE_YOUR_CALM", s.Err())
	}
	if d := time.Since(start); d > writeTimeout/4 {
		t.Errorf("took %v to cut off the flood: the cut-off waited for WriteTimeout", d)
	}
}

func TestReaderFromWriterTo(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			c, s := sessionPair(t, tr, Config{}, Config{})
			echoServer(t, s)
			st, err := c.Open(ctxT(t), "echo")
			if err != nil {
				t.Fatal(err)
			}
			if st.LocalAddr() == nil || st.RemoteAddr() == nil || st.Session() != c {
				t.Error("addresses or session missing")
			}
			data := bytes.Repeat([]byte("0123456789abcdef"), 50000)
			go func() {
				// A plain io.Reader makes io.Copy use Stream.ReadFrom.
				if n, err := io.Copy(st, io.LimitReader(bytes.NewReader(data), int64(len(data)))); err != nil || n != int64(len(data)) {
					t.Errorf("ReadFrom = %d, %v", n, err)
				}
				st.CloseWrite()
			}()
			var out bytes.Buffer
			if n, err := st.WriteTo(&out); err != nil || n != int64(len(data)) || !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("WriteTo = %d, %v", n, err)
			}
		})
	}
}

// TestClientRejectsBadAck checks the client's validation of HELLO_ACK.
// TestClientRejectsBadAck checks that a client refuses a HELLO_ACK out of
// range, or a server's first frame that is no frame at all, and tells the
// server why with ERROR before it closes (docs/wire.md 7.3, 11.1).
func TestClientRejectsBadAck(t *testing.T) {
	ackFrame := func(a HelloAck) []byte { return AppendFrame(nil, FrameHelloAck, 0, 0, AppendHelloAck(nil, &a)) }
	acks := []struct {
		name  string
		frame []byte
		code  ErrorCode
	}{
		{"version 2", ackFrame(HelloAck{Version: 2, MaxFrameSize: 4096, InitialWindow: 4096}), CodeUnsupportedVersion},
		{"tiny frames", ackFrame(HelloAck{Version: 1, MaxFrameSize: 10, InitialWindow: 4096}), CodeProtocol},
		{"tiny window", ackFrame(HelloAck{Version: 1, MaxFrameSize: 4096, InitialWindow: 10}), CodeProtocol},
		{"feature not offered", ackFrame(HelloAck{Version: 1, MaxFrameSize: 4096, InitialWindow: 4096, Features: FeatureZstd}), CodeProtocol},
		{"short HELLO_ACK", AppendFrame(nil, FrameHelloAck, 0, 0, make([]byte, 12)), CodeProtocol},
		{"PING instead", AppendFrame(nil, FramePing, 0, 0, make([]byte, 8)), CodeProtocol},
		{"not the protocol", []byte("SSH-2.0-OpenSSH_9.2p1 Debian\r\n"), CodeProtocol},
		{"bad checksum", func() []byte {
			b := ackFrame(HelloAck{Version: 1, MaxFrameSize: 4096, InitialWindow: 4096})
			b[len(b)-1] ^= 1
			return b
		}(), CodeChecksum},
	}
	for _, a := range acks {
		t.Run(a.name, func(t *testing.T) {
			c, sc := tcpPair(t)
			p := newRawPeer(t, sc)
			got := make(chan error, 1)
			go func() {
				if _, err := p.read(); err != nil {
					got <- err
					return
				}
				p.sendRaw(a.frame)
				f, err := p.read()
				if err != nil {
					got <- fmt.Errorf("want ERROR: %w", err)
					return
				}
				code, _, _ := ParseCodeReason(f.Payload)
				if f.Header.Type() != FrameError || code != a.code {
					got <- fmt.Errorf("client sent %v code %v, want ERROR %v", f.Header.Type(), code, a.code)
					return
				}
				if _, err := p.read(); err == nil {
					got <- errors.New("client sent more after ERROR")
					return
				}
				got <- nil
			}()
			_, err := Client(c, Config{Compression: []Compression{CompressionS2}})
			if CodeOf(err) != a.code {
				t.Errorf("Client = %v, want code %v", err, a.code)
			}
			if err := <-got; err != nil {
				t.Error(err)
			}
		})
	}
}

// TestChaos runs many streams that write, half-close, reset, close and
// time out at random, on small windows and frames, and checks that every
// goroutine finishes and both sessions stay healthy.
func TestChaos(t *testing.T) {
	for _, tr := range transports()[:2] {
		t.Run(tr.name, func(t *testing.T) {
			cfg := Config{WindowSize: 4 << 10, MaxFrameSize: 1 << 10, MaxStreams: 64}
			c, s := sessionPair(t, tr, cfg, cfg)
			var wg sync.WaitGroup
			act := func(st *Stream, seed uint64) {
				defer wg.Done()
				r := rand.New(rand.NewPCG(seed, 1))
				st.SetDeadline(time.Now().Add(2 * time.Second))
				buf := make([]byte, 3000)
				go func() { io.Copy(io.Discard, st) }() //nolint:errcheck // ends with the stream
				for i := 0; i < 20; i++ {
					switch r.IntN(10) {
					case 0:
						st.Reset(ErrorCode(0x100 + r.IntN(5)))
					case 1:
						st.CloseWrite()
					case 2:
						st.SetWriteDeadline(time.Now().Add(time.Duration(r.IntN(5)) * time.Millisecond))
					case 3:
						st.WriteMessage(buf[:r.IntN(len(buf))])
					default:
						st.Write(buf[:1+r.IntN(len(buf)-1)])
					}
				}
				st.Close()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := uint64(0); ; i++ {
					st, err := s.Accept(context.Background())
					if err != nil {
						return
					}
					wg.Add(1)
					go act(st, i)
				}
			}()
			for i := uint64(0); i < 40; i++ {
				st, err := c.Open(ctxT(t), "chaos")
				if err != nil {
					t.Fatal(err)
				}
				wg.Add(1)
				go act(st, 1000+i)
			}
			within(t, 10*time.Second, "chaotic streams to be released", func() bool {
				return c.NumStreams() == 0 && s.NumStreams() == 0
			})
			if c.Err() != nil || s.Err() != nil {
				t.Fatalf("sessions failed: %v / %v", c.Err(), s.Err())
			}
			if _, err := c.Ping(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			s.Close()
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("stream goroutines did not finish")
			}
		})
	}
}
