package netx

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// procIO returns the bytes this process has passed through read(2)-style
// and write(2)-style system calls. splice(2) counts in neither, so a proxy
// copy that stays in the kernel leaves them unchanged.
func procIO(t *testing.T) (rchar, wchar int64) {
	t.Helper()
	f, err := os.Open("/proc/self/io")
	if err != nil {
		t.Skipf("no per-process I/O accounting: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "rchar":
			rchar = n
		case "wchar":
			wchar = n
		}
	}
	return rchar, wchar
}

// TestJoinZeroCopy checks that Join's copy stays in the kernel: sending
// size bytes client -> proxy -> server costs this process size bytes of
// write (the client) and size of read (the server) and no more. The naive
// copy, a control, costs twice that.
func TestJoinZeroCopy(t *testing.T) {
	const size = 32 << 20
	tests := []struct {
		name     string
		kind     proxyKind
		join     func(a, b net.Conn)
		zeroCopy bool
	}{
		{"Join raw", kindRaw, func(a, b net.Conn) { Join(context.Background(), a, b, JoinOptions{}) }, true},
		{"Join wrapped", kindWrapped, func(a, b net.Conn) { Join(context.Background(), a, b, JoinOptions{}) }, true},
		{"Join idle timeout", kindWrapped, func(a, b net.Conn) {
			Join(context.Background(), a, b, JoinOptions{IdleTimeout: testTimeout})
		}, true},
		{"io.Copy wrapped", kindWrapped, func(a, b net.Conn) {
			io.Copy(b, a)
			b.(closeWriter).CloseWrite()
			a.Close()
			b.Close()
		}, true},
		{"WriteTo wrapped", kindWrapped, func(a, b net.Conn) {
			a.(io.WriterTo).WriteTo(b)
			b.(closeWriter).CloseWrite()
			a.Close()
			b.Close()
		}, true},
		{"naive 32 KiB copy (control)", kindRaw, naiveJoin, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, a, b, server := proxyConns(t, tt.kind)
			buf, sink := make([]byte, 1<<20), make([]byte, 1<<20)
			r0, w0 := procIO(t)
			done := make(chan struct{})
			go func() { defer close(done); tt.join(a, b) }()
			go func() {
				for range size / len(buf) {
					if _, err := client.Write(buf); err != nil {
						return
					}
				}
				client.(*net.TCPConn).CloseWrite()
			}()
			n, err := io.CopyBuffer(writerOnly{io.Discard}, readerOnly{server}, sink)
			server.Close()
			<-done
			r1, w1 := procIO(t)
			if err != nil || n != size {
				t.Fatalf("server read %d, %v; want %d", n, err, size)
			}
			dr, dw := r1-r0, w1-w0
			t.Logf("read(2) bytes %d (%.2fx payload), write(2) bytes %d (%.2fx)", dr, float64(dr)/size, dw, float64(dw)/size)
			copied := dr > size*3/2 && dw > size*3/2
			if copied == tt.zeroCopy {
				t.Fatalf("zero-copy = %v, want %v", !copied, tt.zeroCopy)
			}
		})
	}
}
