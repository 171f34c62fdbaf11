package resolver

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
)

// knotQuestion is one question asked of both servers.
type knotQuestion struct {
	name   string
	qtype  uint16
	qclass uint16 // 0: IN
	net    string // "udp" (default) or "tcp"
	noEDNS bool   // no OPT (UDP replies limited to 512 bytes)
	rd     bool   // RD set
	why    string
}

// knotQuestions covers RFC 4592 §2.2.1's questions, then zone cuts, CNAME
// chains and loops, wildcard corner cases, truncation and the header
// (testdata/knot/example.zone says what each name is for).
var knotQuestions = []knotQuestion{
	// RFC 4592 §2.2.1, in its order.
	{name: "host3.example.", qtype: dns.TypeMX, why: "synthesized from *.example"},
	{name: "host3.example.", qtype: dns.TypeA, why: "the wildcard lacks A: NODATA"},
	{name: "foo.bar.example.", qtype: dns.TypeTXT, why: "a wildcard matches more than one label"},
	{name: "host1.example.", qtype: dns.TypeMX, why: "exact name beside a wildcard: NODATA, not synthesized"},
	{name: "sub.*.example.", qtype: dns.TypeMX, why: "a name under the wildcard is no wildcard"},
	{name: "_telnet._tcp.host1.example.", qtype: dns.TypeSRV, why: "closest encloser _tcp.host1 has no wildcard: NXDOMAIN"},
	{name: "host.subdel.example.", qtype: dns.TypeA, why: "a cut stops the wildcard: referral"},
	{name: "ghost.*.example.", qtype: dns.TypeMX, why: "closest encloser *.example has no wildcard child: NXDOMAIN"},
	// Wildcards.
	{name: "*.example.", qtype: dns.TypeMX, why: "the wildcard asked by its own name"},
	{name: "Foo.Bar.EXAMPLE.", qtype: dns.TypeTXT, why: "synthesized, the question's case kept"},
	{name: "host3.example.", qtype: dns.TypeANY, why: "ANY at a wildcard: its first RRset"},
	{name: "host2.example.", qtype: dns.TypeA, why: "empty non-terminal: NODATA, not the wildcard"},
	{name: "_tcp.host2.example.", qtype: dns.TypeTXT, why: "empty non-terminal deeper down"},
	{name: "x._tcp.host2.example.", qtype: dns.TypeTXT, why: "below an empty non-terminal: NXDOMAIN"},
	{name: "a.w.example.", qtype: dns.TypeA, why: "*.w synthesizes A"},
	{name: "a.b.w.example.", qtype: dns.TypeA, why: "*.w over two labels"},
	{name: "a.w.example.", qtype: dns.TypeAAAA, why: "*.w without AAAA: NODATA"},
	{name: "x.y.w.example.", qtype: dns.TypeA, why: "exact name below the empty non-terminal y.w"},
	{name: "y.w.example.", qtype: dns.TypeA, why: "the empty non-terminal y.w: NODATA"},
	{name: "z.y.w.example.", qtype: dns.TypeA, why: "y.w blocks *.w: NXDOMAIN"},
	// The apex and plain data.
	{name: "example.", qtype: dns.TypeSOA},
	{name: "example.", qtype: dns.TypeNS, why: "the in-zone server's addresses in additional"},
	{name: "example.", qtype: dns.TypeANY, why: "minimal ANY (RFC 8482)"},
	{name: "HOST1.Example.", qtype: dns.TypeA, why: "the question's case kept"},
	{name: "host1.example.", qtype: dns.TypeAAAA},
	{name: "host1.example.", qtype: dns.TypeANY},
	{name: "ns1.example.", qtype: dns.TypeAAAA},
	{name: "_ssh._tcp.host1.example.", qtype: dns.TypeSRV, why: "target addresses in additional"},
	{name: "_ssh._tcp.host2.example.", qtype: dns.TypeSRV, why: "target without addresses"},
	{name: "mx.example.", qtype: dns.TypeMX, why: "additional: authoritative, glue, wildcard, none"},
	{name: "srv.example.", qtype: dns.TypeSRV},
	{name: "mx.example.", qtype: dns.TypeANY},
	// Zone cuts.
	{name: "sub.example.", qtype: dns.TypeA, why: "at the cut: referral with glue"},
	{name: "sub.example.", qtype: dns.TypeNS, why: "the cut's NS is the child's: referral"},
	{name: "host.sub.example.", qtype: dns.TypeA, why: "below the cut: referral"},
	{name: "ns.sub.example.", qtype: dns.TypeA, why: "glue is not authoritative: referral"},
	{name: "deep.ns.sub.example.", qtype: dns.TypeA, why: "occluded data: referral"},
	{name: "x.ns.sub.example.", qtype: dns.TypeAAAA},
	{name: "sub.example.", qtype: dns.TypeANY},
	{name: "sub.example.", qtype: dns.TypeDS, why: "DS at the cut: the parent's NODATA"},
	{name: "subdel.example.", qtype: dns.TypeDS, why: "DS at the cut: the parent's DS"},
	{name: "ns.sub.example.", qtype: dns.TypeDS, why: "DS below the cut: referral"},
	{name: "subdel.example.", qtype: dns.TypeMX, why: "referral without glue"},
	// CNAMEs.
	{name: "alias.example.", qtype: dns.TypeA, why: "a chain of two"},
	{name: "alias.example.", qtype: dns.TypeCNAME, why: "the CNAME itself"},
	{name: "alias.example.", qtype: dns.TypeMX, why: "chain ending in NODATA"},
	{name: "alias.example.", qtype: dns.TypeANY, why: "ANY at a CNAME: the CNAME"},
	{name: "c1.example.", qtype: dns.TypeA, why: "a chain longer than five"},
	{name: "c2.example.", qtype: dns.TypeA, why: "a chain of five, then the address"},
	{name: "towild.example.", qtype: dns.TypeA, why: "to a wildcard"},
	{name: "foo.cn.example.", qtype: dns.TypeA, why: "a wildcard CNAME"},
	{name: "todeleg.example.", qtype: dns.TypeA, why: "into the delegation: CNAME and referral, AA"},
	{name: "dangling.example.", qtype: dns.TypeA, why: "to a name that does not exist: NXDOMAIN"},
	{name: "ext.example.", qtype: dns.TypeA, why: "out of the zone: ends at the CNAME"},
	{name: "loop1.example.", qtype: dns.TypeA, why: "two-name loop: each CNAME once"},
	{name: "self.example.", qtype: dns.TypeA, why: "one-name loop"},
	{name: "a.cnl.example.", qtype: dns.TypeA, why: "a wildcard CNAME to a name it covers"},
	// Size.
	{name: "big.example.", qtype: dns.TypeTXT, noEDNS: true, why: "over 512 bytes: TC over UDP without EDNS"},
	{name: "big.example.", qtype: dns.TypeTXT, why: "fits the EDNS buffer"},
	{name: "huge.example.", qtype: dns.TypeTXT, why: "over 1232 bytes: TC over UDP, whole over TCP"},
	{name: "many.example.", qtype: dns.TypeMX, noEDNS: true, why: "additional records past 512 bytes left out, without TC"},
	{name: "many.example.", qtype: dns.TypeMX, why: "all fit in 1232 bytes"},
	// The header and the question.
	{name: "Host1.EXAMPLE.", qtype: dns.TypeA, qclass: dns.ClassANY, why: "QCLASS ANY echoed"},
	{name: "host3.example.", qtype: dns.TypeTXT, qclass: dns.ClassANY},
	{name: "host1.example.", qtype: dns.TypeA, qclass: dns.ClassCHAOS, why: "other classes: REFUSED"},
	{name: "host1.example.", qtype: dns.TypeA, rd: true, why: "RD echoed, no RA"},
	{name: "nxd.y.w.example.", qtype: dns.TypeA, rd: true, noEDNS: true},
	{name: "www.example.org.", qtype: dns.TypeA, why: "not ours: REFUSED"},
}

// TestAgreesWithKnot serves testdata/knot/example.zone from the resolver
// and from Knot DNS (knotd, started here on 127.0.0.1) and asks both every
// question of knotQuestions: rcode, the AA, TC, RD and RA flags, the
// question (name case, type, class), whether an OPT came back, and every
// section's records (TTLs aside, in any order) must agree.
func TestAgreesWithKnot(t *testing.T) {
	knotd := knotdPath(t)
	const zoneFile = "testdata/knot/example.zone"
	knot := startKnot(t, knotd, map[string]string{"example.": zoneFile})
	_, regAddr := startFakeRegistry(t)
	inst := servicetest.Start(t, Spec(), "--dns-addr=127.0.0.1:0", "--registry-addr="+regAddr, "--zone-file="+zoneFile)
	ours := inst.Addrs["dns"]

	if len(knotQuestions) < 40 {
		t.Fatalf("%d questions, want at least 40", len(knotQuestions))
	}
	for _, kq := range knotQuestions {
		// A UDP question is asked over TCP too: the resolver answers UDP
		// on its raw-packet fast path where it can, TCP through the
		// handler, and both must agree with Knot.
		variants := []knotQuestion{kq}
		if kq.net == "" {
			tcp := kq
			tcp.net = "tcp"
			variants = append(variants, tcp)
		}
		for _, v := range variants {
			label := v.label()
			t.Run(label, func(t *testing.T) {
				want := exchangeView(t, knot, v)
				got := exchangeView(t, ours, v)
				if got != want {
					t.Errorf("%s (%s):\nresolver:\n%s\nknot:\n%s", label, v.why, got, want)
				}
			})
		}
	}
}

func (kq knotQuestion) label() string {
	var b strings.Builder
	b.WriteString(kq.name + "/" + dns.TypeToString[kq.qtype])
	if kq.qclass != 0 {
		b.WriteString("/" + dns.ClassToString[kq.qclass])
	}
	if kq.net == "tcp" {
		b.WriteString("/tcp")
	}
	if kq.noEDNS {
		b.WriteString("/noedns")
	}
	if kq.rd {
		b.WriteString("/rd")
	}
	return b.String()
}

// exchangeView asks addr the question and renders what is compared.
func exchangeView(t *testing.T, addr string, kq knotQuestion) string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(kq.name, kq.qtype)
	m.RecursionDesired = kq.rd
	if kq.qclass != 0 {
		m.Question[0].Qclass = kq.qclass
	}
	if !kq.noEDNS {
		m.SetEdns0(1232, false)
	}
	network := kq.net
	if network == "" {
		network = "udp"
	}
	c := &dns.Client{Net: network, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s: %s query: %v", addr, network, err)
	}
	return messageView(r)
}

// messageView renders a reply for comparison: rcode, flags, question,
// OPT presence, and each section's records with TTL 0, sorted.
func messageView(r *dns.Msg) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rcode %s aa=%v tc=%v rd=%v ra=%v opt=%v\n", dns.RcodeToString[r.Rcode],
		r.Authoritative, r.Truncated, r.RecursionDesired, r.RecursionAvailable, r.IsEdns0() != nil)
	for _, q := range r.Question {
		fmt.Fprintf(&b, "question %s %s %s\n", q.Name, dns.ClassToString[q.Qclass], dns.TypeToString[q.Qtype])
	}
	for _, sec := range []struct {
		name string
		rrs  []dns.RR
	}{{"answer", r.Answer}, {"authority", r.Ns}, {"additional", r.Extra}} {
		var lines []string
		for _, rr := range sec.rrs {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			c := dns.Copy(rr)
			c.Header().Ttl = 0
			lines = append(lines, strings.Join(strings.Fields(c.String()), " "))
		}
		slices.Sort(lines)
		for _, l := range lines {
			fmt.Fprintf(&b, "%s %s\n", sec.name, l)
		}
	}
	return b.String()
}

// knotdPath finds knotd, also in the sbin directories Debian installs it
// to (not on a user's PATH); without it the test is skipped, or fails
// under CI.
func knotdPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("knotd"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/knotd", "/usr/local/sbin/knotd"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return servicetest.Tool(t, "knotd")
}

// startKnot runs knotd on 127.0.0.1 (a free port, UDP and TCP) serving
// zones (origin → master file), with a temporary configuration, storage
// and run directory, and stops it at cleanup. It returns host:port once
// knotd answers every zone's SOA over UDP and TCP.
func startKnot(t *testing.T, knotd string, zones map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	var zoneConf strings.Builder
	for origin, file := range zones {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(origin, ".") + ".zone"
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&zoneConf, "  - domain: %s\n    file: %s\n", origin, filepath.Join(dir, name))
	}
	var lastErr error
	for range 5 {
		port := freeDNSPort(t)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		conf := fmt.Sprintf(`server:
    listen: 127.0.0.1@%d
    rundir: %s
    udp-max-payload: 1232
database:
    storage: %s
control:
    listen: %s
log:
  - target: stderr
    any: warning
template:
  - id: default
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
%s`, port, dir, filepath.Join(dir, "db"), filepath.Join(dir, "knot.sock"), zoneConf.String())
		confPath := filepath.Join(dir, "knot.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(knotd, "-c", confPath)
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("knotd: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		stop := func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
		if lastErr = waitKnot(addr, zones, exited); lastErr == nil {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("knotd output:\n%s", out.String())
				}
			})
			return addr
		}
		stop()
		lastErr = fmt.Errorf("%w; knotd output:\n%s", lastErr, out.String())
	}
	t.Fatalf("knotd did not start: %v", lastErr)
	return ""
}

// waitKnot polls until knotd answers every zone's SOA over UDP and TCP.
func waitKnot(addr string, zones map[string]string, exited <-chan error) error {
	deadline := time.Now().Add(15 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		select {
		case werr := <-exited:
			return fmt.Errorf("knotd exited: %v", werr)
		default:
		}
		err = nil
		for origin := range zones {
			for _, network := range []string{"udp", "tcp"} {
				c := &dns.Client{Net: network, Timeout: 500 * time.Millisecond}
				r, _, e := c.Exchange(new(dns.Msg).SetQuestion(origin, dns.TypeSOA), addr)
				if e == nil && (r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1) {
					e = fmt.Errorf("%s SOA over %s: %s", origin, network, dns.RcodeToString[r.Rcode])
				}
				if e != nil {
					err = e
				}
			}
		}
		if err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("knotd on %s did not answer within 15s: %w", addr, err)
}

// freeDNSPort returns a port free on 127.0.0.1 for both UDP and TCP at
// the time of asking.
func freeDNSPort(t *testing.T) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no port free for both UDP and TCP")
	return 0
}

// syncBuffer is a bytes.Buffer safe for a process's stdout and stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
