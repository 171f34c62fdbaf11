package wire

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// transport makes a connected pair of net.Conns.
type transport struct {
	name string
	pair func(t testing.TB) (client, server net.Conn)
}

func transports() []transport {
	return []transport{
		{"pipe", func(testing.TB) (net.Conn, net.Conn) { return net.Pipe() }},
		{"tcp", tcpPair},
		{"tls", tlsPair},
	}
}

func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return c, r.c
}

var (
	certOnce sync.Once
	testCert tls.Certificate
	certPool *x509.CertPool
)

func testTLSConfigs(t testing.TB) (client, server *tls.Config) {
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "wire-test"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
			DNSNames:     []string{"wire-test"},
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			panic(err)
		}
		testCert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
		certPool = x509.NewCertPool()
		certPool.AddCert(leaf)
	})
	return &tls.Config{RootCAs: certPool, ServerName: "wire-test", MinVersion: tls.VersionTLS13},
		&tls.Config{Certificates: []tls.Certificate{testCert}, MinVersion: tls.VersionTLS13}
}

func tlsPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	c, s := tcpPair(t)
	cc, sc := testTLSConfigs(t)
	return tls.Client(c, cc), tls.Server(s, sc)
}

// sessionPair runs both handshakes concurrently over a fresh connection
// pair and closes both sessions when the test ends.
func sessionPair(t testing.TB, tr transport, ccfg, scfg Config) (client, server *Session) {
	t.Helper()
	cc, sc := tr.pair(t)
	type res struct {
		s   *Session
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := Server(sc, scfg)
		ch <- res{s, err}
	}()
	client, err := Client(cc, ccfg)
	r := <-ch
	if err != nil {
		t.Fatalf("Client: %v", err)
	}
	if r.err != nil {
		t.Fatalf("Server: %v", r.err)
	}
	t.Cleanup(func() {
		client.Close()
		r.s.Close()
	})
	return client, r.s
}

// rawPeer is a hand-driven protocol peer for feeding a session bad input.
type rawPeer struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
}

func newRawPeer(t testing.TB, c net.Conn) *rawPeer {
	t.Cleanup(func() { c.Close() })
	return &rawPeer{t: t, conn: c, br: bufio.NewReader(c), bw: bufio.NewWriter(c)}
}

func (p *rawPeer) send(t FrameType, f Flags, id uint32, payload []byte) {
	p.t.Helper()
	p.sendRaw(AppendFrame(nil, t, f, id, payload))
}

func (p *rawPeer) sendRaw(b []byte) {
	p.t.Helper()
	p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.conn.Write(b); err != nil {
		p.t.Fatalf("raw write: %v", err)
	}
}

func (p *rawPeer) read() (Frame, error) {
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	return ReadFrame(p.br, MaxMaxFrameSize, nil)
}

// expect reads frames until one of type want arrives, skipping PINGs and
// WINDOW_UPDATEs.
func (p *rawPeer) expect(want FrameType) Frame {
	p.t.Helper()
	for {
		f, err := p.read()
		if err != nil {
			p.t.Fatalf("waiting for %v: %v", want, err)
		}
		if f.Header.Type() == want {
			return f
		}
		if f.Header.Type() != FramePing && f.Header.Type() != FrameWindowUpdate {
			p.t.Fatalf("got %v, want %v", f.Header.Type(), want)
		}
	}
}

// handshakeAsClient sends a HELLO (window bytes of credit) and reads the ACK.
func (p *rawPeer) handshakeAsClient(window uint32) HelloAck {
	p.t.Helper()
	p.send(FrameHello, 0, 0, AppendHello(nil, &Hello{MinVersion: 1, MaxVersion: 1, MaxFrameSize: 64 << 10, InitialWindow: window}))
	f := p.expect(FrameHelloAck)
	ack, err := ParseHelloAck(f.Payload)
	if err != nil {
		p.t.Fatal(err)
	}
	return ack
}

// rawServerSession starts a Server session on one end of a pipe and
// returns a raw peer on the other that has completed the handshake.
func rawServerSession(t testing.TB, cfg Config) (*Session, *rawPeer) {
	t.Helper()
	c, s := tcpPair(t)
	p := newRawPeer(t, c)
	ch := make(chan *Session, 1)
	go func() {
		sess, err := Server(s, cfg)
		if err != nil {
			t.Errorf("Server: %v", err)
		}
		ch <- sess
	}()
	p.handshakeAsClient(1 << 20)
	sess := <-ch
	if sess == nil {
		t.FailNow()
	}
	t.Cleanup(func() { sess.Close() })
	return sess, p
}

// within polls cond until it holds or the bound passes.
func within(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
