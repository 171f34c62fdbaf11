package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/switchboard-net/switchboard/pkg/netx"
	"github.com/switchboard-net/switchboard/pkg/wire"
	"github.com/switchboard-net/switchboard/pkg/wiretransport"
)

// connectConfig is the connect command's flags.
type connectConfig struct {
	service     string
	edge        string
	endpoint    wiretransport.Endpoint
	compress    string
	listen      string
	token       string
	useTLS      bool
	caFile      string
	serverName  string
	dialTimeout time.Duration
	idle        time.Duration
}

// forwarder carries local connections as streams over one wire session to
// an edge, re-dialling the edge when the session ends.
type forwarder struct {
	cfg  connectConfig
	dial wiretransport.DialOptions
	log  io.Writer

	mu   sync.Mutex
	sess wiretransport.Session
}

// connectReady, when set (by tests), gets the bound listen address.
var connectReady func(addr string)

func runConnect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c connectConfig
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: switchboard connect SERVICE --edge HOST:PORT|tcp://|tls://|wss://HOST/PATH|quic://HOST:PORT [--listen ADDR] [flags]")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.edge, "edge", "", "the edge's wire address (required): host:port (TCP, or TLS with --tls), tcp://host:port, tls://host:port, ws://host/path or wss://host/path (WebSocket on the edge's HTTP(S) listener at --wire-ws-path, through $HTTPS_PROXY if set), quic://host:port (--wire-quic-addr)")
	fs.StringVar(&c.compress, "compress", "", "ask the edge to compress DATA: zstd or s2 (the edge must allow it with --wire-compression; not over quic)")
	fs.StringVar(&c.listen, "listen", "127.0.0.1:0", "local address to accept connections on (\":PORT\" listens on every interface)")
	fs.StringVar(&c.token, "token", os.Getenv("SWITCHBOARD_WIRE_TOKEN"), "auth token sent in HELLO (default $SWITCHBOARD_WIRE_TOKEN)")
	fs.BoolVar(&c.useTLS, "tls", false, "speak TLS to the edge (with --edge host:port; tls://, wss:// and quic:// always do)")
	fs.StringVar(&c.caFile, "tls-ca", "", "PEM file of CAs that sign the edge's certificate (default: the system's)")
	fs.StringVar(&c.serverName, "tls-server-name", "", "name to verify in the edge's certificate (default: the edge's host)")
	fs.DurationVar(&c.dialTimeout, "dial-timeout", 5*time.Second, "bound on connecting to the edge")
	fs.DurationVar(&c.idle, "idle-timeout", 0, "close a forwarded connection idle this long (0: never)")
	// Accept the service name before or after the flags.
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		c.service, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if c.service == "" && fs.NArg() > 0 {
		c.service = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	switch {
	case c.service == "":
		return usageError{errors.New("a SERVICE to connect to is required")}
	case c.edge == "":
		return usageError{errors.New("--edge HOST:PORT is required")}
	}
	ep, err := wiretransport.ParseEndpoint(c.edge, c.useTLS)
	if err != nil {
		return usageError{fmt.Errorf("--edge: %w", err)}
	}
	c.endpoint = ep
	f := &forwarder{cfg: c, log: stderr, dial: wiretransport.DialOptions{
		Timeout: c.dialTimeout,
		Dial:    (&netx.Dialer{Timeout: c.dialTimeout}).DialContext,
		Wire:    wire.Config{Token: []byte(c.token), HandshakeTimeout: c.dialTimeout},
	}}
	switch wire.Compression(c.compress) {
	case wire.CompressionNone:
	case wire.CompressionZstd, wire.CompressionS2:
		if ep.Kind == wiretransport.QUIC {
			return usageError{errors.New("--compress: not available over quic (QUIC streams carry no DATA frames to compress)")}
		}
		f.dial.Wire.Compression = []wire.Compression{wire.Compression(c.compress)}
	default:
		return usageError{fmt.Errorf("--compress %q: want zstd or s2", c.compress)}
	}
	if ep.Secure() {
		tc, err := clientTLS(c)
		if err != nil {
			return err
		}
		f.dial.TLS = tc
	} else if c.caFile != "" || c.serverName != "" {
		return usageError{fmt.Errorf("--tls-ca and --tls-server-name need a TLS transport: --tls, or --edge tls://, wss:// or quic://")}
	}
	// Connect once up front so a wrong address or token fails at once.
	if _, err := f.session(ctx); err != nil {
		return err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", c.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", c.listen, err)
	}
	defer ln.Close()
	fmt.Fprintf(stdout, "forwarding %s -> service %q via edge %s (%s)\n", ln.Addr(), c.service, c.edge, c.endpoint.Kind)
	if connectReady != nil {
		connectReady(ln.Addr().String())
	}
	return f.serve(ctx, ln)
}

func clientTLS(c connectConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.serverName}
	if tc.ServerName == "" {
		tc.ServerName, _, _ = net.SplitHostPort(c.endpoint.Host)
	}
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificates", c.caFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// serve accepts local connections until ctx ends, then waits for the
// forwarded ones to finish.
func (f *forwarder) serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer f.closeSession()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.forward(ctx, conn)
		}()
	}
}

// forward carries one local connection as one stream.
func (f *forwarder) forward(ctx context.Context, conn net.Conn) {
	st, err := f.open(ctx)
	if err != nil {
		fmt.Fprintf(f.log, "connect: %s: %v\n", conn.RemoteAddr(), err)
		conn.Close()
		return
	}
	_, _, err = netx.Join(ctx, conn, st, netx.JoinOptions{IdleTimeout: f.cfg.idle})
	if err != nil && ctx.Err() == nil && !errors.Is(err, io.EOF) {
		fmt.Fprintf(f.log, "connect: %s: %v\n", conn.RemoteAddr(), err)
	}
}

// open opens a stream, re-dialling the edge once if the session has ended
// (for example after the edge restarted) or is going away (the edge is
// draining: its streams finish on the old session, new ones go to a new
// one).
func (f *forwarder) open(ctx context.Context) (wiretransport.Stream, error) {
	for attempt := 0; ; attempt++ {
		s, err := f.session(ctx)
		if err != nil {
			return nil, err
		}
		octx, cancel := context.WithTimeout(ctx, f.cfg.dialTimeout)
		st, err := s.Open(octx, f.cfg.service)
		cancel()
		switch {
		case err == nil || attempt > 0:
			return st, err
		case errors.Is(err, wire.ErrGoAway):
			f.detach(s)
		case sessionGone(s):
			f.dropSession(s)
		default:
			return nil, err
		}
	}
}

func sessionGone(s wiretransport.Session) bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}

// session returns the live session, dialling the edge when there is none.
func (f *forwarder) session(ctx context.Context) (wiretransport.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sess != nil && !sessionGone(f.sess) {
		return f.sess, nil
	}
	s, err := wiretransport.Dial(ctx, f.cfg.endpoint, f.dial)
	if err != nil {
		return nil, err
	}
	f.sess = s
	return s, nil
}

// detach stops handing out s without closing it, so its streams finish.
func (f *forwarder) detach(s wiretransport.Session) {
	f.mu.Lock()
	if f.sess == s {
		f.sess = nil
	}
	f.mu.Unlock()
}

func (f *forwarder) dropSession(s wiretransport.Session) {
	f.mu.Lock()
	if f.sess == s {
		f.sess = nil
	}
	f.mu.Unlock()
	s.Close()
}

func (f *forwarder) closeSession() {
	f.mu.Lock()
	s := f.sess
	f.sess = nil
	f.mu.Unlock()
	if s != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		s.Close()
	}
}
