// Package wiretransport carries Switchboard wire sessions over the
// transports a tunnel meets in the field, behind one Session interface:
//
//   - tcp and tls: the wire protocol on a TCP connection, optionally in TLS
//     (pkg/wire as is);
//   - ws and wss: the same byte stream inside a WebSocket (RFC 6455, binary
//     messages), so it passes HTTP proxies and load balancers that only
//     speak HTTP;
//   - quic: a mapping onto QUIC (RFC 9000) in which every wire stream is a
//     QUIC stream, so a lost packet stalls only the stream it belonged to.
//
// docs/wire.md, section 17 ("Transports"), is the specification; Dial picks
// the transport from an edge URL (tcp://, tls://, ws://, wss://, quic://).
package wiretransport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/switchboard-net/switchboard/pkg/wire"
)

// ALPN is the TLS application protocol id of the wire protocol. QUIC
// requires it; over TLS and WebSocket it is the subprotocol name.
const ALPN = "switchboard-wire/1"

// Session is one wire session, whatever carries it. *wire.Session (through
// Wrap) and *QUICSession implement it.
type Session interface {
	// Open opens a stream to the named service (see wire.Session.Open).
	Open(ctx context.Context, service string) (Stream, error)
	// Accept waits for a stream the peer opened.
	Accept(ctx context.Context) (Stream, error)
	// GoAway tells the peer to open no more streams; a code other than
	// wire.CodeNoError also ends the session.
	GoAway(code wire.ErrorCode, reason string) error
	// Shutdown sends GOAWAY, waits for the open streams to finish or ctx
	// to end, then closes the session.
	Shutdown(ctx context.Context) error
	// Close ends the session at once without blocking on the network.
	Close() error
	// Done is closed when the session has ended; Err then says why.
	Done() <-chan struct{}
	Err() error
	// RemoteAddr is the peer's address.
	RemoteAddr() net.Addr
	// Compression is the negotiated DATA compression (none over QUIC).
	Compression() wire.Compression
}

// Stream is one tunnelled bidirectional byte stream.
type Stream interface {
	net.Conn
	// CloseWrite half-closes the stream (CLOSE, or a QUIC FIN).
	CloseWrite() error
	// Service is the name the opener asked for.
	Service() string
	// Reset aborts both directions with code.
	Reset(code wire.ErrorCode) error
	// ResetWithReason is Reset with a reason for humans (dropped by QUIC,
	// whose stream resets carry only the code).
	ResetWithReason(code wire.ErrorCode, reason string) error
}

// Wrap presents a *wire.Session as a Session.
func Wrap(s *wire.Session) Session { return wireSession{s} }

type wireSession struct{ *wire.Session }

func (w wireSession) Open(ctx context.Context, service string) (Stream, error) {
	st, err := w.Session.Open(ctx, service)
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (w wireSession) Accept(ctx context.Context) (Stream, error) {
	st, err := w.Session.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return st, nil
}

var (
	_ Session = wireSession{}
	_ Session = (*QUICSession)(nil)
	_ Stream  = (*wire.Stream)(nil)
	_ Stream  = (*quicStream)(nil)
)

// Kind names a transport.
type Kind string

// The transports.
const (
	TCP       Kind = "tcp"
	TLS       Kind = "tls"
	WebSocket Kind = "ws"
	SecureWS  Kind = "wss"
	QUIC      Kind = "quic"
)

// Endpoint is a parsed edge address.
type Endpoint struct {
	Kind Kind
	// Host is host:port (the default port of the scheme filled in).
	Host string
	// URL is the WebSocket URL (ws and wss only).
	URL string
}

// ParseEndpoint reads an edge address: host:port (TCP, or TLS when
// defaultTLS), or a URL tcp://host:port, tls://host:port,
// ws://host[:port]/path, wss://host[:port]/path or quic://host:port.
func ParseEndpoint(s string, defaultTLS bool) (Endpoint, error) {
	if !strings.Contains(s, "://") {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return Endpoint{}, fmt.Errorf("edge address %q: %w", s, err)
		}
		if defaultTLS {
			return Endpoint{Kind: TLS, Host: s}, nil
		}
		return Endpoint{Kind: TCP, Host: s}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return Endpoint{}, fmt.Errorf("edge address: %w", err)
	}
	ep := Endpoint{Kind: Kind(strings.ToLower(u.Scheme)), Host: u.Host}
	switch ep.Kind {
	case TCP, TLS, QUIC:
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
			return Endpoint{}, fmt.Errorf("edge address %q: a %s address has no path", s, ep.Kind)
		}
		if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
			return Endpoint{}, fmt.Errorf("edge address %q: %s needs host:port", s, ep.Kind)
		}
	case WebSocket, SecureWS:
		if u.Port() == "" {
			port := "80"
			if ep.Kind == SecureWS {
				port = "443"
			}
			ep.Host = net.JoinHostPort(u.Hostname(), port)
		}
		if u.Path == "" {
			u.Path = "/"
		}
		ep.URL = u.String()
	default:
		return Endpoint{}, fmt.Errorf("edge address %q: scheme %q is none of tcp, tls, ws, wss, quic", s, u.Scheme)
	}
	if u.Hostname() == "" {
		return Endpoint{}, fmt.Errorf("edge address %q: no host", s)
	}
	if host, _, err := net.SplitHostPort(ep.Host); err != nil || host == "" {
		return Endpoint{}, fmt.Errorf("edge address %q: bad host %q", s, u.Host)
	}
	return ep, nil
}

// Secure reports whether the transport runs TLS (tls, wss and quic).
func (e Endpoint) Secure() bool { return e.Kind == TLS || e.Kind == SecureWS || e.Kind == QUIC }

// DialOptions are what Dial needs beyond the endpoint.
type DialOptions struct {
	// TLS configures tls, wss and quic; nil uses the system roots and the
	// endpoint's host name. Dial sets the ALPN protocols itself.
	TLS *tls.Config
	// Timeout bounds connecting, the TLS/QUIC and WebSocket handshakes and
	// the wire HELLO exchange. Default 10s.
	Timeout time.Duration
	// Wire configures the session (token, compression, limits).
	Wire wire.Config
	// Proxy picks the HTTP proxy for ws and wss; nil means
	// http.ProxyFromEnvironment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY).
	Proxy func(*http.Request) (*url.URL, error)
	// Dial opens TCP connections (tcp, tls, ws, wss); nil uses net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// CountConn, when set, wraps each raw TCP connection (tests count the
	// bytes on the wire with it).
	CountConn func(net.Conn) net.Conn
}

// ErrNoCompressionOverQUIC refuses compression on a QUIC session: QUIC
// streams carry bytes without wire DATA frames, so there is nothing to
// mark COMPRESSED.
var ErrNoCompressionOverQUIC = errors.New("wiretransport: compression is not available over QUIC")

// Dial connects to an edge at ep and runs the wire handshake.
func Dial(ctx context.Context, ep Endpoint, o DialOptions) (Session, error) {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Wire.HandshakeTimeout == 0 {
		o.Wire.HandshakeTimeout = o.Timeout
	}
	tc := o.TLS
	if tc == nil {
		tc = &tls.Config{}
	} else {
		tc = tc.Clone()
	}
	if tc.ServerName == "" {
		tc.ServerName, _, _ = net.SplitHostPort(ep.Host)
	}
	if ep.Kind == QUIC {
		if len(o.Wire.Compression) > 0 {
			return nil, ErrNoCompressionOverQUIC
		}
		return DialQUIC(ctx, ep.Host, tc, o.Wire)
	}
	dctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	dial := o.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	if o.CountConn != nil {
		inner := dial
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := inner(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return o.CountConn(c), nil
		}
	}
	var conn net.Conn
	switch ep.Kind {
	case TCP, TLS:
		c, err := dial(dctx, "tcp", ep.Host)
		if err != nil {
			return nil, fmt.Errorf("edge %s: %w", ep.Host, err)
		}
		conn = c
		if ep.Kind == TLS {
			tc.NextProtos = []string{ALPN}
			t := tls.Client(c, tc)
			if err := t.HandshakeContext(dctx); err != nil {
				c.Close()
				return nil, fmt.Errorf("edge %s: tls: %w", ep.Host, err)
			}
			conn = t
		}
	case WebSocket, SecureWS:
		c, err := dialWebSocket(dctx, ep.URL, tc, o.Proxy, dial)
		if err != nil {
			return nil, fmt.Errorf("edge %s: %w", ep.URL, err)
		}
		conn = c
	default:
		return nil, fmt.Errorf("edge: unknown transport %q", ep.Kind)
	}
	s, err := wire.Client(conn, o.Wire)
	if err != nil {
		return nil, fmt.Errorf("edge %s: %w", ep.Host, err)
	}
	return Wrap(s), nil
}
