package netx

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// proxyKind says how the proxy's two connections are made: raw accepted
// and dialed *net.TCPConn, or accepted through this package's Listener
// (a wrapper) and dialed by its Dialer.
type proxyKind string

const (
	kindRaw     proxyKind = "raw"
	kindWrapped proxyKind = "listener+dialer"
)

// proxyConns returns client <-> a (proxy) and b (proxy) <-> server.
func proxyConns(t testing.TB, kind proxyKind) (client, a, b, server net.Conn) {
	t.Helper()
	if kind == kindRaw {
		c, pa := tcpPair(t)
		pb, s := tcpPair(t)
		return c, pa, pb, s
	}
	ctx := testContext(t)
	front, err := Listen(ctx, "tcp", "127.0.0.1:0", ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { front.Close() })
	back := listenLoopback(t)

	accepted := make(chan net.Conn, 2)
	go func() {
		c, _ := front.Accept()
		accepted <- c
		s, _ := back.Accept()
		accepted <- s
	}()
	client, err = net.DialTimeout("tcp", front.Addr().String(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	a = <-accepted
	pc, err := (&Dialer{}).DialContext(ctx, "tcp", back.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if a == nil || server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); a.Close(); pc.Close(); server.Close() })
	return client, a, pc, server
}

type joinResult struct {
	aToB, bToA int64
	err        error
}

func startJoin(ctx context.Context, a, b net.Conn, opts JoinOptions) <-chan joinResult {
	ch := make(chan joinResult, 1)
	go func() {
		var r joinResult
		r.aToB, r.bToA, r.err = Join(ctx, a, b, opts)
		ch <- r
	}()
	return ch
}

func awaitJoin(t *testing.T, ch <-chan joinResult) joinResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(testTimeout):
		t.Fatal("Join did not return")
		return joinResult{}
	}
}

// TestJoinHalfClose: a client that shuts down its sending side still gets
// the server's reply, and the server sees end of stream before replying.
func TestJoinHalfClose(t *testing.T) {
	tests := []struct {
		name string
		kind proxyKind
		opts JoinOptions
	}{
		{"raw", kindRaw, JoinOptions{}},
		{"wrapped", kindWrapped, JoinOptions{}},
		{"raw idle timeout", kindRaw, JoinOptions{IdleTimeout: time.Minute}},
		{"wrapped idle timeout", kindWrapped, JoinOptions{IdleTimeout: time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, a, b, server := proxyConns(t, tt.kind)
			done := startJoin(testContext(t), a, b, tt.opts)

			req, reply := []byte("GET /status\n"), []byte("200 all good\n")
			if _, err := client.Write(req); err != nil {
				t.Fatal(err)
			}
			if err := client.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			server.SetDeadline(time.Now().Add(testTimeout))
			got, err := io.ReadAll(server) // ends only at the propagated EOF
			if err != nil {
				t.Fatalf("server read: %v", err)
			}
			if !bytes.Equal(got, req) {
				t.Fatalf("server got %q, want %q", got, req)
			}
			if _, err := server.Write(reply); err != nil {
				t.Fatalf("server reply after half-close: %v", err)
			}
			server.Close()
			client.SetDeadline(time.Now().Add(testTimeout))
			got, err = io.ReadAll(client)
			if err != nil {
				t.Fatalf("client read: %v", err)
			}
			if !bytes.Equal(got, reply) {
				t.Fatalf("client got %q, want %q", got, reply)
			}
			r := awaitJoin(t, done)
			if r.err != nil || r.aToB != int64(len(req)) || r.bToA != int64(len(reply)) {
				t.Fatalf("Join = %d, %d, %v; want %d, %d, nil", r.aToB, r.bToA, r.err, len(req), len(reply))
			}
			// Join closed both of its connections.
			if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
				t.Errorf("write on a after Join: %v, want net.ErrClosed", err)
			}
			if _, err := b.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
				t.Errorf("write on b after Join: %v, want net.ErrClosed", err)
			}
		})
	}
}

// TestJoinBulk sends 8 MiB each way at once and checks every byte arrives.
func TestJoinBulk(t *testing.T) {
	for _, kind := range []proxyKind{kindRaw, kindWrapped} {
		t.Run(string(kind), func(t *testing.T) {
			client, a, b, server := proxyConns(t, kind)
			done := startJoin(testContext(t), a, b, JoinOptions{IdleTimeout: time.Minute})
			const size = 8 << 20
			up, down := make([]byte, size), make([]byte, size)
			rand.Read(up)
			rand.Read(down)
			client.SetDeadline(time.Now().Add(testTimeout))
			server.SetDeadline(time.Now().Add(testTimeout))

			send := func(c net.Conn, p []byte) <-chan error {
				ch := make(chan error, 1)
				go func() {
					_, err := c.Write(p)
					if err == nil {
						err = c.(*net.TCPConn).CloseWrite()
					}
					ch <- err
				}()
				return ch
			}
			upErr, downErr := send(client, up), send(server, down)
			gotUp, err := io.ReadAll(server)
			if err != nil {
				t.Fatal(err)
			}
			gotDown, err := io.ReadAll(client)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-upErr; err != nil {
				t.Fatal(err)
			}
			if err := <-downErr; err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(gotUp) != sha256.Sum256(up) || sha256.Sum256(gotDown) != sha256.Sum256(down) {
				t.Fatalf("payload corrupted: got %d/%d bytes", len(gotUp), len(gotDown))
			}
			r := awaitJoin(t, done)
			if r.err != nil || r.aToB != size || r.bToA != size {
				t.Fatalf("Join = %d, %d, %v; want %d each way", r.aToB, r.bToA, r.err, size)
			}
		})
	}
}

func TestJoinIdleTimeout(t *testing.T) {
	client, a, b, server := proxyConns(t, kindWrapped)
	const idle = 100 * time.Millisecond
	start := time.Now()
	r := awaitJoin(t, startJoin(testContext(t), a, b, JoinOptions{IdleTimeout: idle}))
	if !errors.Is(r.err, ErrIdleTimeout) {
		t.Fatalf("Join error = %v, want ErrIdleTimeout", r.err)
	}
	if el := time.Since(start); el < idle {
		t.Fatalf("idle timeout fired after %v, before the %v limit", el, idle)
	}
	for name, c := range map[string]net.Conn{"client": client, "server": server} {
		c.SetReadDeadline(time.Now().Add(testTimeout))
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%s read after idle timeout = %d, %v; want EOF", name, n, err)
		}
	}
}

// TestJoinIdleTimeoutOneWayTraffic: a stream flowing in one direction only
// keeps the join alive although the other direction is silent.
func TestJoinIdleTimeoutOneWayTraffic(t *testing.T) {
	client, a, b, server := proxyConns(t, kindRaw)
	const idle = 400 * time.Millisecond
	done := startJoin(testContext(t), a, b, JoinOptions{IdleTimeout: idle})
	const writes = 40
	go func() {
		for range writes {
			if _, err := client.Write([]byte{'.'}); err != nil {
				return
			}
			time.Sleep(idle / 16)
		}
		client.(*net.TCPConn).CloseWrite()
	}()
	server.SetDeadline(time.Now().Add(testTimeout))
	got, err := io.ReadAll(server)
	if err != nil || len(got) != writes {
		t.Fatalf("server read %d bytes, %v; want %d", len(got), err, writes)
	}
	server.Close()
	r := awaitJoin(t, done)
	if r.err != nil || r.aToB != writes {
		t.Fatalf("Join = %d, %d, %v; want %d, 0, nil", r.aToB, r.bToA, r.err, writes)
	}
}

func TestJoinContextCancel(t *testing.T) {
	client, a, b, server := proxyConns(t, kindWrapped)
	ctx, cancel := context.WithCancel(testContext(t))
	done := startJoin(ctx, a, b, JoinOptions{})
	// Prove the join is running before cancelling it.
	client.Write([]byte("ping"))
	server.SetDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadFull(server, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	cancel()
	r := awaitJoin(t, done)
	if !errors.Is(r.err, context.Canceled) || r.aToB != 4 {
		t.Fatalf("Join = %d, %d, %v; want 4, 0, context.Canceled", r.aToB, r.bToA, r.err)
	}
	client.SetDeadline(time.Now().Add(testTimeout))
	if _, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read after cancel: %v, want EOF", err)
	}
}

// TestJoinReset: a reset from one side ends the join with the error and
// closes the other side.
func TestJoinReset(t *testing.T) {
	client, a, b, server := proxyConns(t, kindRaw)
	done := startJoin(testContext(t), a, b, JoinOptions{})
	server.(*net.TCPConn).SetLinger(0)
	server.Close() // sends RST
	r := awaitJoin(t, done)
	if !errors.Is(r.err, syscall.ECONNRESET) {
		t.Fatalf("Join error = %v, want ECONNRESET", r.err)
	}
	client.SetDeadline(time.Now().Add(testTimeout))
	if _, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read after reset: %v, want EOF", err)
	}
}

// TestJoinWithoutCloseWrite: a side that cannot half-close is closed
// outright when the other side finishes.
func TestJoinWithoutCloseWrite(t *testing.T) {
	pipeClient, a := net.Pipe()
	defer pipeClient.Close()
	b, server := tcpPair(t)
	done := startJoin(testContext(t), a, b, JoinOptions{})
	go server.Write([]byte("bye"))
	pipeClient.SetDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadFull(pipeClient, make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	server.Close()
	r := awaitJoin(t, done)
	if r.err != nil || r.bToA != 3 {
		t.Fatalf("Join = %d, %d, %v; want 0, 3, nil", r.aToB, r.bToA, r.err)
	}
	if _, err := pipeClient.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("pipe read after join: %v, want EOF", err)
	}
}

// TestJoinLiveCounters: with CountEvery set, byte counts appear while the
// connection is still open, not only when it ends.
func TestJoinLiveCounters(t *testing.T) {
	for _, kind := range []proxyKind{kindRaw, kindWrapped} {
		t.Run(string(kind), func(t *testing.T) {
			client, a, b, server := proxyConns(t, kind)
			var counters JoinCounters
			done := startJoin(testContext(t), a, b, JoinOptions{Counters: &counters, CountEvery: 10 * time.Millisecond})
			client.Write([]byte("0123456789"))
			server.SetDeadline(time.Now().Add(testTimeout))
			if _, err := io.ReadFull(server, make([]byte, 10)); err != nil {
				t.Fatal(err)
			}
			server.Write([]byte("abc"))
			waitFor(t, "live counters", func() bool { return counters.AToB.Load() == 10 && counters.BToA.Load() == 3 })
			client.(*net.TCPConn).CloseWrite()
			if _, err := server.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("server read: %v, want EOF", err)
			}
			server.Close()
			r := awaitJoin(t, done)
			if r.err != nil || r.aToB != 10 || r.bToA != 3 {
				t.Fatalf("Join = %d, %d, %v; want 10, 3, nil", r.aToB, r.bToA, r.err)
			}
			if counters.AToB.Load() != 10 || counters.BToA.Load() != 3 {
				t.Fatalf("counters = %d, %d after Join; want 10, 3", counters.AToB.Load(), counters.BToA.Load())
			}
		})
	}
}
