package edge_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/wire"
)

// fastBackend answers every request with a 13-byte body, keep-alive.
func fastBackend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Length"] = []string{"13"}
		io.WriteString(w, "hello, world\n")
	})}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// BenchmarkHTTPProxy measures keep-alive GETs through the fast path with
// parallel clients; allocations are the edge's and the client's.
func BenchmarkHTTPProxy(b *testing.B) {
	be := fastBackend(b)
	inst, _ := startEdge(b, fmt.Sprintf("routes:\n  - addresses: [%q]\n", be), "--log-level=warn")
	addr := inst.Addrs["http"]
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for pb.Next() {
			c.Write(req)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// BenchmarkTunnelThroughput compares raw TCP with a wire stream tunnelled
// through the edge to the same sink (SetBytes: MB/s is the figure).
func BenchmarkTunnelThroughput(b *testing.B) {
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	inst, _ := startEdge(b, fmt.Sprintf("services:\n  sink: [%q]\ntcp:\n  - {listen: \"127.0.0.1:0\", service: sink}\n", sink.Addr()), "--allow-loopback")
	const chunk = 256 << 10
	buf := make([]byte, chunk)
	run := func(b *testing.B, w io.WriteCloser) {
		b.SetBytes(chunk)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := w.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		w.Close()
	}
	b.Run("raw", func(b *testing.B) {
		c, err := net.Dial("tcp", sink.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		run(b, c)
	})
	b.Run("tcp-proxy", func(b *testing.B) {
		c, err := net.Dial("tcp", inst.Addrs["tcp0"])
		if err != nil {
			b.Fatal(err)
		}
		run(b, c)
	})
	b.Run("wire", func(b *testing.B) {
		c, err := net.Dial("tcp", inst.Addrs["wire"])
		if err != nil {
			b.Fatal(err)
		}
		s, err := wire.Client(c, wire.Config{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := s.Open(ctx, "sink")
		if err != nil {
			b.Fatal(err)
		}
		run(b, st)
	})
}

// rawBackend answers every request head with the same 13-byte response,
// keep-alive, without allocating per request (requests have no body).
func rawBackend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nhello, world\n")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReaderSize(c, 16<<10)
				for {
					// A request head ends with an empty line.
					for {
						line, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(line) <= 2 {
							break
						}
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkHTTPFastPathAllocs is BenchmarkHTTPProxy with a backend and
// clients that allocate nothing per request, so allocs/op is the edge's
// own: the HTTP/1.1 fast path must report 0.
func BenchmarkHTTPFastPathAllocs(b *testing.B) {
	be := rawBackend(b)
	inst, _ := startEdge(b, fmt.Sprintf("routes:\n  - addresses: [%q]\n", be), "--log-level=warn")
	addr := inst.Addrs["http"]
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReaderSize(c, 16<<10)
		body := make([]byte, 13)
		for pb.Next() {
			if _, err := c.Write(req); err != nil {
				b.Error(err)
				return
			}
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					b.Error(err)
					return
				}
				if len(line) <= 2 {
					break
				}
			}
			if _, err := io.ReadFull(br, body); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
