package wire

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

// TestReadBufferSizes moves messages of many sizes through a stream read
// with buffers of many sizes, over every transport: payloads land in the
// parked Read's buffer, partly in it and partly queued, or queued whole,
// and the bytes must come out in order either way.
func TestReadBufferSizes(t *testing.T) {
	writes := []int{1, 100, 4 << 10, 16<<10 + 3, 64 << 10, 200 << 10}
	reads := []int{1, 7, 4 << 10, 64 << 10, 300 << 10}
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			c, s := sessionPair(t, tr, Config{}, Config{})
			echoServer(t, s)
			st, err := c.Open(ctxT(t), "echo")
			if err != nil {
				t.Fatal(err)
			}
			var want bytes.Buffer
			rng := rand.New(rand.NewPCG(1, 2))
			for i := 0; i < 4; i++ {
				for _, n := range writes {
					p := make([]byte, n)
					for j := range p {
						p[j] = byte(rng.Uint32())
					}
					want.Write(p)
				}
			}
			go func() {
				b := want.Bytes()
				for i := 0; len(b) > 0; i++ {
					n := min(len(b), writes[i%len(writes)])
					if _, err := st.Write(b[:n]); err != nil {
						t.Errorf("Write: %v", err)
						return
					}
					b = b[n:]
				}
				st.CloseWrite()
			}()
			var got bytes.Buffer
			st.SetReadDeadline(time.Now().Add(30 * time.Second))
			for i := 0; ; i++ {
				buf := make([]byte, reads[i%len(reads)])
				n, err := st.Read(buf)
				got.Write(buf[:n])
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("Read after %d bytes: %v", got.Len(), err)
				}
			}
			if !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Fatalf("read %d bytes, want %d, or they differ", got.Len(), want.Len())
			}
		})
	}
}

// TestReadParkedFrameInPieces sends a large DATA frame in two pieces while
// a Read is parked: the session must not keep the Read's buffer while it
// waits for the second piece (a deadline in between returns at once), and
// the Read after it gets the whole payload.
func TestReadParkedFrameInPieces(t *testing.T) {
	s, p := rawServerSession(t, Config{KeepAliveInterval: -1})
	p.send(FrameOpen, 0, 1, []byte("svc"))
	st, err := s.Accept(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("0123456789abcdef"), 4000) // 64000 bytes
	frame := AppendFrame(nil, FrameData, 0, 1, payload)

	parked := func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.rwait != nil
	}
	// A Read with a deadline parks; the first piece arrives while it waits.
	type res struct {
		n   int
		err error
		buf []byte
	}
	done := make(chan res, 1)
	go func() {
		buf := make([]byte, 1<<17)
		st.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := st.Read(buf)
		done <- res{n, err, buf}
	}()
	within(t, 5*time.Second, "Read to park", parked)
	p.sendRaw(frame[:HeaderSize+30000])
	r := <-done // the deadline passes: the half frame must not hold it
	if r.n != 0 || !isTimeout(r.err) {
		t.Fatalf("Read = %d, %v; want a timeout with nothing read", r.n, r.err)
	}
	p.sendRaw(frame[HeaderSize+30000:])
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(io.LimitReader(st, int64(len(payload))))
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("read %d bytes, %v; want the payload", len(got), err)
	}
}

func isTimeout(err error) bool {
	te, ok := err.(interface{ Timeout() bool })
	return ok && te.Timeout()
}
