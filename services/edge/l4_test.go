package edge_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/wire"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
)

// tcpBackend reads until EOF, then answers with what it read (upper-cased)
// and the PROXY v2 source it saw, if any: a half-close must pass through.
func tcpBackend(t *testing.T, proxyV2 bool) string {
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
				c.SetDeadline(time.Now().Add(10 * time.Second))
				src := ""
				if proxyV2 {
					hdr := make([]byte, 16)
					if _, err := io.ReadFull(c, hdr); err != nil {
						return
					}
					if !bytes.Equal(hdr[:12], []byte("\r\n\r\n\x00\r\nQUIT\n")) || hdr[12] != 0x21 || hdr[13] != 0x11 {
						io.WriteString(c, "bad proxy header")
						return
					}
					addrs := make([]byte, binary.BigEndian.Uint16(hdr[14:16]))
					io.ReadFull(c, addrs)
					src = fmt.Sprintf("%s:%d", net.IP(addrs[0:4]), binary.BigEndian.Uint16(addrs[8:10]))
				}
				b, _ := io.ReadAll(c)
				io.WriteString(c, strings.ToUpper(string(b))+"|"+src)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestTCPProxyHalfCloseAndProxyV2(t *testing.T) {
	plain, v2 := tcpBackend(t, false), tcpBackend(t, true)
	conf := fmt.Sprintf(`
tcp:
  - {listen: "127.0.0.1:0", addresses: [%q], socket_buffer: 262144}
  - {listen: "127.0.0.1:0", addresses: [%q], proxy_protocol: true}
`, plain, v2)
	inst, _ := startEdge(t, conf)
	for i, name := range []string{"tcp0", "tcp1"} {
		c, err := net.Dial("tcp", inst.Addrs[name])
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "ping")
		c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		got := string(b)
		if !strings.HasPrefix(got, "PING|") {
			t.Fatalf("%s: %q", name, got)
		}
		if i == 1 && got != "PING|"+c.LocalAddr().String() {
			t.Fatalf("PROXY v2 source %q, want %q", got, c.LocalAddr())
		}
		// The backend's byte counts: "ping" (and the 28-byte PROXY v2
		// header) sent, its answer received, once the connection is over.
		sent, recv := 4, len(got)
		if i == 1 {
			sent += 28
		}
		backend := []string{plain, v2}[i]
		lbl := func(dir string) string {
			return fmt.Sprintf(`switchboard_edge_backend_bytes_total{backend=%q,direction=%q,service="static:%s"}`, backend, dir, name)
		}
		eventually(t, 5*time.Second, name+"'s byte counts", func() bool {
			m := metricsText(t, inst)
			s, _ := sample(m, lbl("sent"))
			r, _ := sample(m, lbl("received"))
			return s == float64(sent) && r == float64(recv)
		})
	}
}

func TestUDPProxyFlows(t *testing.T) {
	up, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, addr, err := up.ReadFrom(buf)
			if err != nil {
				return
			}
			up.WriteTo([]byte(strings.ToUpper(string(buf[:n]))), addr)
		}
	}()
	inst, _ := startEdge(t, fmt.Sprintf("udp:\n  - {listen: \"127.0.0.1:0\", addresses: [%q], max_flows: 2, idle_timeout: 500ms}\n", up.LocalAddr()))
	dst, _ := net.ResolveUDPAddr("udp", inst.Addrs["udp0"])
	// Three clients, each must get its own replies back.
	for i := 0; i < 3; i++ {
		c, err := net.DialUDP("udp", nil, dst)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := fmt.Sprintf("client%d", i)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		got := ""
		for attempt := 0; attempt < 20 && got == ""; attempt++ {
			c.Write([]byte(msg))
			buf := make([]byte, 64)
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if n, err := c.Read(buf); err == nil {
				got = string(buf[:n])
			}
		}
		if got != strings.ToUpper(msg) {
			t.Fatalf("client %d got %q", i, got)
		}
	}
	// Every client's datagram reached the backend and its reply came back
	// (a datagram lost and sent again counts twice).
	lbl := func(dir string) string {
		return fmt.Sprintf(`switchboard_edge_backend_bytes_total{backend=%q,direction=%q,service="static:udp0"}`, up.LocalAddr().String(), dir)
	}
	eventually(t, 5*time.Second, "the backend's byte counts", func() bool {
		m := metricsText(t, inst)
		s, _ := sample(m, lbl("sent"))
		r, _ := sample(m, lbl("received"))
		return s >= 3*7 && r >= 3*7
	})
}

func TestWireTunnel(t *testing.T) {
	bal := startBalancer(t)
	echo := tcpBackend(t, false)
	bal.push(&balancerv1.WatchEndpointsResponse{Service: "echo", Endpoints: []*balancerv1.Endpoint{endpoint("echo-1", echo)}})
	inst, sock := startEdge(t, "", "--balancer-addr="+bal.addr, "--allow-loopback")
	eventually(t, 5*time.Second, "the echo service", func() bool {
		return strings.Contains(runtimeCmd(t, sock, "show backends"), "echo-1")
	})
	c, err := net.Dial("tcp", inst.Addrs["wire"])
	if err != nil {
		t.Fatal(err)
	}
	s, err := wire.Client(c, wire.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		st, err := s.Open(ctx, "echo")
		if err != nil {
			t.Fatal(err)
		}
		st.SetDeadline(time.Now().Add(5 * time.Second))
		payload := strings.Repeat(fmt.Sprintf("stream%d ", i), 10000)
		go func() { io.WriteString(st, payload); st.CloseWrite() }()
		b, err := io.ReadAll(st)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != strings.ToUpper(payload)+"|" {
			t.Fatalf("stream %d: %d bytes back, want %d", i, len(b), len(payload)+1)
		}
		st.Close()
	}
	// An unknown service is refused with NO_SUCH_SERVICE.
	st, err := s.Open(ctx, "nope")
	if err != nil {
		t.Fatal(err)
	}
	st.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(st)
	if wire.CodeOf(err) != wire.CodeNoSuchService {
		t.Fatalf("unknown service: %v", err)
	}
}

func TestTLSWithSNIAndHTTP2(t *testing.T) {
	dir := t.TempDir()
	certA, keyA := writeCert(t, dir, "a.example")
	certB, keyB := writeCert(t, dir, "b.example")
	a := backend(t, "a")
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - addresses: [%q]\n", strings.TrimPrefix(a.URL, "http://")),
		"--https-addr=127.0.0.1:0", "--https-cert="+certA, "--https-key="+keyA, "--https-cert="+certB, "--https-key="+keyB)
	for _, name := range []string{"a.example", "b.example"} {
		for _, h2 := range []bool{false, true} {
			tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: name, InsecureSkipVerify: true}, ForceAttemptHTTP2: h2}
			if !h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			resp, err := c.Get("https://" + inst.Addrs["https"] + "/tls")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("X-Got-X-Forwarded-Proto") != "https" {
				t.Fatalf("%s h2=%v: %d proto %q", name, h2, resp.StatusCode, resp.Header.Get("X-Got-X-Forwarded-Proto"))
			}
			if got := resp.TLS.PeerCertificates[0].Subject.CommonName; got != name {
				t.Fatalf("SNI %s got certificate for %s", name, got)
			}
			if (resp.ProtoMajor == 2) != h2 {
				t.Fatalf("h2=%v but spoke %s", h2, resp.Proto)
			}
		}
	}
}

// TestWireDrainOnShutdown checks that shutdown sends GOAWAY (no new
// streams) and lets a stream in flight finish.
func TestWireDrainOnShutdown(t *testing.T) {
	echo := tcpBackend(t, false)
	inst, sock := startEdge(t, fmt.Sprintf("services:\n  echo: [%q]\n", echo), "--allow-loopback")
	c, err := net.Dial("tcp", inst.Addrs["wire"])
	if err != nil {
		t.Fatal(err)
	}
	s, err := wire.Client(c, wire.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.Open(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	st.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(st, "in flight")
	// Wait until the stream is tunnelled (one active connection).
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
		t.Fatalf("stream in flight: %q %v", b, err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("stop: %v", err)
	}
}
