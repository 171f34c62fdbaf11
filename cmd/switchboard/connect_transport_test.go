package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/certs"
	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	"github.com/switchboard-net/switchboard/pkg/wire"
	"github.com/switchboard-net/switchboard/services/edge"
)

// echoBackend echoes every connection until the client half-closes.
func echoBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// realEdge runs an edge whose wire listeners (TCP or TLS on --wire-addr,
// WebSocket at /wire on the HTTP(S) listener, QUIC when TLS is on) need
// the token s3cret and tunnel to the service "echo". With TLS it returns
// the CA file that signs the edge's certificates.
func realEdge(t *testing.T, withTLS bool) (addrs map[string]string, caFile string) {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("services:\n  echo: [%q]\n", echoBackend(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--config=" + conf, "--allow-loopback", "--balancer-addr=", "--registry-addr=", "--prober-addr=",
		"--runtime-socket=", "--http-addr=127.0.0.1:0", "--wire-addr=127.0.0.1:0", "--wire-token=s3cret",
		"--wire-ws-path=/wire", "--wire-compression=zstd,s2"}
	if withTLS {
		ca, err := certs.NewCA(certs.CAOptions{})
		if err != nil {
			t.Fatal(err)
		}
		caFile = filepath.Join(dir, "ca.pem")
		if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		c, k, err := ca.Issue(certs.CertOptions{Name: "edge", DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
		if err != nil {
			t.Fatal(err)
		}
		cf, kf := filepath.Join(dir, "edge.crt"), filepath.Join(dir, "edge.key")
		if err := certs.WritePair(cf, kf, c, k, true); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--tls-cert="+cf, "--tls-key="+kf, "--wire-tls", "--wire-quic-addr=127.0.0.1:0",
			"--https-addr=127.0.0.1:0", "--https-cert="+cf, "--https-key="+kf)
	}
	inst := servicetest.Start(t, edge.Spec(), args...)
	return inst.Addrs, caFile
}

// startConnect starts `switchboard connect` with args and returns its local
// address; it stops at the end of the test.
func startConnect(t *testing.T, args ...string) string {
	t.Helper()
	ready := make(chan string, 1)
	connectReady = func(a string) { ready <- a }
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	var out, errOut bytes.Buffer
	go func() { code <- run(ctx, append([]string{"connect"}, args...), &out, &errOut) }()
	t.Cleanup(func() {
		cancel()
		select {
		case c := <-code:
			if c != 0 {
				t.Errorf("connect exited %d: %s", c, errOut.String())
			}
		case <-time.After(10 * time.Second):
			t.Error("connect did not stop")
		}
		connectReady = nil
	})
	select {
	case a := <-ready:
		return a
	case c := <-code:
		t.Fatalf("connect exited %d: %s", c, errOut.String())
	case <-time.After(15 * time.Second):
		t.Fatal("connect did not start")
	}
	return ""
}

// TestConnectTransports runs `switchboard connect` against a real edge
// over every transport, with and without compression: a local
// connection's bytes come back through the edge's echo service.
func TestConnectTransports(t *testing.T) {
	plain, _ := realEdge(t, false)
	secure, ca := realEdge(t, true)
	tests := []struct {
		name string
		args []string
	}{
		{"tcp", []string{"--edge", plain["wire"]}},
		{"tcp, zstd", []string{"--edge", "tcp://" + plain["wire"], "--compress", "zstd"}},
		{"ws", []string{"--edge", "ws://" + plain["http"] + "/wire"}},
		{"tls", []string{"--edge", secure["wire"], "--tls", "--tls-ca", ca}},
		{"tls url, s2", []string{"--edge", "tls://" + secure["wire"], "--tls-ca", ca, "--compress", "s2"}},
		{"wss", []string{"--edge", "wss://" + secure["https"] + "/wire", "--tls-ca", ca}},
		{"quic", []string{"--edge", "quic://" + secure["wire-quic"], "--tls-ca", ca}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local := startConnect(t, append([]string{"echo", "--token", "s3cret"}, tt.args...)...)
			for i := range 2 {
				c, err := net.DialTimeout("tcp", local, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(15 * time.Second))
				msg := strings.Repeat(fmt.Sprintf("connection %d over %s ", i, tt.name), 20000)
				go func() {
					io.WriteString(c, msg)
					c.(*net.TCPConn).CloseWrite()
				}()
				got, err := io.ReadAll(c)
				c.Close()
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != msg {
					t.Fatalf("connection %d: %d bytes back, want %d", i, len(got), len(msg))
				}
			}
		})
	}
}

// TestConnectTransportErrors: a wrong token is refused on every
// transport, and impossible flag combinations are usage errors.
func TestConnectTransportErrors(t *testing.T) {
	secure, ca := realEdge(t, true)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"quic, wrong token", []string{"--edge", "quic://" + secure["wire-quic"], "--tls-ca", ca, "--token", "wrong"}, 1, "UNAUTHORIZED"},
		{"wss, wrong token", []string{"--edge", "wss://" + secure["https"] + "/wire", "--tls-ca", ca, "--token", "wrong"}, 1, "UNAUTHORIZED"},
		{"wss, wrong path", []string{"--edge", "wss://" + secure["https"] + "/nope", "--tls-ca", ca, "--token", "s3cret"}, 1, "websocket"},
		{"quic, untrusted certificate", []string{"--edge", "quic://" + secure["wire-quic"], "--token", "s3cret"}, 1, "certificate"},
		{"compression over quic", []string{"--edge", "quic://" + secure["wire-quic"], "--compress", "zstd"}, 2, "not available over quic"},
		{"unknown compression", []string{"--edge", secure["wire"], "--compress", "gzip"}, 2, "zstd or s2"},
		{"unknown scheme", []string{"--edge", "http://" + secure["http"]}, 2, "scheme"},
		{"--tls-ca without TLS", []string{"--edge", "tcp://" + secure["wire"], "--tls-ca", ca}, 2, "need a TLS transport"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if c := run(ctx, append([]string{"connect", "echo", "--dial-timeout=5s"}, tt.args...), &out, &errOut); c != tt.code || !strings.Contains(errOut.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want %d mentioning %q", c, errOut.String(), tt.code, tt.want)
			}
		})
	}
}

// TestConnectFollowsGoAway: when the edge drains a session (GOAWAY), the
// connection in flight finishes on it and the next local connection goes
// over a new session instead of failing.
func TestConnectFollowsGoAway(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var sessions atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := sessions.Add(1)
			go func() {
				s, err := wire.Server(c, wire.Config{})
				if err != nil {
					return
				}
				defer s.Close()
				for {
					st, err := s.Accept(context.Background())
					if err != nil {
						return
					}
					if n == 1 {
						// Drain: announced before the first stream's answer.
						s.GoAway(wire.CodeNoError, "draining")
					}
					go func() {
						defer st.Close()
						fmt.Fprintf(st, "session %d:", n)
						io.Copy(st, st)
						st.CloseWrite()
					}()
				}
			}()
		}
	}()
	local := startConnect(t, "echo", "--edge", ln.Addr().String())
	for i, want := range []string{"session 1:hello", "session 2:hello"} {
		c, err := net.DialTimeout("tcp", local, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "hello")
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != want {
			t.Fatalf("connection %d: %q, %v; want %q", i, got, err, want)
		}
	}
}

// TestConnectThroughHAProxy: a load balancer that speaks only HTTP (HAProxy
// in mode http, terminating TLS) sits in front of the edge's HTTP
// listener; `switchboard connect --edge wss://...` tunnels through it.
func TestConnectThroughHAProxy(t *testing.T) {
	haproxy := servicetest.Tool(t, "haproxy")
	edgeAddrs, _ := realEdge(t, false)
	dir := t.TempDir()
	ca, err := certs.NewCA(certs.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	c, k, err := ca.Issue(certs.CertOptions{Name: "lb", DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	pem := filepath.Join(dir, "lb.pem") // HAProxy wants certificate and key in one file
	if err := os.WriteFile(pem, append(c, k...), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lbAddr := ln.Addr().String()
	ln.Close()
	cfg := filepath.Join(dir, "haproxy.cfg")
	conf := fmt.Sprintf(`global
  maxconn 100
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout tunnel 1h
frontend fe
  bind %s ssl crt %s
  default_backend be
backend be
  server edge %s
`, lbAddr, pem, edgeAddrs["http"])
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, haproxy, "-db", "-f", cfg)
	var lbLog bytes.Buffer
	cmd.Stdout, cmd.Stderr = &lbLog, &lbLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", lbAddr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy did not listen on %s: %s", lbAddr, lbLog.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	local := startConnect(t, "echo", "--edge", "wss://"+lbAddr+"/wire", "--tls-ca", caFile, "--token", "s3cret", "--compress", "s2")
	conn, err := net.DialTimeout("tcp", local, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	msg := strings.Repeat("through the load balancer ", 40000)
	go func() {
		io.WriteString(conn, msg)
		conn.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != msg {
		t.Fatalf("%d bytes back (%v), want %d; haproxy: %s", len(got), err, len(msg), lbLog.String())
	}
}
