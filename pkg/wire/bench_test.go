package wire

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

var benchSizes = []int{64, 1 << 10, 64 << 10}

func sizeName(n int) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// BenchmarkEncode measures WriteFrame (header, CRC-32C, copy into a bufio
// writer) per payload size.
func BenchmarkEncode(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(sizeName(n), func(b *testing.B) {
			payload := make([]byte, n)
			bw := bufio.NewWriterSize(io.Discard, 2*(n+Overhead))
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if err := WriteFrame(bw, FrameData, 0, 1, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// repeatReader serves the same bytes forever.
type repeatReader struct {
	data []byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], r.data[r.off:])
		n += k
		r.off = (r.off + k) % len(r.data)
	}
	return n, nil
}

// BenchmarkDecode measures ReadFrame (validation, copy into the caller's
// buffer, CRC-32C check) per payload size.
func BenchmarkDecode(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(sizeName(n), func(b *testing.B) {
			frame := AppendFrame(nil, FrameData, 0, 1, make([]byte, n))
			var stream []byte
			for len(stream) < 256<<10 {
				stream = append(stream, frame...)
			}
			br := bufio.NewReaderSize(&repeatReader{data: stream}, 16<<10)
			buf := make([]byte, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				f, err := ReadFrame(br, DefaultMaxFrameSize, buf)
				if err != nil || len(f.Payload) != n {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParse measures ParseFrame, which decodes in place from memory:
// validation and CRC-32C with no copy.
func BenchmarkParse(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(sizeName(n), func(b *testing.B) {
			frame := AppendFrame(nil, FrameData, 0, 1, make([]byte, n))
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				f, _, err := ParseFrame(frame, DefaultMaxFrameSize)
				if err != nil || len(f.Payload) != n {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkThroughput moves 64 KiB writes over one stream of a session on
// loopback TCP ("stream") and over a plain TCP connection ("rawTCP") with
// the same loop, in the same run.
func BenchmarkThroughput(b *testing.B) {
	b.Run("rawTCP", func(b *testing.B) {
		c, s := tcpPair(b)
		defer c.Close()
		defer s.Close()
		pumpN(b, c, s)
	})
	b.Run("stream", func(b *testing.B) {
		st, peer := benchStreams(b)
		pumpN(b, st, peer)
	})
}

// BenchmarkStreamVsTCP alternates 32 MiB transfers over raw loopback TCP
// and over a session stream, so both see the same machine load, and
// reports each rate and their ratio (stream/raw).
func BenchmarkStreamVsTCP(b *testing.B) {
	c, s := tcpPair(b)
	defer c.Close()
	defer s.Close()
	st, peer := benchStreams(b)
	const size = 32 << 20
	var rawT, streamT time.Duration
	b.ReportAllocs()
	for b.Loop() {
		rawT += timedPump(b, c, s, size)
		streamT += timedPump(b, st, peer, size)
	}
	n := float64(b.N) * size / 1e6
	b.ReportMetric(n/rawT.Seconds(), "raw-MB/s")
	b.ReportMetric(n/streamT.Seconds(), "stream-MB/s")
	b.ReportMetric(rawT.Seconds()/streamT.Seconds(), "ratio")
}

func benchStreams(b *testing.B) (*Stream, *Stream) {
	c, s := sessionPair(b, transport{"tcp", tcpPair}, Config{}, Config{})
	accepted := make(chan *Stream, 1)
	go func() {
		st, err := s.Accept(context.Background())
		if err == nil {
			accepted <- st
		}
	}()
	st, err := c.Open(context.Background(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	return st, <-accepted
}

const pumpChunk = 64 << 10

// pumpReadBuf is the reader's buffer; pumps never run concurrently.
var pumpReadBuf = make([]byte, pumpChunk)

var pumpData = func() []byte {
	p := make([]byte, pumpChunk)
	for i := range p {
		p[i] = byte(rand.Uint32())
	}
	return p
}()

// pumpN writes b.N chunks of 64 KiB on w and reads them on r.
func pumpN(b *testing.B, w, r net.Conn) {
	b.SetBytes(pumpChunk)
	b.ReportAllocs()
	b.ResetTimer()
	timedPump(b, w, r, int64(b.N)*pumpChunk)
}

// timedPump writes total bytes in 64 KiB chunks on w, reads them on r with
// a 64 KiB buffer and returns the elapsed time.
func timedPump(b *testing.B, w, r net.Conn, total int64) time.Duration {
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		rb := pumpReadBuf
		var got int64
		for got < total {
			n, err := r.Read(rb)
			got += int64(n)
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for sent := int64(0); sent < total; sent += pumpChunk {
		if _, err := w.Write(pumpData); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkRoundTrip measures a small request/response over one stream.
func BenchmarkRoundTrip(b *testing.B) {
	c, s := sessionPair(b, transport{"tcp", tcpPair}, Config{}, Config{})
	echoServer(b, s)
	st, err := c.Open(context.Background(), "echo")
	if err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 64)
	buf := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := st.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(st, buf); err != nil {
			b.Fatal(err)
		}
	}
}
