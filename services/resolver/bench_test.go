package resolver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// benchServer is a server with 3 services of 4 instances, the example
// zone and the Knot comparison zone (wildcards, a delegation, CNAME
// chains), no registry and no network.
func benchServer(b *testing.B) *server {
	b.Helper()
	var zs []*staticZone
	for _, path := range []string{"testdata/example.zone", "testdata/knot/example.zone"} {
		z, err := loadZoneFile(zoneSource{path: path})
		if err != nil {
			b.Fatal(err)
		}
		zs = append(zs, z)
	}
	return newTestServer(zs...)
}

// newTestServer is a server with 3 services of 4 weighted instances and zs,
// no registry, no network, a forwarder that is never reached, and the
// default response rate limiting (loopback clients exempt).
func newTestServer(zs ...*staticZone) *server {
	cfg := &Config{Zone: "switchboard.", CacheSize: 1000, ServiceTTL: 5 * time.Second, UpstreamTimeout: time.Second, UDPSockets: 1,
		Upstreams: listFlag{"127.0.0.1:1"}, RRLRate: defaultRRLRate, RRLExemptLoopback: true}
	allow, _ := cfg.validate()
	s := newServer(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), cfg, zs, allow, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	var ins []*registryv1.Instance
	for _, svc := range []string{"web", "api", "db"} {
		for i := range 4 {
			ins = append(ins, &registryv1.Instance{Service: svc, Id: fmt.Sprintf("%s-%d", svc, i),
				Address: fmt.Sprintf("10.0.%d.%d", len(svc), i+1), Port: 8080, Weight: uint32(i + 1),
				Health: registryv1.HealthStatus_HEALTH_STATUS_PASSING})
		}
	}
	s.setInstances(1, ins)
	return s
}

// fakeWriter is a dns.ResponseWriter that keeps nothing.
type fakeWriter struct{ n int }

var (
	benchLocal  = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
	benchRemote = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
)

func (w *fakeWriter) LocalAddr() net.Addr  { return benchLocal }
func (w *fakeWriter) RemoteAddr() net.Addr { return benchRemote }
func (w *fakeWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	w.n += len(b)
	return err
}
func (w *fakeWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }
func (w *fakeWriter) Close() error                { return nil }
func (w *fakeWriter) TsigStatus() error           { return nil }
func (w *fakeWriter) TsigTimersOnly(bool)         {}
func (w *fakeWriter) Hijack()                     {}

func benchServe(b *testing.B, s *server, name string, qtype uint16, edns bool) {
	r := new(dns.Msg)
	r.SetQuestion(name, qtype)
	if edns {
		r.SetEdns0(1232, false)
	}
	w := &fakeWriter{}
	s.ServeDNS(w, r)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		s.ServeDNS(w, r)
	}
}

// BenchmarkServeServiceA is the handler's path for a service A query
// (rotation, weights), after miekg/dns has parsed the query.
func BenchmarkServeServiceA(b *testing.B) {
	benchServe(b, benchServer(b), "web.service.switchboard.", dns.TypeA, false)
}

// BenchmarkServeServiceSRVEDNS adds the additional section and OPT.
func BenchmarkServeServiceSRVEDNS(b *testing.B) {
	benchServe(b, benchServer(b), "_web._tcp.service.switchboard.", dns.TypeSRV, true)
}

// BenchmarkServeStaticNXDOMAIN is the slow path (built per query).
func BenchmarkServeStaticNXDOMAIN(b *testing.B) {
	benchServe(b, benchServer(b), "nope.example.test.", dns.TypeA, false)
}

// BenchmarkServeReferral is a name below a zone cut: a precomputed
// referral with glue.
func BenchmarkServeReferral(b *testing.B) {
	benchServe(b, benchServer(b), "ns.sub.example.", dns.TypeA, true)
}

// BenchmarkServeCNAMEChain is a CNAME chain to an address, precomputed.
func BenchmarkServeCNAMEChain(b *testing.B) {
	benchServe(b, benchServer(b), "alias.example.", dns.TypeA, false)
}

// BenchmarkServeWildcard is an answer synthesized from a wildcard: the
// slow path (lookup, packed per query).
func BenchmarkServeWildcard(b *testing.B) {
	benchServe(b, benchServer(b), "host3.example.", dns.TypeMX, false)
}

// BenchmarkServeCacheHit is a forwarded name answered from the cache.
func BenchmarkServeCacheHit(b *testing.B) {
	s := benchServer(b)
	m := new(dns.Msg)
	m.SetQuestion("cached.example.net.", dns.TypeA)
	m.Response, m.RecursionAvailable = true, true
	m.Answer = []dns.RR{mustRR("cached.example.net. 300 IN A 198.51.100.7"), mustRR("cached.example.net. 300 IN A 198.51.100.8")}
	p, err := prepare(m, false)
	if err != nil {
		b.Fatal(err)
	}
	s.cache.put("cached.example.net.", dns.TypeA, p, 300, false, time.Now())
	benchServe(b, s, "cached.example.net.", dns.TypeA, false)
}

// BenchmarkRespondServiceA is respond alone, without the writer.
func BenchmarkRespondServiceA(b *testing.B) {
	s := benchServer(b)
	r := new(dns.Msg)
	r.SetQuestion("web.service.switchboard.", dns.TypeA)
	client := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		out, _, err := s.respond(buf, r, client, true, false)
		if err != nil || len(out) == 0 {
			b.Fatal(err)
		}
	}
}

func benchFast(b *testing.B, s *server, name string, qtype uint16) {
	r := new(dns.Msg)
	r.SetQuestion(name, qtype)
	pkt, err := r.Pack()
	if err != nil {
		b.Fatal(err)
	}
	client := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	out := make([]byte, 0, 4096)
	nameBuf := make([]byte, 0, 256)
	if _, ok := s.fast(out, pkt, client, nameBuf, s.met.shared()); !ok {
		b.Fatal("not answered on the fast path")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		out, _ = s.fast(out[:0], pkt, client, nameBuf, s.met.shared())
	}
}

// BenchmarkFastUDPServiceA is the UDP fast path from the raw packet.
func BenchmarkFastUDPServiceA(b *testing.B) {
	benchFast(b, benchServer(b), "Web.Service.Switchboard.", dns.TypeA)
}

// BenchmarkFastUDPCacheHit is a forwarding-cache hit from the raw packet.
func BenchmarkFastUDPCacheHit(b *testing.B) {
	s := benchServer(b)
	m := new(dns.Msg)
	m.SetQuestion("cached.example.net.", dns.TypeA)
	m.Answer = []dns.RR{mustRR("cached.example.net. 300 IN A 198.51.100.7")}
	p, err := prepare(m, false)
	if err != nil {
		b.Fatal(err)
	}
	s.cache.put("cached.example.net.", dns.TypeA, p, 300, false, time.Now())
	benchFast(b, s, "cached.example.net.", dns.TypeA)
}

// BenchmarkFastUDPReferral is a precomputed referral from the raw packet.
func BenchmarkFastUDPReferral(b *testing.B) {
	benchFast(b, benchServer(b), "Ns.Sub.Example.", dns.TypeA)
}

// BenchmarkFastUDPWildcard is an answer a wildcard synthesizes, from the
// raw packet: built by lookup once, then kept for the snapshot.
func BenchmarkFastUDPWildcard(b *testing.B) {
	benchFast(b, benchServer(b), "Host3.Example.", dns.TypeMX)
}

// BenchmarkFastUDPNXDOMAIN is a missing name asked again: kept.
func BenchmarkFastUDPNXDOMAIN(b *testing.B) {
	benchFast(b, benchServer(b), "nope.example.test.", dns.TypeA)
}

// BenchmarkFastUDPNXDOMAINDistinct is a flood of distinct missing names
// (a random-subdomain attack): each one built by lookup and kept, the
// store full and replacing.
func BenchmarkFastUDPNXDOMAINDistinct(b *testing.B) {
	s := benchServer(b)
	r := new(dns.Msg)
	r.SetQuestion("r00000000.example.test.", dns.TypeA)
	pkt, err := r.Pack()
	if err != nil {
		b.Fatal(err)
	}
	client := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	out := make([]byte, 0, 4096)
	nameBuf := make([]byte, 0, 256)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		// The label's eight digits (after its length byte and "r").
		for j, v := 0, i; j < 8; j, v = j+1, v/10 {
			pkt[hdrLen+9-j] = byte('0' + v%10)
		}
		var ok bool
		if out, ok = s.fast(out[:0], pkt, client, nameBuf, s.met.shared()); !ok {
			b.Fatal("not answered on the fast path")
		}
	}
}

// BenchmarkCountQuery is what counting adds to each answered query.
func BenchmarkCountQuery(b *testing.B) {
	qc := newMetrics().shared()
	b.ReportAllocs()
	for i := range b.N {
		qc.count(protoUDP, dns.TypeA+uint16(i&1)*(dns.TypeSRV-dns.TypeA), i&3)
	}
}

// BenchmarkObserveBatch is what the latency histogram adds to each UDP
// batch (one clock reading and one observation for the whole batch).
func BenchmarkObserveBatch(b *testing.B) {
	m := newMetrics()
	start := time.Now()
	b.ReportAllocs()
	for range b.N {
		m.latency[protoUDP].observe(time.Since(start)&0xFFFFF, 32)
	}
}
