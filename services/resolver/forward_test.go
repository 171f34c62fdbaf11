package resolver

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	resolverv1 "github.com/switchboard-net/switchboard/proto/switchboard/resolver/v1"
)

const (
	realIP   = "198.51.100.1"
	forgedIP = "203.0.113.66"
)

// forgeries are upstream replies that must not be taken for the answer to
// the query q: each names what differs.
var forgeries = []struct {
	name  string
	forge func(q *dns.Msg) []byte
}{
	{"other name", func(q *dns.Msg) []byte {
		return answerA(q, forgedIP, func(m *dns.Msg) {
			m.Question[0].Name = "evil.example.net."
			m.Answer[0].Header().Name = "evil.example.net."
		})
	}},
	{"other type", func(q *dns.Msg) []byte {
		return answerA(q, forgedIP, func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAAAA })
	}},
	{"other class", func(q *dns.Msg) []byte {
		return answerA(q, forgedIP, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS })
	}},
	{"other ID", func(q *dns.Msg) []byte {
		return answerA(q, forgedIP, func(m *dns.Msg) { m.Id++ })
	}},
	{"QR clear", func(q *dns.Msg) []byte {
		return answerA(q, forgedIP, func(m *dns.Msg) { m.Response = false })
	}},
	{"other opcode", func(q *dns.Msg) []byte {
		return answerA(q, forgedIP, func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify })
	}},
	{"no question", func(q *dns.Msg) []byte {
		return answerA(q, forgedIP, func(m *dns.Msg) { m.Question = nil })
	}},
	{"two questions", func(q *dns.Msg) []byte {
		return answerA(q, forgedIP, func(m *dns.Msg) {
			m.Question = append(m.Question, dns.Question{Name: "evil.example.net.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
		})
	}},
	{"shorter than a header", func(q *dns.Msg) []byte {
		return []byte{byte(q.Id >> 8), byte(q.Id), 0x80}
	}},
	{"malformed", func(q *dns.Msg) []byte {
		b := answerA(q, forgedIP, nil)
		return b[:len(b)-3] // cut into the answer
	}},
}

// forgery returns the forgery called name.
func forgery(name string) func(q *dns.Msg) []byte {
	for _, f := range forgeries {
		if f.name == name {
			return f.forge
		}
	}
	panic("no forgery " + name)
}

// TestForwarderDropsMismatchedReplies sends each forgery ahead of the real
// reply over UDP: the forwarder skips it, counts it and returns the real one.
func TestForwarderDropsMismatchedReplies(t *testing.T) {
	for _, tt := range forgeries {
		t.Run(tt.name, func(t *testing.T) {
			up := startSpoofUpstream(t, func(_ string, q *dns.Msg) [][]byte {
				return [][]byte{tt.forge(q), answerA(q, realIP, nil)}
			})
			f := newForwarder([]string{up.addr}, 5*time.Second, false)
			resp, err := f.exchange(context.Background(), "www.example.net.", dns.TypeA)
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			if len(resp.Answer) != 1 || resp.Answer[0].(*dns.A).A.String() != realIP {
				t.Fatalf("answer %v, want the real reply's %s", resp.Answer, realIP)
			}
			if n := f.mismatched.Load(); n != 1 {
				t.Fatalf("mismatched = %d, want 1", n)
			}
		})
	}
}

// TestForwarderOnlyMismatchedRepliesTimeOut: with nothing but forgeries the
// attempt waits for the real reply until its timeout, then fails.
func TestForwarderOnlyMismatchedRepliesTimeOut(t *testing.T) {
	up := startSpoofUpstream(t, func(_ string, q *dns.Msg) [][]byte {
		return [][]byte{forgery("other name")(q), forgery("other type")(q), forgery("other ID")(q)}
	})
	const timeout = 300 * time.Millisecond
	f := newForwarder([]string{up.addr}, timeout, false)
	start := time.Now()
	_, err := f.exchange(context.Background(), "www.example.net.", dns.TypeA)
	if !errors.Is(err, errNoUpstream) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("exchange error %v, want errNoUpstream after the deadline", err)
	}
	if took := time.Since(start); took < timeout {
		t.Fatalf("gave up after %v, before the %v timeout", took, timeout)
	}
	if n := f.mismatched.Load(); n != 3 {
		t.Fatalf("mismatched = %d, want 3", n)
	}
}

// TestForwarderTCPReplyChecked: a truncated UDP reply is retried over TCP,
// whose reply is checked too; there the first mismatch fails the attempt.
func TestForwarderTCPReplyChecked(t *testing.T) {
	for _, tt := range []struct {
		name       string
		tcp        func(q *dns.Msg) []byte
		wantErr    bool
		mismatched uint64
	}{
		{"real reply", func(q *dns.Msg) []byte { return answerA(q, realIP, nil) }, false, 0},
		{"other name", forgery("other name"), true, 1},
		{"other ID", forgery("other ID"), true, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := startSpoofUpstream(t, func(network string, q *dns.Msg) [][]byte {
				if network == "udp" {
					return [][]byte{answerA(q, realIP, func(m *dns.Msg) { m.Answer, m.Truncated = nil, true })}
				}
				return [][]byte{tt.tcp(q)}
			})
			f := newForwarder([]string{up.addr}, 5*time.Second, false)
			resp, err := f.exchange(context.Background(), "big.example.net.", dns.TypeA)
			if tt.wantErr != (err != nil) {
				t.Fatalf("exchange = %v, %v; want error: %v", resp, err, tt.wantErr)
			}
			if err == nil && (len(resp.Answer) != 1 || resp.Truncated) {
				t.Fatalf("TCP answer %v", resp)
			}
			if err != nil && !errors.Is(err, errMismatch) {
				t.Fatalf("error %v, want a mismatch", err)
			}
			if n := f.mismatched.Load(); n != tt.mismatched {
				t.Fatalf("mismatched = %d, want %d", n, tt.mismatched)
			}
			if n := up.queries.Load(); n != 2 {
				t.Fatalf("upstream saw %d queries, want 2 (UDP, then TCP)", n)
			}
		})
	}
}

// TestForwarderRandomizedCase: with 0x20 the name goes out in random case
// and only a reply echoing that case exactly is taken; the reply comes
// back in lower case.
func TestForwarderRandomizedCase(t *testing.T) {
	// 36 letters: the chance that none is upper-cased is 2^-36.
	const name = "abcdefghijklmnopqrstuvwxyz.example.net."
	up := startSpoofUpstream(t, func(_ string, q *dns.Msg) [][]byte {
		lowered := answerA(q, forgedIP, func(m *dns.Msg) { m.Question[0].Name = strings.ToLower(m.Question[0].Name) })
		return [][]byte{lowered, answerA(q, realIP, nil)}
	})
	f := newForwarder([]string{up.addr}, 5*time.Second, true)
	resp, err := f.exchange(context.Background(), name, dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	sent := up.sentNames()
	if len(sent) != 1 || sent[0] == name || !strings.EqualFold(sent[0], name) {
		t.Fatalf("sent %q, want %s in mixed case", sent, name)
	}
	if len(resp.Answer) != 1 || resp.Answer[0].(*dns.A).A.String() != realIP {
		t.Fatalf("answer %v, want %s (the reply echoing the case)", resp.Answer, realIP)
	}
	if n := f.mismatched.Load(); n != 1 {
		t.Fatalf("mismatched = %d, want 1 (the reply in lower case)", n)
	}
	if resp.Question[0].Name != name || resp.Answer[0].Header().Name != name {
		t.Fatalf("question %s, owner %s; want both restored to %s", resp.Question[0].Name, resp.Answer[0].Header().Name, name)
	}

	// Without 0x20 the name goes out as given and case is ignored.
	f = newForwarder([]string{up.addr}, 5*time.Second, false)
	if _, err := f.exchange(context.Background(), name, dns.TypeA); err != nil {
		t.Fatal(err)
	}
	if sent := up.sentNames(); sent[1] != name {
		t.Fatalf("sent %q without 0x20, want %s", sent[1], name)
	}
	if n := f.mismatched.Load(); n != 0 {
		t.Fatalf("mismatched = %d without 0x20, want 0", n)
	}
}

// startSpoofEnv runs the resolver forwarding to a scripted upstream.
func startSpoofEnv(t *testing.T, script func(network string, q *dns.Msg) [][]byte, args ...string) (*servicetest.Instance, *spoofUpstream) {
	t.Helper()
	_, regAddr := startFakeRegistry(t)
	up := startSpoofUpstream(t, script)
	inst := servicetest.Start(t, Spec(), append([]string{"--dns-addr=127.0.0.1:0", "--registry-addr=" + regAddr,
		"--upstream=" + up.addr}, args...)...)
	return inst, up
}

// metricValue returns an unlabelled metric's value from the admin port.
func metricValue(t *testing.T, inst *servicetest.Instance, name string) float64 {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + inst.Addrs["admin"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", l, err)
			}
			return f
		}
	}
	t.Fatalf("no metric %s in:\n%s", name, body)
	return 0
}

func exchange(t *testing.T, network string, m *dns.Msg, addr string) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s query %v: %v", network, m.Question, err)
	}
	return r
}

// TestForgedRepliesNeverReachTheCache: forged replies ahead of the real
// one; the client gets the real answer, which alone is cached.
func TestForgedRepliesNeverReachTheCache(t *testing.T) {
	inst, up := startSpoofEnv(t, func(_ string, q *dns.Msg) [][]byte {
		var out [][]byte
		if q.Question[0].Name == "evil.example.net." {
			return [][]byte{answerA(q, realIP, nil)}
		}
		for _, f := range forgeries {
			out = append(out, f.forge(q))
		}
		return append(out, answerA(q, realIP, nil))
	})
	dnsAddr := inst.Addrs["dns"]
	for i, network := range []string{"udp", "udp", "tcp"} {
		r := exchange(t, network, q("poison.example.net.", dns.TypeA), dnsAddr)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != realIP {
			t.Fatalf("query %d over %s: %v, want only %s", i+1, network, r, realIP)
		}
	}
	if n := up.queries.Load(); n != 1 {
		t.Fatalf("upstream saw %d queries, want 1 (then the cache)", n)
	}
	// The name the first forgery answered for was not cached either.
	r := exchange(t, "udp", q("evil.example.net.", dns.TypeA), dnsAddr)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != realIP || up.queries.Load() != 2 {
		t.Fatalf("evil.example.net: %v after %d upstream queries, want a fresh upstream answer", r.Answer, up.queries.Load())
	}
	want := float64(len(forgeries))
	if got := metricValue(t, inst, "switchboard_resolver_forward_mismatched_total"); got != want {
		t.Fatalf("switchboard_resolver_forward_mismatched_total = %v, want %v", got, want)
	}
}

// TestOnlyForgedRepliesServfail: an upstream sending only mismatched
// replies gives SERVFAIL after the upstream timeout, and nothing is cached.
func TestOnlyForgedRepliesServfail(t *testing.T) {
	inst, up := startSpoofEnv(t, func(_ string, q *dns.Msg) [][]byte {
		return [][]byte{forgery("other name")(q), forgery("other type")(q)}
	}, "--upstream-timeout=300ms")
	for i := range 2 {
		start := time.Now()
		r := exchange(t, "udp", q("poison.example.net.", dns.TypeA), inst.Addrs["dns"])
		if r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
			t.Fatalf("query %d: %v, want SERVFAIL", i+1, r)
		}
		if took := time.Since(start); took < 300*time.Millisecond {
			t.Fatalf("SERVFAIL after %v, before the upstream timeout", took)
		}
	}
	if n := up.queries.Load(); n != 2 {
		t.Fatalf("upstream saw %d queries, want 2 (nothing cached)", n)
	}
	st, err := resolverv1.NewResolverClient(inst.Conn(t)).CacheStats(context.Background(), &resolverv1.CacheStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != 0 {
		t.Fatalf("cache holds %d entries, want none", st.Entries)
	}
	if got := metricValue(t, inst, "switchboard_resolver_forward_mismatched_total"); got != 4 {
		t.Fatalf("switchboard_resolver_forward_mismatched_total = %v, want 4", got)
	}
}

// TestNonRecursiveQueriesNotForwarded: RD=0 for a name outside our zones
// is REFUSED — never forwarded, and not answered from the cache either —
// while our own zones answer.
func TestNonRecursiveQueriesNotForwarded(t *testing.T) {
	e := startEnv(t)
	e.up.set("norec.example.net.", "A", "norec.example.net. 300 IN A "+realIP)
	norec := func(name string) *dns.Msg {
		m := q(name, dns.TypeA)
		m.RecursionDesired = false
		return m
	}
	refused := func(t *testing.T, network string) {
		t.Helper()
		r := e.query(t, network, norec("norec.example.net."))
		if r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 || r.RecursionDesired || !r.RecursionAvailable {
			t.Fatalf("RD=0 over %s: %v, want REFUSED with ra and no rd", network, r)
		}
	}
	for _, network := range []string{"udp", "tcp"} {
		refused(t, network)
	}
	t.Run("dig +norecurse", func(t *testing.T) {
		out := e.dig(t, "norec.example.net.", "A", "+norecurse")
		if rcodeOf(out) != "REFUSED" || hasFlag(out, "rd") {
			t.Fatalf("dig +norecurse: status %q flags %q, want REFUSED without rd:\n%s", rcodeOf(out), flags(out), out)
		}
	})
	if n := e.up.queries.Load(); n != 0 {
		t.Fatalf("upstream saw %d queries from RD=0 clients, want 0", n)
	}
	// Once cached (by a recursive query), still REFUSED: no cache snooping,
	// on the UDP fast path as on TCP.
	if r := e.query(t, "udp", q("norec.example.net.", dns.TypeA)); len(r.Answer) != 1 {
		t.Fatalf("RD=1: %v", r)
	}
	for _, network := range []string{"udp", "tcp"} {
		refused(t, network)
	}
	if n := e.up.queries.Load(); n != 1 {
		t.Fatalf("upstream saw %d queries, want 1 (the RD=1 one)", n)
	}
	if r := e.query(t, "udp", norec("www.example.test.")); r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 1 {
		t.Fatalf("RD=0 for our own zone: %v, want the authoritative answer", r)
	}
}
