package resolver

import (
	"math"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
)

// scrape reads the admin port's /metrics as a Prometheus server would.
func scrape(t *testing.T, inst *servicetest.Instance) map[string]*dto.MetricFamily {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + inst.Addrs["admin"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// labelsOf renders a sample's labels as "k=v,k=v", sorted.
func labelsOf(m *dto.Metric) string {
	var l []string
	for _, p := range m.GetLabel() {
		l = append(l, p.GetName()+"="+p.GetValue())
	}
	sort.Strings(l)
	return strings.Join(l, ",")
}

// samples returns a family's values by labelsOf (counters and gauges) or
// its sample count (histograms).
func samples(fams map[string]*dto.MetricFamily, name string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range fams[name].GetMetric() {
		switch {
		case m.Counter != nil:
			out[labelsOf(m)] = m.Counter.GetValue()
		case m.Gauge != nil:
			out[labelsOf(m)] = m.Gauge.GetValue()
		case m.Histogram != nil:
			out[labelsOf(m)] = float64(m.Histogram.GetSampleCount())
		}
	}
	return out
}

func sameSamples(got, want map[string]float64) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			return false
		}
	}
	return true
}

// TestMetricsAfterQueries asks a running resolver real queries over UDP
// and TCP (dig, kdig and miekg/dns) and reads its /metrics: each query
// counted once under its qtype, rcode and protocol, the latency histogram
// counting the same queries, the cache counters, and every series named
// switchboard_resolver_* without job or instance labels.
func TestMetricsAfterQueries(t *testing.T) {
	e := startEnv(t, "--cache-size=16") // one entry per cache shard
	e.up.set("fwd.example.net.", "A", "fwd.example.net. 300 IN A 198.51.100.7")

	// Service zone and static zone answers, UDP (the fast path) and TCP.
	for range 3 {
		if out := e.dig(t, "www.example.test.", "A"); rcodeOf(out) != "NOERROR" {
			t.Fatalf("dig www A:\n%s", out)
		}
	}
	if out := e.dig(t, "+tcp", "www.example.test.", "AAAA"); rcodeOf(out) != "NOERROR" {
		t.Fatalf("dig +tcp www AAAA:\n%s", out)
	}
	if out := e.kdig(t, "+tcp", "example.test.", "MX"); !strings.Contains(out, "NOERROR") {
		t.Fatalf("kdig +tcp MX:\n%s", out)
	}
	if out := e.dig(t, "nope.example.test.", "A"); rcodeOf(out) != "NXDOMAIN" {
		t.Fatalf("dig nope A:\n%s", out)
	}
	// A type not counted by name (SPF, 99) and a class we do not serve.
	if r := e.query(t, "udp", q("www.example.test.", dns.TypeSPF)); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("SPF: %v", r)
	}
	ch := q("www.example.test.", dns.TypeTXT)
	ch.Question[0].Qclass = dns.ClassCHAOS
	if r := e.query(t, "tcp", ch); r.Rcode != dns.RcodeRefused {
		t.Fatalf("class CH: %v", r)
	}
	// EDNS version 1: BADVERS, an extended rcode.
	bv := q("www.example.test.", dns.TypeA)
	bv.SetEdns0(1232, false)
	bv.IsEdns0().SetVersion(1)
	if r := e.query(t, "udp", bv); r.Rcode != dns.RcodeBadVers {
		t.Fatalf("EDNS version 1: %v", r)
	}
	// Two questions: FORMERR from the header alone, over UDP (the full
	// path) and TCP (miekg/dns's server, before the handler).
	for _, network := range []string{"udp", "tcp"} {
		two := q("www.example.test.", dns.TypeA)
		two.Question = append(two.Question, two.Question[0])
		if r := e.query(t, network, two); r.Rcode != dns.RcodeFormatError {
			t.Fatalf("two questions over %s: %v", network, r)
		}
	}
	// Forwarding: a miss, then a hit; then a name in the same cache shard
	// evicts it (one entry per shard, never hit since it was stored).
	for range 2 {
		if r := e.query(t, "udp", q("fwd.example.net.", dns.TypeA)); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("forwarded: %v", r)
		}
	}
	s := newCache(16)
	other := ""
	for i := 0; other == ""; i++ {
		if n := "n" + string(rune('a'+i%26)) + strings.Repeat("x", i/26) + ".example.net."; s.shard(n) == s.shard("fwd.example.net.") {
			other = n
		}
	}
	if r := e.query(t, "udp", q(other, dns.TypeA)); r.Rcode != dns.RcodeNameError {
		t.Fatalf("forwarded %s: %v", other, r)
	}

	// A UDP batch is timed once its answers are sent, so the client may
	// read the last answer a moment before its latency is recorded: wait
	// (bounded) for the histogram to count every timed query.
	fams := scrape(t, e.inst)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); fams = scrape(t, e.inst) {
		if sameSamples(samples(fams, "switchboard_resolver_query_duration_seconds"), map[string]float64{"protocol=udp": 10, "protocol=tcp": 3}) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for want, got := range map[string]map[string]float64{
		"switchboard_resolver_queries_total": {
			"protocol=udp,qtype=A,rcode=NOERROR":     3 + 2, // www, fwd
			"protocol=tcp,qtype=AAAA,rcode=NOERROR":  1,
			"protocol=tcp,qtype=MX,rcode=NOERROR":    1,
			"protocol=udp,qtype=A,rcode=NXDOMAIN":    1 + 1, // nope, the forwarded other
			"protocol=udp,qtype=other,rcode=NOERROR": 1,
			"protocol=tcp,qtype=TXT,rcode=REFUSED":   1,
			"protocol=udp,qtype=A,rcode=BADVERS":     1,
			"protocol=udp,qtype=A,rcode=FORMERR":     1,
			"protocol=tcp,qtype=other,rcode=FORMERR": 1,
		},
		// The TCP FORMERR never reached the handler: not timed.
		"switchboard_resolver_query_duration_seconds": {"protocol=udp": 10, "protocol=tcp": 3},
		"switchboard_resolver_cache_hits_total":       {"": 1},
		"switchboard_resolver_cache_misses_total":     {"": 2},
		"switchboard_resolver_cache_evictions_total":  {"": 1},
		"switchboard_resolver_cache_entries":          {"": 1},
		"switchboard_resolver_cache_capacity":         {"": 16},
		"switchboard_resolver_forwarded_total":        {"": 2},
		"switchboard_resolver_forward_errors_total":   {"": 0},
		"switchboard_resolver_transfers_total": {
			"result=ok,type=axfr": 0, "result=refused,type=axfr": 0, "result=failed,type=axfr": 0,
			"result=ok,type=ixfr": 0, "result=refused,type=ixfr": 0, "result=failed,type=ixfr": 0,
		},
		"switchboard_resolver_notifies_total": {"result=ok": 0, "result=refused": 0, "result=failed": 0},
	} {
		if g := samples(fams, want); !sameSamples(g, got) {
			t.Errorf("%s = %v, want %v", want, g, got)
		}
	}
	if h := fams["switchboard_resolver_query_duration_seconds"]; h.GetType() != dto.MetricType_HISTOGRAM {
		t.Errorf("query_duration_seconds is a %v, want a histogram", h.GetType())
	} else {
		for _, m := range h.GetMetric() {
			hist := m.GetHistogram()
			b := hist.GetBucket()
			if hist.GetSampleSum() <= 0 || len(b) != len(latencyBuckets)+1 {
				t.Fatalf("histogram %s: sum %v, %d buckets, want a positive sum and %d buckets and +Inf", labelsOf(m), hist.GetSampleSum(), len(b), len(latencyBuckets))
			}
			if last := b[len(b)-1]; !math.IsInf(last.GetUpperBound(), 1) || last.GetCumulativeCount() != hist.GetSampleCount() {
				t.Errorf("histogram %s: last bucket le=%v holds %d of %d", labelsOf(m), last.GetUpperBound(), last.GetCumulativeCount(), hist.GetSampleCount())
			}
			if b[0].GetUpperBound() != latencyBuckets[0] || b[len(b)-2].GetCumulativeCount() == 0 {
				t.Errorf("histogram %s: buckets %v, want the answers within %vs", labelsOf(m), b, latencyBuckets[len(latencyBuckets)-1])
			}
		}
	}
	for name, f := range fams {
		if strings.HasPrefix(name, "switchboard_") && !strings.HasPrefix(name, "switchboard_resolver_") {
			t.Errorf("metric %s: want the switchboard_resolver_ prefix", name)
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "job" || l.GetName() == "instance" {
					t.Errorf("metric %s has a %q label, which Prometheus sets itself", name, l.GetName())
				}
			}
		}
	}
}

// TestMetricsForwardErrors: an exchange that fails on every upstream is
// counted, and its SERVFAIL too.
func TestMetricsForwardErrors(t *testing.T) {
	_, regAddr := startFakeRegistry(t)
	inst := servicetest.Start(t, Spec(), "--dns-addr=127.0.0.1:0", "--registry-addr="+regAddr,
		"--upstream="+deadUpstream(t), "--upstream-timeout=200ms")
	c := &dns.Client{Timeout: 5 * time.Second}
	r, _, err := c.Exchange(q("gone.example.net.", dns.TypeAAAA), inst.Addrs["dns"])
	if err != nil || r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("with the upstream dead: %v, %v; want SERVFAIL", r, err)
	}
	fams := scrape(t, inst)
	for want, got := range map[string]map[string]float64{
		"switchboard_resolver_forwarded_total":      {"": 1},
		"switchboard_resolver_forward_errors_total": {"": 1},
		"switchboard_resolver_cache_misses_total":   {"": 1},
		"switchboard_resolver_queries_total":        {"protocol=udp,qtype=AAAA,rcode=SERVFAIL": 1},
	} {
		if g := samples(fams, want); !sameSamples(g, got) {
			t.Errorf("%s = %v, want %v", want, g, got)
		}
	}
}

// TestQueryCountsLabels: the label values stay within their bounded sets.
func TestQueryCountsLabels(t *testing.T) {
	for _, tt := range []struct {
		qtype uint16
		want  string
	}{
		{dns.TypeA, "A"}, {dns.TypeSRV, "SRV"}, {dns.TypeHTTPS, "HTTPS"}, {dns.TypeCAA, "CAA"},
		{dns.TypeIXFR, "IXFR"}, {dns.TypeSPF, "other"}, {0, "other"}, {65535, "other"},
	} {
		if got := qtypeNames[qtypeIndex(tt.qtype)]; got != tt.want {
			t.Errorf("qtype %d: label %q, want %q", tt.qtype, got, tt.want)
		}
	}
	for _, tt := range []struct {
		rcode int
		want  string
	}{
		{dns.RcodeSuccess, "NOERROR"}, {dns.RcodeNameError, "NXDOMAIN"}, {dns.RcodeRefused, "REFUSED"},
		{dns.RcodeBadVers, "BADVERS"}, {dns.RcodeYXDomain, "other"}, {4095, "other"},
	} {
		if got := rcodeNames[rcodeIndex(tt.rcode)]; got != tt.want {
			t.Errorf("rcode %d: label %q, want %q", tt.rcode, got, tt.want)
		}
	}
}

// TestTransferAndNotifyCounts: the hooks zone transfers and NOTIFY call
// count under the right labels, beside the zeros exported from start.
func TestTransferAndNotifyCounts(t *testing.T) {
	s := newTestServer()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.collectors()...)
	s.met.transfer(transferIXFR, resultFailed)
	s.met.transfer(transferAXFR, resultOK)
	s.met.transfer(transferAXFR, resultOK)
	s.met.notify(resultRefused)
	got, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	fams := map[string]*dto.MetricFamily{}
	for _, f := range got {
		fams[f.GetName()] = f
	}
	for name, want := range map[string]map[string]float64{
		"switchboard_resolver_transfers_total": {
			"result=ok,type=axfr": 2, "result=refused,type=axfr": 0, "result=failed,type=axfr": 0,
			"result=ok,type=ixfr": 0, "result=refused,type=ixfr": 0, "result=failed,type=ixfr": 1,
		},
		"switchboard_resolver_notifies_total": {"result=ok": 0, "result=refused": 1, "result=failed": 0},
	} {
		if g := samples(fams, name); !sameSamples(g, want) {
			t.Errorf("%s = %v, want %v", name, g, want)
		}
	}
}
