package edge

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// gRPC status codes the edge produces or looks at.
const (
	grpcDeadlineExceeded  = 4
	grpcResourceExhausted = 8
	grpcUnimplemented     = 12
	grpcUnavailable       = 14
)

// isGRPC reports whether r is a gRPC call that must go to the backend over
// HTTP/2: an HTTP/2 request whose Content-Type is application/grpc or
// application/grpc+<codec>. gRPC-Web (application/grpc-web…) works over
// HTTP/1.1 and stays on the ordinary proxy.
func isGRPC(r *http.Request) bool {
	if r.ProtoMajor != 2 {
		return false
	}
	ct := r.Header.Get("Content-Type")
	if !strings.HasPrefix(ct, "application/grpc") {
		return false
	}
	rest := ct[len("application/grpc"):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// dialError marks a failure to connect to a backend: the call never
// reached it, so another backend may be tried.
type dialError struct{ err error }

func (e *dialError) Error() string { return "connecting to the backend: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// newGRPCTransport returns the transport shared by every gRPC call: HTTP/2
// cleartext with prior knowledge (no HTTP/1.1, no upgrade). HTTP/2
// multiplexes calls, so it keeps about one connection per backend; idle
// ones close after 90s and pings find dead ones.
func newGRPCTransport(p *proxy) *http.Transport {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	return &http.Transport{
		Protocols: &protos,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := p.ups.dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &dialError{err: err}
			}
			return c, nil
		},
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		DisableCompression:     true,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout:  30 * time.Second,
			PingTimeout:      15 * time.Second,
			WriteByteTimeout: p.opt.ClientTimeout,
		},
	}
}

// grpcError answers a gRPC call from the edge itself: HTTP 200 with the
// status in a trailers-only response, as gRPC clients expect.
func grpcError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(code))
	h.Set("Grpc-Message", grpcEncodeMessage(msg))
	h.Set("X-Edge-Error", "1")
	w.WriteHeader(http.StatusOK)
}

// grpcEncodeMessage percent-encodes a grpc-message value.
func grpcEncodeMessage(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= ' ' && c <= '~' && c != '%' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// trackedBody is the client's request body as the transport reads it; it
// records whether any of it was consumed, which forbids a retry. The
// transport closes the body of a request that failed before sending it;
// that close is ignored, so another backend can still be tried (net/http
// closes the body when the handler returns).
// Each read waits at most timeout (--client-timeout) for the client; the
// deadline moves lazily.
type trackedBody struct {
	rc      io.ReadCloser
	rc2     *http.ResponseController
	timeout time.Duration
	dl      time.Time // guarded by the transport: one reader at a time
	read    atomic.Bool
	n       atomic.Int64 // bytes read
}

func (b *trackedBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	if b.rc2 != nil && b.timeout > 0 {
		if now := time.Now(); b.dl.Sub(now) < b.timeout/2 {
			b.dl = now.Add(b.timeout)
			b.rc2.SetReadDeadline(b.dl)
		}
	}
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *trackedBody) Close() error {
	if !b.read.Load() {
		return nil
	}
	return b.rc.Close()
}
