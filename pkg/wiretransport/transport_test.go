package wiretransport

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/wire"
)

// testPKI is a self-signed certificate for 127.0.0.1 and a client config
// trusting it.
type testPKI struct {
	server *tls.Config
	client *tls.Config
}

func newPKI(t *testing.T) testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edge"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return testPKI{
		server: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{ALPN}},
		client: &tls.Config{RootCAs: pool},
	}
}

// echoServer serves sessions of every transport: a stream to "echo"
// echoes until the client half-closes; "hold" reads until reset and
// reports the error on held; anything else is refused NO_SUCH_SERVICE.
type echoServer struct {
	t       *testing.T
	token   string
	comp    []wire.Compression
	held    chan error
	counted atomic.Int64 // bytes read from TCP connections by the server
}

func (e *echoServer) cfg() wire.Config {
	return wire.Config{Compression: e.comp, Authenticate: func(tok []byte) error {
		if string(tok) != e.token {
			return errors.New("bad token")
		}
		return nil
	}}
}

func (e *echoServer) serve(s Session) {
	defer s.Close()
	for {
		st, err := s.Accept(context.Background())
		if err != nil {
			return
		}
		go func() {
			switch st.Service() {
			case "echo":
				defer st.Close()
				io.Copy(st, st)
				st.CloseWrite()
			case "hold":
				st.Write([]byte("!"))
				_, err := io.Copy(io.Discard, st)
				e.held <- err
			default:
				st.ResetWithReason(wire.CodeNoSuchService, "no such service: "+st.Service())
			}
		}()
	}
}

// start listens on every transport and returns the edge URL of each.
func (e *echoServer) start(pki testPKI) map[Kind]string {
	t := e.t
	urls := map[Kind]string{}
	for _, k := range []Kind{TCP, TLS} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		urls[k] = string(k) + "://" + ln.Addr().String()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c = &countConn{Conn: c, n: &e.counted}
				if k == TLS {
					c = tls.Server(c, pki.server)
				}
				go func() {
					s, err := wire.Server(c, e.cfg())
					if err == nil {
						e.serve(Wrap(s))
					}
				}()
			}
		}()
	}
	h := WebSocketHandler(func(c net.Conn, _ *http.Request) {
		s, err := wire.Server(c, e.cfg())
		if err == nil {
			e.serve(Wrap(s))
		}
	})
	mux := http.NewServeMux()
	mux.Handle("/tunnel", h)
	ws := httptest.NewServer(mux)
	t.Cleanup(ws.Close)
	urls[WebSocket] = "ws://" + ws.Listener.Addr().String() + "/tunnel"
	wss := httptest.NewUnstartedServer(mux)
	wss.TLS = pki.server.Clone()
	wss.TLS.NextProtos = nil
	wss.StartTLS()
	t.Cleanup(wss.Close)
	urls[SecureWS] = "wss://" + wss.Listener.Addr().String() + "/tunnel"

	ql, err := ListenQUIC("127.0.0.1:0", pki.server, wire.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ql.CloseAll() })
	urls[QUIC] = "quic://" + ql.Addr().String()
	go func() {
		for {
			c, err := ql.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				s, err := ServeQUIC(context.Background(), c, e.cfg())
				if err == nil {
					e.serve(s)
				}
			}()
		}
	}()
	return urls
}

type countConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func dial(t *testing.T, u string, pki testPKI, token string) (Session, error) {
	t.Helper()
	ep, err := ParseEndpoint(u, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return Dial(ctx, ep, DialOptions{TLS: pki.client, Timeout: 5 * time.Second, Wire: wire.Config{Token: []byte(token)}})
}

var allKinds = []Kind{TCP, TLS, WebSocket, SecureWS, QUIC}

// TestTransportsEcho runs one session over every transport: several
// concurrent streams echo a megabyte each and end with EOF, and an
// unknown service is refused with its code.
func TestTransportsEcho(t *testing.T) {
	pki := newPKI(t)
	srv := &echoServer{t: t, token: "s3cret", held: make(chan error, 1)}
	urls := srv.start(pki)
	for _, k := range allKinds {
		t.Run(string(k), func(t *testing.T) {
			s, err := dial(t, urls[k], pki, "s3cret")
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			payload := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- echoOnce(s, payload)
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := s.Open(ctx, "nothing")
			if err != nil {
				t.Fatal(err)
			}
			st.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = st.Read(make([]byte, 1))
			if wire.CodeOf(err) != wire.CodeNoSuchService {
				t.Fatalf("stream to an unknown service: %v, want NO_SUCH_SERVICE", err)
			}
		})
	}
}

func echoOnce(s Session, payload []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := s.Open(ctx, "echo")
	if err != nil {
		return err
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(20 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := st.Write(payload)
		if err == nil {
			err = st.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(st)
	if err != nil {
		return err
	}
	if err := <-werr; err != nil {
		return err
	}
	if !bytes.Equal(got, payload) {
		return errors.New("echo differs from what was sent")
	}
	return nil
}

// TestTransportsRefuseBadToken: every transport runs the same HELLO, and
// a wrong token ends the session with UNAUTHORIZED before any stream.
func TestTransportsRefuseBadToken(t *testing.T) {
	pki := newPKI(t)
	srv := &echoServer{t: t, token: "s3cret", held: make(chan error, 1)}
	urls := srv.start(pki)
	for _, k := range allKinds {
		t.Run(string(k), func(t *testing.T) {
			for _, tok := range []string{"", "wrong"} {
				s, err := dial(t, urls[k], pki, tok)
				if err == nil {
					s.Close()
					t.Fatalf("token %q: session started", tok)
				}
				if wire.CodeOf(err) != wire.CodeUnauthorized {
					t.Fatalf("token %q: %v, want UNAUTHORIZED", tok, err)
				}
			}
		})
	}
}

// TestTransportsResetPropagates: a RESET with an application code reaches
// the peer's reader with that code, on every transport.
func TestTransportsResetPropagates(t *testing.T) {
	pki := newPKI(t)
	srv := &echoServer{t: t, token: "s3cret", held: make(chan error, 1)}
	urls := srv.start(pki)
	for _, k := range allKinds {
		t.Run(string(k), func(t *testing.T) {
			s, err := dial(t, urls[k], pki, "s3cret")
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := s.Open(ctx, "hold")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write([]byte("some data")); err != nil {
				t.Fatal(err)
			}
			// Reset once the server has the stream: a QUIC stream reset
			// before its service name arrives never reaches the acceptor.
			st.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(st, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			const code = wire.ErrorCode(0x123)
			if err := st.Reset(code); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-srv.held:
				if wire.CodeOf(err) != code {
					t.Fatalf("server read %v, want a reset with code %#x", err, uint32(code))
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the reset did not reach the server")
			}
		})
	}
}

// TestQUICShutdownDrains: GOAWAY over QUIC stops new streams at once and
// lets the open one finish.
func TestQUICShutdownDrains(t *testing.T) {
	pki := newPKI(t)
	ql, err := ListenQUIC("127.0.0.1:0", pki.server, wire.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer ql.CloseAll()
	accepted := make(chan Stream, 1)
	shut := make(chan error, 1)
	var server *QUICSession
	ready := make(chan struct{})
	go func() {
		c, err := ql.Accept(context.Background())
		if err != nil {
			return
		}
		server, err = ServeQUIC(context.Background(), c, wire.Config{})
		close(ready)
		if err != nil {
			return
		}
		st, err := server.Accept(context.Background())
		if err != nil {
			return
		}
		accepted <- st
		for { // probes that beat the GOAWAY
			st, err := server.Accept(context.Background())
			if err != nil {
				return
			}
			st.Reset(wire.CodeRefused)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := DialQUIC(ctx, ql.Addr().String(), pki.client, wire.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	<-ready
	st, err := client.Open(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	sst := <-accepted
	go func() { shut <- server.Shutdown(ctx) }()
	// The client learns of the GOAWAY and opens nothing more.
	for {
		probe, err := client.Open(ctx, "echo")
		if errors.Is(err, wire.ErrGoAway) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		probe.Close()
		time.Sleep(10 * time.Millisecond)
	}
	// The open stream still works both ways.
	if _, err := st.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	st.CloseWrite()
	got, err := io.ReadAll(sst)
	if err != nil || string(got) != "last words" {
		t.Fatalf("server read %q, %v", got, err)
	}
	sst.Close()
	// Once the client's last stream is closed too, the client ends the
	// connection (the server is waiting for that), and Shutdown returns.
	st.Close()
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the last stream closed")
	}
	select {
	case <-client.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the client session did not end after the server's shutdown")
	}
}

// TestWebSocketThroughProxy: wss:// reaches the server through an HTTP
// CONNECT proxy, as it would through a corporate proxy.
func TestWebSocketThroughProxy(t *testing.T) {
	pki := newPKI(t)
	srv := &echoServer{t: t, token: "s3cret", held: make(chan error, 1)}
	urls := srv.start(pki)
	var tunnels atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		up, err := net.DialTimeout("tcp", r.Host, 5*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		tunnels.Add(1)
		w.WriteHeader(http.StatusOK)
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			up.Close()
			return
		}
		go func() { io.Copy(up, brw); up.Close() }()
		io.Copy(c, up)
		c.Close()
	}))
	defer proxy.Close()
	pu, _ := url.Parse(proxy.URL)
	ep, err := ParseEndpoint(urls[SecureWS], false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Dial(ctx, ep, DialOptions{TLS: pki.client, Proxy: http.ProxyURL(pu), Wire: wire.Config{Token: []byte("s3cret")}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := echoOnce(s, []byte(strings.Repeat("through the proxy ", 1000))); err != nil {
		t.Fatal(err)
	}
	if tunnels.Load() != 1 {
		t.Fatalf("proxy carried %d tunnels, want 1", tunnels.Load())
	}
}

// TestCompressionShrinksWire counts the bytes the server reads from TCP
// for a compressible payload: with zstd or S2 negotiated, far fewer than
// without.
func TestCompressionShrinksWire(t *testing.T) {
	pki := newPKI(t)
	payload := bytes.Repeat([]byte(`{"service":"billing","status":"ok","latency_ms":12}`+"\n"), 40_000) // ~2 MB of JSON lines
	measure := func(offer, accept []wire.Compression) (int64, wire.Compression) {
		srv := &echoServer{t: t, token: "", comp: accept, held: make(chan error, 1)}
		urls := srv.start(pki)
		ep, _ := ParseEndpoint(urls[TCP], false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := Dial(ctx, ep, DialOptions{Wire: wire.Config{Compression: offer}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := echoOnce(s, payload); err != nil {
			t.Fatal(err)
		}
		return srv.counted.Load(), s.Compression()
	}
	plain, c := measure(nil, []wire.Compression{wire.CompressionZstd, wire.CompressionS2})
	if c != wire.CompressionNone || plain < int64(len(payload)) {
		t.Fatalf("uncompressed: %d bytes on the wire for %d of payload (compression %q)", plain, len(payload), c)
	}
	for _, alg := range []wire.Compression{wire.CompressionZstd, wire.CompressionS2} {
		n, got := measure([]wire.Compression{alg}, []wire.Compression{wire.CompressionZstd, wire.CompressionS2})
		if got != alg {
			t.Fatalf("offered %s, negotiated %q", alg, got)
		}
		t.Logf("%s: %d bytes on the wire, uncompressed %d (%.1f%%)", alg, n, plain, 100*float64(n)/float64(plain))
		if n*4 > plain {
			t.Errorf("%s: %d bytes on the wire, want under a quarter of %d", alg, n, plain)
		}
	}
	// The server decides: offering zstd to a server that takes only s2 gets none.
	if _, got := measure([]wire.Compression{wire.CompressionZstd}, []wire.Compression{wire.CompressionS2}); got != wire.CompressionNone {
		t.Fatalf("no common algorithm, negotiated %q", got)
	}
}

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in         string
		defaultTLS bool
		want       Endpoint
		err        string
	}{
		{in: "edge:7900", want: Endpoint{Kind: TCP, Host: "edge:7900"}},
		{in: "edge:7900", defaultTLS: true, want: Endpoint{Kind: TLS, Host: "edge:7900"}},
		{in: "tcp://edge:7900", want: Endpoint{Kind: TCP, Host: "edge:7900"}},
		{in: "tls://edge:7900", want: Endpoint{Kind: TLS, Host: "edge:7900"}},
		{in: "quic://[::1]:7901", want: Endpoint{Kind: QUIC, Host: "[::1]:7901"}},
		{in: "wss://edge.example/tunnel", want: Endpoint{Kind: SecureWS, Host: "edge.example:443", URL: "wss://edge.example/tunnel"}},
		{in: "ws://edge:8080", want: Endpoint{Kind: WebSocket, Host: "edge:8080", URL: "ws://edge:8080/"}},
		{in: "WSS://edge:8443/t?x=1", want: Endpoint{Kind: SecureWS, Host: "edge:8443", URL: "wss://edge:8443/t?x=1"}},
		{in: "edge", err: "missing port"},
		{in: "quic://edge", err: "needs host:port"},
		{in: "tcp://edge:1/path", err: "no path"},
		{in: "http://edge:80", err: "scheme"},
		{in: "wss:///tunnel", err: "no host"},
	}
	for _, tt := range tests {
		got, err := ParseEndpoint(tt.in, tt.defaultTLS)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: %v, want an error mentioning %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"edge:7900", "wss://h/p", "quic://h:1", "tcp://h:1/x", "ws://[::1]:80/", "%zz://"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ep, err := ParseEndpoint(s, false)
		if err != nil {
			return
		}
		if _, _, err := net.SplitHostPort(ep.Host); err != nil {
			t.Fatalf("%q: accepted host %q: %v", s, ep.Host, err)
		}
		if (ep.Kind == WebSocket || ep.Kind == SecureWS) != (ep.URL != "") {
			t.Fatalf("%q: kind %s with URL %q", s, ep.Kind, ep.URL)
		}
	})
}
