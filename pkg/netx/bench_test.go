package netx

import (
	"context"
	"io"
	"net"
	"testing"
)

// naiveJoin copies through a 32 KiB user-space buffer, as a proxy does when
// the connections are hidden behind wrappers.
func naiveJoin(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		io.CopyBuffer(writerOnly{a}, readerOnly{b}, make([]byte, 32<<10))
		a.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.CopyBuffer(writerOnly{b}, readerOnly{a}, make([]byte, 32<<10))
	b.(*net.TCPConn).CloseWrite()
	<-done
	a.Close()
	b.Close()
}

// benchStream measures one-way bulk throughput client -> proxy -> server,
// the proxy running join over loopback TCP.
func benchStream(b *testing.B, kind proxyKind, join func(a, b net.Conn)) {
	client, pa, pb, server := proxyConns(b, kind)
	joined := make(chan struct{})
	go func() { defer close(joined); join(pa, pb) }()
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	sunk := make(chan error, 1)
	go func() {
		_, err := io.CopyBuffer(writerOnly{io.Discard}, readerOnly{server}, make([]byte, chunk))
		server.Close()
		sunk <- err
	}()
	b.SetBytes(chunk)
	b.ReportAllocs()
	cpu := startCPU()
	b.ResetTimer()
	for range b.N {
		if _, err := client.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	client.(*net.TCPConn).CloseWrite()
	if err := <-sunk; err != nil {
		b.Fatal(err)
	}
	<-joined
	b.StopTimer()
	cpu.report(b)
}

func joinFunc(opts JoinOptions) func(a, b net.Conn) {
	return func(a, b net.Conn) { Join(context.Background(), a, b, opts) }
}

// BenchmarkJoinStream compares Join, which keeps the kernel's splice path,
// with a copy through a 32 KiB user-space buffer.
func BenchmarkJoinStream(b *testing.B) {
	b.Run("Join", func(b *testing.B) { benchStream(b, kindRaw, joinFunc(JoinOptions{})) })
	b.Run("Join/wrapped", func(b *testing.B) { benchStream(b, kindWrapped, joinFunc(JoinOptions{})) })
	b.Run("Join/idle-timeout", func(b *testing.B) {
		benchStream(b, kindRaw, joinFunc(JoinOptions{IdleTimeout: testTimeout}))
	})
	b.Run("naive-32KiB", func(b *testing.B) { benchStream(b, kindRaw, naiveJoin) })
	b.Run("direct-no-proxy", benchDirect)
}

// benchDirect is the ceiling: the same stream with no proxy between.
func benchDirect(b *testing.B) {
	client, server := tcpPair(b)
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	sunk := make(chan error, 1)
	go func() {
		_, err := io.CopyBuffer(writerOnly{io.Discard}, readerOnly{server}, make([]byte, chunk))
		sunk <- err
	}()
	b.SetBytes(chunk)
	b.ReportAllocs()
	cpu := startCPU()
	b.ResetTimer()
	for range b.N {
		if _, err := client.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	client.CloseWrite()
	if err := <-sunk; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	cpu.report(b)
}

// BenchmarkJoinPingPong measures a small request/response round trip
// through the proxy, the latency-bound case.
func BenchmarkJoinPingPong(b *testing.B) {
	for _, bc := range []struct {
		name string
		join func(a, b net.Conn)
	}{
		{"Join", joinFunc(JoinOptions{})},
		{"naive-32KiB", naiveJoin},
	} {
		b.Run(bc.name, func(b *testing.B) {
			client, pa, pb, server := proxyConns(b, kindRaw)
			joined := make(chan struct{})
			go func() { defer close(joined); bc.join(pa, pb) }()
			go func() { io.CopyBuffer(writerOnly{server}, readerOnly{server}, make([]byte, 512)); server.Close() }()
			msg, reply := make([]byte, 64), make([]byte, 64)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := client.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(client, reply); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			client.(*net.TCPConn).CloseWrite()
			<-joined
		})
	}
}

func BenchmarkIdleProbe(b *testing.B) {
	c, _ := tcpPair(b)
	var p IdleProbe
	p.Init(c)
	b.ReportAllocs()
	for range b.N {
		if !p.Reusable() {
			b.Fatal("a healthy idle connection is not reusable")
		}
	}
}

func BenchmarkDial(b *testing.B) {
	l := listenLoopback(b)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	d := &Dialer{}
	ctx := context.Background()
	b.ReportAllocs()
	for range b.N {
		c, err := d.DialContext(ctx, "tcp", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
