package edge_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/wire"
	"github.com/switchboard-net/switchboard/pkg/wiretransport"
)

// transportEdge runs an edge with the echo service (a tcpBackend, from
// its config file) and the given wire flags.
func transportEdge(t *testing.T, args ...string) map[string]string {
	t.Helper()
	echo := tcpBackend(t, false)
	inst, _ := startEdge(t, fmt.Sprintf("services:\n  echo: [%q]\n", echo), append([]string{"--allow-loopback"}, args...)...)
	return inst.Addrs
}

// dialEdge opens a session to the edge at u.
func dialEdge(t *testing.T, u string, tc *tls.Config, w wire.Config, count func(net.Conn) net.Conn) (wiretransport.Session, error) {
	t.Helper()
	ep, err := wiretransport.ParseEndpoint(u, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w.HandshakeTimeout = 5 * time.Second
	s, err := wiretransport.Dial(ctx, ep, wiretransport.DialOptions{TLS: tc, Timeout: 5 * time.Second, Wire: w, CountConn: count})
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

// echoThrough sends payload to the echo service and checks the answer
// (the payload in capitals, then "|").
func echoThrough(s wiretransport.Session, payload string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.Open(ctx, "echo")
	if err != nil {
		return err
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(10 * time.Second))
	go func() { io.WriteString(st, payload); st.CloseWrite() }()
	b, err := io.ReadAll(st)
	if err != nil {
		return err
	}
	if string(b) != strings.ToUpper(payload)+"|" {
		return fmt.Errorf("echo: %d bytes back, want %d", len(b), len(payload)+1)
	}
	return nil
}

// TestWireTransports tunnels through one edge over TLS, WebSocket on the
// HTTP and HTTPS listeners, and QUIC; every transport runs the same
// admission (a missing or wrong token is refused with UNAUTHORIZED) and
// refuses an unknown service with NO_SUCH_SERVICE.
func TestWireTransports(t *testing.T) {
	pki := newPKI(t)
	dir := t.TempDir()
	httpsCert, httpsKey := writeCert(t, dir, "localhost")
	addrs := transportEdge(t, append([]string{"--wire-token=s3cret", "--wire-tls",
		"--wire-quic-addr=127.0.0.1:0", "--wire-ws-path=/wire",
		"--https-addr=127.0.0.1:0", "--https-cert=" + httpsCert, "--https-key=" + httpsKey},
		pki.serverFlags(true)...)...)
	trustAll := &tls.Config{InsecureSkipVerify: true} // the HTTPS listener's self-signed certificate
	tests := []struct {
		name string
		url  string
		tc   *tls.Config
	}{
		{"tls", "tls://" + addrs["wire"], pki.client("")},
		{"ws on the HTTP listener", "ws://" + addrs["http"] + "/wire", nil},
		{"wss on the HTTPS listener", "wss://" + addrs["https"] + "/wire?v=1", trustAll},
		{"quic", "quic://" + addrs["wire-quic"], pki.client("")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := dialEdge(t, tt.url, tt.tc, wire.Config{Token: []byte("s3cret")}, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if err := echoThrough(s, strings.Repeat(fmt.Sprintf("stream %d ", i), 20000)); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st, err := s.Open(ctx, "nope")
			if err != nil {
				t.Fatal(err)
			}
			st.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadAll(st); wire.CodeOf(err) != wire.CodeNoSuchService {
				t.Fatalf("unknown service: %v, want NO_SUCH_SERVICE", err)
			}
			for _, tok := range []string{"", "wrong"} {
				if _, err := dialEdge(t, tt.url, tt.tc, wire.Config{Token: []byte(tok)}, nil); wire.CodeOf(err) != wire.CodeUnauthorized {
					t.Fatalf("token %q: %v, want UNAUTHORIZED", tok, err)
				}
			}
		})
	}
	// The TLS listener negotiates the spec's ALPN id (and the older one).
	for _, proto := range []string{wiretransport.ALPN, "switchboard-wire"} {
		tc := pki.client("")
		tc.NextProtos = []string{proto}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addrs["wire"], tc)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.ConnectionState().NegotiatedProtocol; got != proto {
			t.Errorf("ALPN %q: negotiated %q", proto, got)
		}
		c.Close()
	}
	// Any other path on the HTTP listener is not the tunnel.
	if code, _ := rawRequest(t, addrs["http"], "GET /other HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"); code == 101 {
		t.Fatal("an Upgrade on another path became a wire session")
	}
}

// TestWireWebSocketRefusedBeyondLoopback: the WebSocket entrance is not
// served on a plaintext HTTP listener beyond loopback without --insecure,
// and QUIC needs the service certificate.
func TestWireTransportFlagsRefused(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"ws on plaintext HTTP beyond loopback", []string{"--http-addr=0.0.0.0:0", "--wire-ws-path=/wire", "--wire-token=x"}, "beyond loopback without TLS"},
		{"ws path without a slash", []string{"--http-addr=127.0.0.1:0", "--wire-ws-path=wire"}, "starts with /"},
		{"ws beyond loopback without a token", []string{"--http-addr=0.0.0.0:0", "--insecure", "--wire-ws-path=/wire"}, "no way to authenticate"},
		{"quic without a certificate", []string{"--wire-quic-addr=127.0.0.1:0"}, "needs the service certificate"},
		{"unknown compression", []string{"--wire-compression=gzip"}, "none of zstd, s2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := startRefused(t, tt.args...); !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

// countingConn counts the bytes read from and written to a connection.
type countingConn struct {
	net.Conn
	in, out *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

// TestWireCompressionThroughEdge counts the bytes on the client's TCP
// connection (both ways) for a compressible payload through the edge
// with --wire-compression: zstd and S2 each move far fewer bytes than no
// compression, over plain TCP and over WebSocket.
func TestWireCompressionThroughEdge(t *testing.T) {
	addrs := transportEdge(t, "--wire-compression=zstd,s2", "--wire-ws-path=/wire")
	var line strings.Builder
	for i := range 20000 {
		fmt.Fprintf(&line, `{"seq":%d,"service":"billing","status":"ok"}`+"\n", i%100)
	}
	payload := line.String()
	for _, base := range []string{"tcp://" + addrs["wire"], "ws://" + addrs["http"] + "/wire"} {
		onWire := func(alg wire.Compression) int64 {
			t.Helper()
			var in, out atomic.Int64
			var offer []wire.Compression
			if alg != wire.CompressionNone {
				offer = []wire.Compression{alg}
			}
			s, err := dialEdge(t, base, nil, wire.Config{Compression: offer}, func(c net.Conn) net.Conn {
				return &countingConn{Conn: c, in: &in, out: &out}
			})
			if err != nil {
				t.Fatal(err)
			}
			if s.Compression() != alg {
				t.Fatalf("%s: offered %q, negotiated %q", base, alg, s.Compression())
			}
			if err := echoThrough(s, payload); err != nil {
				t.Fatal(err)
			}
			return in.Load() + out.Load()
		}
		plain := onWire(wire.CompressionNone)
		if plain < 2*int64(len(payload)) {
			t.Fatalf("%s: %d bytes on the wire without compression for %d each way", base, plain, len(payload))
		}
		for _, alg := range []wire.Compression{wire.CompressionZstd, wire.CompressionS2} {
			n := onWire(alg)
			t.Logf("%s %s: %d bytes on the wire, %d without compression (%.1f%%)", base, alg, n, plain, 100*float64(n)/float64(plain))
			if n*4 > plain {
				t.Errorf("%s %s: %d bytes on the wire, want under a quarter of %d", base, alg, n, plain)
			}
		}
	}
}

// TestWireCompressionOffByDefault: without --wire-compression the edge
// selects none, whatever the client offers.
func TestWireCompressionOffByDefault(t *testing.T) {
	addrs := transportEdge(t)
	s, err := dialEdge(t, "tcp://"+addrs["wire"], nil, wire.Config{Compression: []wire.Compression{wire.CompressionZstd, wire.CompressionS2}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Compression() != wire.CompressionNone {
		t.Fatalf("negotiated %q with compression off", s.Compression())
	}
	if err := echoThrough(s, "plain"); err != nil {
		t.Fatal(err)
	}
}

// TestWireDrainOverEachTransport: on shutdown the edge sends GOAWAY on
// every transport (no new streams) and lets a stream in flight finish —
// closing the QUIC listener must not cut its established connections.
func TestWireDrainOverEachTransport(t *testing.T) {
	pki := newPKI(t)
	for _, kind := range []string{"tcp", "ws", "quic"} {
		t.Run(kind, func(t *testing.T) {
			echo := tcpBackend(t, false)
			inst, sock := startEdge(t, fmt.Sprintf("services:\n  echo: [%q]\n", echo), append([]string{"--allow-loopback",
				"--wire-quic-addr=127.0.0.1:0", "--wire-ws-path=/wire"}, pki.serverFlags(true)...)...)
			url := map[string]string{"tcp": "tcp://" + inst.Addrs["wire"], "ws": "ws://" + inst.Addrs["http"] + "/wire",
				"quic": "quic://" + inst.Addrs["wire-quic"]}[kind]
			s, err := dialEdge(t, url, pki.client(""), wire.Config{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := s.Open(ctx, "echo")
			if err != nil {
				t.Fatal(err)
			}
			st.SetDeadline(time.Now().Add(15 * time.Second))
			io.WriteString(st, "in flight")
			eventually(t, 5*time.Second, "the tunnel", func() bool {
				for _, line := range strings.Split(runtimeCmd(t, sock, "show backends echo"), "\n") {
					if f := strings.Fields(line); len(f) > 6 && f[0] == "echo" {
						return f[6] == "1"
					}
				}
				return false
			})
			stopped := make(chan error, 1)
			go func() { stopped <- inst.Stop() }()
			eventually(t, 5*time.Second, "GOAWAY", func() bool {
				probe, err := s.Open(ctx, "echo")
				if err != nil {
					return true
				}
				probe.Close()
				return false
			})
			st.CloseWrite()
			b, err := io.ReadAll(st)
			if err != nil || string(b) != "IN FLIGHT|" {
				t.Fatalf("stream in flight: %q %v (session: %v)", b, err, s.Err())
			}
			st.Close()
			if err := <-stopped; err != nil {
				t.Fatalf("stop: %v", err)
			}
		})
	}
}
