package resolver

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchboard-net/switchboard/pkg/config"
	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	resolverv1 "github.com/switchboard-net/switchboard/proto/switchboard/resolver/v1"
)

type testEnv struct {
	reg  *fakeRegistry
	up   *fakeUpstream
	inst *servicetest.Instance
	dns  string // host:port, UDP and TCP
	host string
	port string
	api  resolverv1.ResolverClient
}

// startEnv runs the resolver against a fake registry and a fake upstream,
// with the example zone file.
func startEnv(t *testing.T, args ...string) *testEnv {
	t.Helper()
	reg, regAddr := startFakeRegistry(t)
	up := startFakeUpstream(t)
	all := append([]string{"--dns-addr=127.0.0.1:0", "--registry-addr=" + regAddr,
		"--zone-file=testdata/example.zone", "--upstream=" + up.addr}, args...)
	inst := servicetest.Start(t, Spec(), all...)
	e := &testEnv{reg: reg, up: up, inst: inst, dns: inst.Addrs["dns"]}
	e.host, e.port, _ = net.SplitHostPort(e.dns)
	if inst.Addrs["dns-tcp"] != e.dns {
		t.Fatalf("UDP %s and TCP %s differ", e.dns, inst.Addrs["dns-tcp"])
	}
	e.api = resolverv1.NewResolverClient(inst.Conn(t))
	return e
}

// dig runs dig against the resolver and returns its output.
func (e *testEnv) dig(t *testing.T, args ...string) string {
	t.Helper()
	dig := servicetest.Tool(t, "dig")
	all := append([]string{"-p", e.port, "@" + e.host, "+time=2", "+tries=1"}, args...)
	out, err := exec.Command(dig, all...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// kdig runs kdig against the resolver.
func (e *testEnv) kdig(t *testing.T, args ...string) string {
	t.Helper()
	kdig := servicetest.Tool(t, "kdig")
	all := append([]string{"-p", e.port, "@" + e.host, "+time=2", "+retry=0"}, args...)
	out, err := exec.Command(kdig, all...).CombinedOutput()
	if err != nil {
		t.Fatalf("kdig %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// query sends m with miekg/dns over network ("udp" or "tcp").
func (e *testEnv) query(t *testing.T, network string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, e.dns)
	if err != nil {
		t.Fatalf("%s query %v: %v", network, m.Question, err)
	}
	return r
}

func q(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

var flagsRe = regexp.MustCompile(`flags: ([a-z ]+);`)

// flags returns dig's header flags ("qr aa rd").
func flags(out string) string {
	m := flagsRe.FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return m[1]
}

func hasFlag(out, f string) bool {
	for _, x := range strings.Fields(flags(out)) {
		if x == f {
			return true
		}
	}
	return false
}

func rcodeOf(out string) string {
	i := strings.Index(out, "status: ")
	if i < 0 {
		return ""
	}
	rest := out[i+8:]
	return rest[:strings.IndexAny(rest, ",\n")]
}

// section returns the record lines dig printed under the named section.
func section(out, name string) []string {
	var lines []string
	in := false
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, ";; "+name+" SECTION:") {
			in = true
			continue
		}
		if in {
			if strings.TrimSpace(l) == "" || strings.HasPrefix(l, ";;") {
				break
			}
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
	}
	return lines
}

func register(e *testEnv, svc, id, addr string, port uint32, tags ...string) {
	e.reg.put(&registryv1.Instance{Service: svc, Id: id, Address: addr, Port: port, Tags: tags,
		Health: registryv1.HealthStatus_HEALTH_STATUS_PASSING})
}

// waitAnswers polls until name/type has n answers.
func (e *testEnv) waitAnswers(t *testing.T, name string, qtype uint16, n int) *dns.Msg {
	t.Helper()
	var got *dns.Msg
	eventually(t, fmt.Sprintf("%s %s has %d answers", name, dns.TypeToString[qtype], n), func() (bool, string) {
		got = e.query(t, "tcp", q(name, qtype))
		return len(got.Answer) == n, got.String()
	})
	return got
}

func TestServiceZoneFromRegistry(t *testing.T) {
	e := startEnv(t)
	register(e, "web", "web-1", "10.0.0.1", 8080, "primary")
	register(e, "web", "web-2", "10.0.0.2", 8081)
	register(e, "web", "web-3", "2001:db8::3", 8082)
	e.reg.put(&registryv1.Instance{Service: "web", Id: "web-4", Address: "10.0.0.4", Port: 8083,
		Health: registryv1.HealthStatus_HEALTH_STATUS_CRITICAL})
	e.waitAnswers(t, "web.service.switchboard.", dns.TypeA, 2)

	t.Run("A with dig: AA, TTL, healthy only, query case kept", func(t *testing.T) {
		out := e.dig(t, "WEB.Service.switchboard.", "A", "+norec")
		if rcodeOf(out) != "NOERROR" || !hasFlag(out, "aa") || hasFlag(out, "tc") {
			t.Fatalf("status %q flags %q, want NOERROR with aa:\n%s", rcodeOf(out), flags(out), out)
		}
		ans := section(out, "ANSWER")
		if len(ans) != 2 {
			t.Fatalf("answer %q, want 2 records (the critical instance left out)", ans)
		}
		for _, l := range ans {
			if !strings.HasPrefix(l, "WEB.Service.switchboard. 5 IN A 10.0.0.") {
				t.Errorf("answer line %q: want the query's case and TTL 5", l)
			}
		}
		if q := section(out, "QUESTION"); len(q) != 1 || !strings.HasPrefix(q[0], ";WEB.Service.switchboard.") {
			t.Errorf("question %q, want the query's case", q)
		}
	})
	t.Run("A order rotates", func(t *testing.T) {
		firsts := map[string]bool{}
		for range 6 {
			r := e.query(t, "udp", q("web.service.switchboard.", dns.TypeA))
			firsts[r.Answer[0].(*dns.A).A.String()] = true
		}
		if len(firsts) != 2 {
			t.Fatalf("first answers over 6 queries: %v, want both addresses to lead", firsts)
		}
	})
	t.Run("AAAA with kdig", func(t *testing.T) {
		out := e.kdig(t, "web.service.switchboard.", "AAAA")
		if !strings.Contains(out, "NOERROR") || !strings.Contains(out, "2001:db8::3") || !strings.Contains(out, " aa") {
			t.Fatalf("kdig AAAA:\n%s", out)
		}
	})
	t.Run("tag", func(t *testing.T) {
		r := e.query(t, "udp", q("primary.web.service.switchboard.", dns.TypeA))
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.0.0.1" {
			t.Fatalf("tagged answer %v, want only 10.0.0.1", r.Answer)
		}
	})
	t.Run("SRV with additional addresses", func(t *testing.T) {
		out := e.dig(t, "_web._tcp.service.switchboard.", "SRV")
		ans := section(out, "ANSWER")
		if len(ans) != 3 || !hasFlag(out, "aa") {
			t.Fatalf("SRV answer %q flags %q, want 3 records and aa", ans, flags(out))
		}
		want := "_web._tcp.service.switchboard. 5 IN SRV 1 1 8080 web-1.web.instance.switchboard."
		if !contains(ans, want) {
			t.Errorf("SRV answer %q lacks %q", ans, want)
		}
		add := section(out, "ADDITIONAL")
		for _, w := range []string{"web-1.web.instance.switchboard. 5 IN A 10.0.0.1", "web-3.web.instance.switchboard. 5 IN AAAA 2001:db8::3"} {
			if !contains(add, w) {
				t.Errorf("additional %q lacks %q", add, w)
			}
		}
	})
	t.Run("NODATA and NXDOMAIN in the service zone", func(t *testing.T) {
		r := e.query(t, "udp", q("web.service.switchboard.", dns.TypeMX))
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 || !r.Authoritative {
			t.Fatalf("MX of a service: %v, want NODATA with the SOA", r)
		}
		r = e.query(t, "udp", q("nope.service.switchboard.", dns.TypeA))
		if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 || r.Ns[0].Header().Ttl != 5 {
			t.Fatalf("unknown service: %v, want NXDOMAIN with the SOA at the negative TTL 5", r)
		}
	})
	t.Run("deregistration removes the answer", func(t *testing.T) {
		e.reg.remove("web", "web-1")
		e.waitAnswers(t, "web.service.switchboard.", dns.TypeA, 1)
		e.reg.remove("web", "web-2")
		eventually(t, "NODATA for A once only IPv6 is left", func() (bool, string) {
			r := e.query(t, "udp", q("web.service.switchboard.", dns.TypeA))
			return r.Rcode == dns.RcodeSuccess && len(r.Answer) == 0, r.String()
		})
	})
}

func contains(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

func TestStaticZone(t *testing.T) {
	e := startEnv(t)
	tests := []struct {
		name, qtype string
		status      string
		answer      []string
		authority   []string
		additional  []string
	}{
		{"www.example.test.", "A", "NOERROR", []string{"www.example.test. 300 IN A 192.0.2.10"}, nil, nil},
		{"www.example.test.", "AAAA", "NOERROR", []string{"www.example.test. 300 IN AAAA 2001:db8::10"}, nil, nil},
		{"alias.example.test.", "A", "NOERROR", []string{"alias.example.test. 300 IN CNAME www.example.test.", "www.example.test. 300 IN A 192.0.2.10"}, nil, nil},
		{"alias.example.test.", "CNAME", "NOERROR", []string{"alias.example.test. 300 IN CNAME www.example.test."}, nil, nil},
		{"ext.example.test.", "A", "NOERROR", []string{"ext.example.test. 300 IN CNAME www.example.org."}, nil, nil},
		{"example.test.", "TXT", "NOERROR", []string{`example.test. 300 IN TXT "v=spf1 -all"`}, nil, nil},
		{"example.test.", "MX", "NOERROR", []string{"example.test. 300 IN MX 10 mail.example.test."}, nil, []string{"mail.example.test. 300 IN A 192.0.2.25"}},
		{"example.test.", "NS", "NOERROR", []string{"example.test. 300 IN NS ns1.example.test."}, nil, []string{"ns1.example.test. 300 IN A 192.0.2.53"}},
		{"example.test.", "SOA", "NOERROR", []string{"example.test. 300 IN SOA ns1.example.test. hostmaster.example.test. 2026112501 3600 600 86400 60"}, nil, nil},
		{"_http._tcp.example.test.", "SRV", "NOERROR", []string{"_http._tcp.example.test. 300 IN SRV 10 5 80 www.example.test."}, nil, []string{"www.example.test. 300 IN A 192.0.2.10", "www.example.test. 300 IN AAAA 2001:db8::10"}},
		{"ptr.example.test.", "PTR", "NOERROR", []string{"ptr.example.test. 300 IN PTR www.example.test."}, nil, nil},
		// NODATA: the name exists, the type does not; the SOA at the negative TTL.
		{"www.example.test.", "MX", "NOERROR", nil, []string{"example.test. 60 IN SOA ns1.example.test. hostmaster.example.test. 2026112501 3600 600 86400 60"}, nil},
		// An empty non-terminal exists too.
		{"_tcp.example.test.", "A", "NOERROR", nil, []string{"example.test. 60 IN SOA ns1.example.test. hostmaster.example.test. 2026112501 3600 600 86400 60"}, nil},
		{"nope.example.test.", "A", "NXDOMAIN", nil, []string{"example.test. 60 IN SOA ns1.example.test. hostmaster.example.test. 2026112501 3600 600 86400 60"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+tt.qtype, func(t *testing.T) {
			out := e.dig(t, tt.name, tt.qtype, "+norec")
			if got := rcodeOf(out); got != tt.status {
				t.Fatalf("status %q, want %q:\n%s", got, tt.status, out)
			}
			if !hasFlag(out, "aa") {
				t.Errorf("flags %q lack aa", flags(out))
			}
			check := func(sec string, want []string) {
				got := section(out, sec)
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("%s section:\n%s\nwant:\n%s", sec, strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
			}
			check("ANSWER", tt.answer)
			check("AUTHORITY", tt.authority)
			check("ADDITIONAL", tt.additional)
		})
	}
}

func TestProtocol(t *testing.T) {
	e := startEnv(t)
	for i := range 60 {
		register(e, "big", fmt.Sprintf("big-%02d", i), fmt.Sprintf("10.1.0.%d", i+1), 80)
	}
	e.waitAnswers(t, "big.service.switchboard.", dns.TypeA, 60)

	t.Run("EDNS: OPT in the reply with our buffer size", func(t *testing.T) {
		out := e.dig(t, "www.example.test.", "A")
		if !strings.Contains(out, "EDNS: version: 0, flags:; udp: 1232") {
			t.Fatalf("no OPT with udp 1232:\n%s", out)
		}
		out = e.dig(t, "www.example.test.", "A", "+noedns")
		if strings.Contains(out, "OPT PSEUDOSECTION") {
			t.Fatalf("OPT in a reply to a query without EDNS:\n%s", out)
		}
	})
	t.Run("BADVERS for EDNS version 1", func(t *testing.T) {
		out := e.dig(t, "www.example.test.", "A", "+edns=1", "+noednsnegotiation")
		if rcodeOf(out) != "BADVERS" {
			t.Fatalf("status %q, want BADVERS:\n%s", rcodeOf(out), out)
		}
	})
	t.Run("truncation over UDP without EDNS", func(t *testing.T) {
		out := e.dig(t, "big.service.switchboard.", "A", "+noedns", "+ignore")
		if !hasFlag(out, "tc") || len(section(out, "ANSWER")) != 0 {
			t.Fatalf("60 A records (976 bytes) to a 512-byte client: flags %q, want tc and no answers:\n%s", flags(out), out)
		}
		// dig falls back to TCP by itself and gets every record.
		out = e.dig(t, "big.service.switchboard.", "A", "+noedns")
		if !strings.Contains(out, "Truncated, retrying in TCP mode") || len(section(out, "ANSWER")) != 60 || hasFlag(out, "tc") {
			t.Fatalf("TCP fallback: flags %q, %d answers:\n%s", flags(out), len(section(out, "ANSWER")), out)
		}
	})
	t.Run("EDNS buffer lets a bigger answer through UDP", func(t *testing.T) {
		r := e.query(t, "udp", q("big.service.switchboard.", dns.TypeA).SetEdns0(1232, false))
		if r.Truncated || len(r.Answer) != 60 || r.IsEdns0() == nil {
			t.Fatalf("EDNS 1232: tc=%v answers=%d opt=%v", r.Truncated, len(r.Answer), r.IsEdns0())
		}
	})
	t.Run("kdig over TCP", func(t *testing.T) {
		out := e.kdig(t, "+tcp", "big.service.switchboard.", "A")
		if !strings.Contains(out, "TCP") || strings.Count(out, "IN\tA\t10.1.0.") != 60 {
			t.Fatalf("kdig +tcp:\n%s", out)
		}
	})
	t.Run("ANY is minimal (RFC 8482)", func(t *testing.T) {
		r := e.query(t, "udp", q("example.test.", dns.TypeANY))
		types := map[uint16]bool{}
		for _, rr := range r.Answer {
			types[rr.Header().Rrtype] = true
		}
		if r.Rcode != dns.RcodeSuccess || len(types) != 1 {
			t.Fatalf("ANY answered %d types (%v), want one RRset", len(types), r.Answer)
		}
	})
	t.Run("QCLASS ANY: answered from IN data, the question echoed exactly", func(t *testing.T) {
		for _, name := range []string{"WWW.example.test.", "nope.Example.test.", "Web.Service.Switchboard."} {
			m := q(name, dns.TypeA)
			m.Question[0].Qclass = dns.ClassANY
			for _, network := range []string{"udp", "tcp"} {
				r := e.query(t, network, m)
				if len(r.Question) != 1 || r.Question[0] != m.Question[0] || !r.Authoritative {
					t.Errorf("%s over %s: question %v aa=%v, want %v echoed", name, network, r.Question, r.Authoritative, m.Question[0])
				}
			}
		}
		m := q("www.example.test.", dns.TypeA)
		m.Question[0].Qclass = dns.ClassCHAOS
		if r := e.query(t, "udp", m); r.Rcode != dns.RcodeRefused || r.Question[0] != m.Question[0] {
			t.Errorf("class CH: %v, want REFUSED with the question", r)
		}
	})
	t.Run("FORMERR for two questions", func(t *testing.T) {
		m := q("www.example.test.", dns.TypeA)
		m.Question = append(m.Question, m.Question[0])
		r := e.query(t, "udp", m)
		if r.Rcode != dns.RcodeFormatError {
			t.Fatalf("rcode %s, want FORMERR", dns.RcodeToString[r.Rcode])
		}
	})
	t.Run("FORMERR for a malformed query", func(t *testing.T) {
		m := q("www.example.test.", dns.TypeA)
		wire, _ := m.Pack()
		wire = wire[:len(wire)-3] // cut into the question
		r := rawUDP(t, e.dns, wire)
		if r == nil || r.Rcode != dns.RcodeFormatError {
			t.Fatalf("reply %v, want FORMERR", r)
		}
	})
	t.Run("NOTIMP for other opcodes", func(t *testing.T) {
		out := e.dig(t, "+opcode=status", "www.example.test.")
		if rcodeOf(out) != "NOTIMP" {
			t.Fatalf("status %q, want NOTIMP:\n%s", rcodeOf(out), out)
		}
		m := q("example.test.", dns.TypeSOA)
		m.Opcode = dns.OpcodeUpdate
		if r := e.query(t, "udp", m); r.Rcode != dns.RcodeNotImplemented {
			t.Fatalf("UPDATE: rcode %s, want NOTIMP", dns.RcodeToString[r.Rcode])
		}
	})
	t.Run("AXFR is refused", func(t *testing.T) {
		m := q("example.test.", dns.TypeAXFR)
		if r := e.query(t, "tcp", m); r.Rcode != dns.RcodeRefused {
			t.Fatalf("AXFR: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
		}
	})
}

// rawUDP sends wire bytes and returns the parsed reply, or nil.
func rawUDP(t *testing.T, addr string, wire []byte) *dns.Msg {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(wire); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil {
		t.Fatalf("unpack reply: %v", err)
	}
	return m
}

func TestForwardingAndCache(t *testing.T) {
	e := startEnv(t)
	e.up.set("cached.example.net.", "A", "cached.example.net. 100 IN A 198.51.100.7")

	out := e.dig(t, "cached.example.net.", "A")
	if rcodeOf(out) != "NOERROR" || hasFlag(out, "aa") || !hasFlag(out, "ra") || !hasFlag(out, "rd") {
		t.Fatalf("forwarded answer: status %q flags %q, want NOERROR, rd ra and no aa:\n%s", rcodeOf(out), flags(out), out)
	}
	if n := e.up.queries.Load(); n != 1 {
		t.Fatalf("upstream saw %d queries, want 1", n)
	}
	// Served from the cache, TTL counting down.
	eventually(t, "cached TTL counts down", func() (bool, string) {
		out := e.dig(t, "CACHED.example.net.", "A")
		m := regexp.MustCompile(`(?m)^CACHED\.example\.net\.\s+(\d+)\s+IN\s+A\s+198\.51\.100\.7`).FindStringSubmatch(out)
		if m == nil {
			return false, out
		}
		ttl, _ := strconv.Atoi(m[1])
		return ttl < 100 && ttl >= 90, out
	})
	if n := e.up.queries.Load(); n != 1 {
		t.Fatalf("upstream saw %d queries, want 1 (the rest from the cache)", n)
	}

	// Negative caching (RFC 2308): NXDOMAIN kept for min(SOA TTL, MINIMUM) = 30s.
	for range 3 {
		r := e.query(t, "udp", q("missing.example.net.", dns.TypeA))
		if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 || r.Ns[0].Header().Ttl > 30 {
			t.Fatalf("NXDOMAIN from upstream: %v", r)
		}
	}
	if n := e.up.queries.Load(); n != 2 {
		t.Fatalf("upstream saw %d queries, want 2 (NXDOMAIN cached)", n)
	}
	ctx := context.Background()
	st, err := e.api.CacheStats(ctx, &resolverv1.CacheStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != 2 || st.NegativeEntries != 1 || st.Hits < 3 || st.Capacity < 10000 {
		t.Fatalf("cache stats %v, want 2 entries (1 negative), >=3 hits", st)
	}
	fl, err := e.api.FlushCache(ctx, &resolverv1.FlushCacheRequest{Name: "cached.example.net"})
	if err != nil || fl.Removed != 1 {
		t.Fatalf("FlushCache(name) = %v, %v; want 1 removed", fl, err)
	}
	e.query(t, "udp", q("cached.example.net.", dns.TypeA))
	if n := e.up.queries.Load(); n != 3 {
		t.Fatalf("upstream saw %d queries after a flush, want 3", n)
	}
	lk, err := e.api.Lookup(ctx, &resolverv1.LookupRequest{Name: "cached.example.net"})
	if err != nil || !lk.Cached || lk.Rcode != "NOERROR" || len(lk.Answer) != 1 || lk.Answer[0].Data != "198.51.100.7" {
		t.Fatalf("Lookup = %v, %v; want a cached answer", lk, err)
	}
}

func TestUpstreamFailover(t *testing.T) {
	reg, regAddr := startFakeRegistry(t)
	_ = reg
	up := startFakeUpstream(t)
	up.set("fo.example.net.", "A", "fo.example.net. 60 IN A 198.51.100.9")
	dead := deadUpstream(t)
	inst := servicetest.Start(t, Spec(), "--dns-addr=127.0.0.1:0", "--registry-addr="+regAddr,
		"--upstream="+dead, "--upstream="+up.addr, "--upstream-timeout=300ms")
	c := &dns.Client{Timeout: 5 * time.Second}
	r, _, err := c.Exchange(q("fo.example.net.", dns.TypeA), inst.Addrs["dns"])
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("with the first upstream dead: %v, %v; want the second's answer", r, err)
	}
	// The live upstream is now preferred: the next miss goes there first.
	start := time.Now()
	r, _, err = c.Exchange(q("other.example.net.", dns.TypeA), inst.Addrs["dns"])
	if err != nil || r.Rcode != dns.RcodeNameError {
		t.Fatalf("second query: %v, %v", r, err)
	}
	if took := time.Since(start); took > 250*time.Millisecond {
		t.Logf("second query took %v (expected the preferred upstream first)", took)
	}
}

func TestConcurrentMissesShareOneUpstreamQuery(t *testing.T) {
	e := startEnv(t)
	e.up.set("slow.example.net.", "A", "slow.example.net. 60 IN A 198.51.100.3")
	e.up.delay.Store(int64(500 * time.Millisecond))
	const n = 10
	errs := make(chan error, n)
	for range n {
		go func() {
			c := &dns.Client{Timeout: 5 * time.Second}
			r, _, err := c.Exchange(q("slow.example.net.", dns.TypeA), e.dns)
			if err == nil && len(r.Answer) != 1 {
				err = fmt.Errorf("answer %v", r.Answer)
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := e.up.queries.Load(); got > 3 {
		t.Fatalf("%d concurrent misses made %d upstream queries, want them to share one", n, got)
	}
}

func TestAllUpstreamsDownIsServfail(t *testing.T) {
	_, regAddr := startFakeRegistry(t)
	inst := servicetest.Start(t, Spec(), "--dns-addr=127.0.0.1:0", "--registry-addr="+regAddr,
		"--upstream="+deadUpstream(t), "--upstream="+deadUpstream(t), "--upstream-timeout=200ms")
	c := &dns.Client{Timeout: 5 * time.Second}
	r, _, err := c.Exchange(q("gone.example.net.", dns.TypeA), inst.Addrs["dns"])
	if err != nil || r.Rcode != dns.RcodeServerFailure || !r.RecursionAvailable {
		t.Fatalf("with every upstream dead: %v, %v; want SERVFAIL", r, err)
	}
}

func TestRecursionRefusedOutsideAllowedNetworks(t *testing.T) {
	e := startEnv(t, "--allow-recursion=192.0.2.0/24")
	e.up.set("x.example.net.", "A", "x.example.net. 60 IN A 198.51.100.1")
	out := e.dig(t, "x.example.net.", "A")
	if rcodeOf(out) != "REFUSED" || hasFlag(out, "ra") {
		t.Fatalf("status %q flags %q, want REFUSED without ra:\n%s", rcodeOf(out), flags(out), out)
	}
	if e.up.queries.Load() != 0 {
		t.Fatal("a refused query reached the upstream")
	}
	// Our own zones still answer.
	out = e.dig(t, "www.example.test.", "A")
	if rcodeOf(out) != "NOERROR" || !hasFlag(out, "aa") {
		t.Fatalf("authoritative answer to a non-recursive client: %s", out)
	}
}

func TestResponseRateLimit(t *testing.T) {
	// The test's client is on loopback, exempt by default.
	e := startEnv(t, "--rrl-rate=5", "--rrl-exempt-loopback=false")
	c, err := net.Dial("udp", e.dns)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := q("www.example.test.", dns.TypeA)
	const sent = 40
	start := time.Now()
	for i := range sent {
		m.Id = uint16(i + 1)
		wire, _ := m.Pack()
		if _, err := c.Write(wire); err != nil {
			t.Fatal(err)
		}
	}
	full, slipped := 0, 0
	buf := make([]byte, 1500)
	last := start
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	for {
		n, err := c.Read(buf)
		if err != nil {
			break
		}
		last = time.Now()
		if n >= 4 && buf[2]&flagTC != 0 && binary.BigEndian.Uint16(buf[6:]) == 0 {
			slipped++
		} else {
			full++
		}
	}
	// A burst of 5, then 5 per second for as long as the server took.
	allowed := 6 + int(5*last.Sub(start).Seconds())
	if full < 1 || full > allowed || slipped < 1 || full+slipped >= sent {
		t.Fatalf("%d queries at 5/s allowed: %d full answers, %d slipped (TC), %d dropped", sent, full, slipped, sent-full-slipped)
	}
	// TCP is not limited.
	r := e.query(t, "tcp", q("www.example.test.", dns.TypeA))
	if len(r.Answer) != 1 {
		t.Fatalf("TCP answer under RRL: %v", r)
	}
}

func TestManagedRecordsAPI(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	up, err := e.api.UpsertRecord(ctx, &resolverv1.UpsertRecordRequest{Record: &resolverv1.Record{
		Name: "API.example.test", Type: "a", Ttl: 120, Data: "192.0.2.77"}})
	if err != nil {
		t.Fatal(err)
	}
	if up.Record.Name != "api.example.test." || up.Record.Type != "A" || up.Record.Source != "managed" {
		t.Fatalf("stored %v", up.Record)
	}
	r := e.waitAnswers(t, "api.example.test.", dns.TypeA, 1)
	if !r.Authoritative || r.Answer[0].Header().Ttl != 120 {
		t.Fatalf("managed record answer %v", r)
	}
	if _, err := e.api.UpsertRecord(ctx, &resolverv1.UpsertRecordRequest{Record: &resolverv1.Record{
		Name: "mail2.switchboard.", Type: "MX", Data: "10 mx.example.test."}}); err != nil {
		t.Fatal(err)
	}
	e.waitAnswers(t, "mail2.switchboard.", dns.TypeMX, 1)

	list, err := e.api.ListRecords(ctx, &resolverv1.ListRecordsRequest{Suffix: "example.test."})
	if err != nil {
		t.Fatal(err)
	}
	var managed, file int
	for _, rec := range list.Records {
		switch {
		case rec.Source == "managed":
			managed++
		case strings.HasPrefix(rec.Source, "zonefile:"):
			file++
		}
	}
	if managed != 1 || file != 12 {
		t.Fatalf("ListRecords(example.test.): %d managed, %d from the zone file; want 1 and 12: %v", managed, file, list.Records)
	}

	del, err := e.api.DeleteRecord(ctx, &resolverv1.DeleteRecordRequest{Name: "api.example.test.", Type: "A"})
	if err != nil || del.Deleted != 1 {
		t.Fatalf("DeleteRecord = %v, %v", del, err)
	}
	eventually(t, "deleted record gone", func() (bool, string) {
		r := e.query(t, "udp", q("api.example.test.", dns.TypeA))
		return r.Rcode == dns.RcodeNameError, r.String()
	})

	for _, tt := range []struct {
		rec   *resolverv1.Record
		field string
	}{
		{&resolverv1.Record{Name: "x.example.test.", Type: "HINFO", Data: "a b"}, "record.type"},
		{&resolverv1.Record{Name: "x.example.test.", Type: "A", Data: "not-an-ip"}, "record.data"},
		{&resolverv1.Record{Name: "x.elsewhere.", Type: "A", Data: "192.0.2.1"}, "record.name"},
		{&resolverv1.Record{Name: "", Type: "A", Data: "192.0.2.1"}, "record.name"},
		{nil, "record"},
	} {
		_, err := e.api.UpsertRecord(ctx, &resolverv1.UpsertRecordRequest{Record: tt.rec})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("UpsertRecord(%v) = %v, want InvalidArgument naming %s", tt.rec, err, tt.field)
		}
	}
}

func TestLookupWithGrpcurl(t *testing.T) {
	grpcurl := servicetest.Tool(t, "grpcurl")
	e := startEnv(t)
	out, err := exec.Command(grpcurl, "-plaintext", "-max-time", "10", "-d", `{"name":"alias.example.test","type":"A"}`,
		e.inst.Addrs["grpc"], "switchboard.resolver.v1.Resolver/Lookup").CombinedOutput()
	if err != nil {
		t.Fatalf("grpcurl: %v\n%s", err, out)
	}
	for _, want := range []string{`"rcode": "NOERROR"`, `"authoritative": true`, `"type": "CNAME"`, `"data": "192.0.2.10"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("Lookup output lacks %s:\n%s", want, out)
		}
	}
	out, _ = exec.Command(grpcurl, "-plaintext", "-max-time", "10", "-d", `{"name":"x.test","type":"BOGUS"}`,
		e.inst.Addrs["grpc"], "switchboard.resolver.v1.Resolver/Lookup").CombinedOutput()
	if !strings.Contains(string(out), "InvalidArgument") || !strings.Contains(string(out), "type") {
		t.Errorf("bad type: %s", out)
	}
}

func TestBadConfigurationStops(t *testing.T) {
	for _, tt := range []struct{ arg, want string }{
		{"--allow-recursion=banana", "--allow-recursion"},
		{"--upstream=nohostport", "--upstream"},
		{"--zone-file=testdata/missing.zone", "missing.zone"},
		{"--cache-size=-1", "--cache-size"},
		{"--zone=a..b", "--zone"},
		{"--ns-name=a..b", "--ns-name"},
		{"--advertise-addr=banana", "--advertise-addr"},
		{"--zone-file=x.zone=a..b", "--zone-file"},
		{"--zone-file=testdata/lookup/other.test.zone", "--zone-file=testdata/lookup/other.test.zone=<origin>"},
	} {
		err := service.Run(context.Background(), Spec(), []string{"--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0",
			"--dns-addr=127.0.0.1:0", tt.arg}, service.WithEnv(config.NoEnv), service.WithLogOutput(io.Discard))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want it to name %s", tt.arg, err, tt.want)
		}
	}
}
