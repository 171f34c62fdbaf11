package resolver

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestUDPServerFamilies answers over the UDP fast path and the slow path
// on IPv4 and IPv6 sockets, several queries per batch.
func TestUDPServerFamilies(t *testing.T) {
	z, err := loadZoneFile(zoneSource{path: "testdata/example.zone"})
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(z)
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				t.Skipf("no socket on %s: %v", addr, err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- newUDPServer(s, pc.(*net.UDPConn)).serve(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
				_ = pc.Close()
			}()
			c, err := net.Dial("udp", pc.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			queries := []struct {
				name  string
				rcode int
			}{
				{"web.service.switchboard.", dns.RcodeSuccess}, // fast path
				{"nope.service.switchboard.", dns.RcodeNameError},
				{"WWW.example.test.", dns.RcodeSuccess},
				{"api.service.switchboard.", dns.RcodeSuccess},
			}
			for i, q := range queries {
				m := new(dns.Msg)
				m.SetQuestion(q.name, dns.TypeA)
				m.Id = uint16(i + 1)
				b, err := m.Pack()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.Write(b); err != nil {
					t.Fatal(err)
				}
			}
			got := map[uint16]int{}
			buf := make([]byte, 4096)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			for range queries {
				n, err := c.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				r := new(dns.Msg)
				if err := r.Unpack(buf[:n]); err != nil {
					t.Fatal(err)
				}
				got[r.Id] = r.Rcode
			}
			for i, q := range queries {
				if rc, ok := got[uint16(i+1)]; !ok || rc != q.rcode {
					t.Errorf("%s: rcode %d (answered %v), want %d", q.name, rc, ok, q.rcode)
				}
			}
		})
	}
}
