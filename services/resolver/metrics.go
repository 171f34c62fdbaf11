package resolver

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// The resolver's Prometheus metrics, all named switchboard_resolver_*
// (docs/resolver.md, "Metrics"). The per-query ones (queries by qtype,
// rcode and protocol; the latency histogram) are plain atomic counters
// read by a Collector at scrape time, so counting a query is one atomic
// add and never allocates; the rest are ordinary client_golang metrics.

// Protocols a query arrives over: the protocol label.
const (
	protoUDP = iota
	protoTCP
	nProtos
)

var protoNames = [nProtos]string{"udp", "tcp"}

// qtypeNames are the qtype label values: the types counted by name, and
// "other" for the rest, so the label set stays bounded whatever clients
// send. qtypeIndex maps a type to its index here.
var qtypeNames = [...]string{"other", "A", "NS", "CNAME", "SOA", "PTR", "MX", "TXT", "AAAA",
	"SRV", "NAPTR", "DS", "DNSKEY", "SVCB", "HTTPS", "CAA", "ANY", "AXFR", "IXFR"}

const nQtypes = len(qtypeNames)

func qtypeIndex(t uint16) int {
	switch t {
	case dns.TypeA:
		return 1
	case dns.TypeNS:
		return 2
	case dns.TypeCNAME:
		return 3
	case dns.TypeSOA:
		return 4
	case dns.TypePTR:
		return 5
	case dns.TypeMX:
		return 6
	case dns.TypeTXT:
		return 7
	case dns.TypeAAAA:
		return 8
	case dns.TypeSRV:
		return 9
	case dns.TypeNAPTR:
		return 10
	case dns.TypeDS:
		return 11
	case dns.TypeDNSKEY:
		return 12
	case dns.TypeSVCB:
		return 13
	case dns.TypeHTTPS:
		return 14
	case dns.TypeCAA:
		return 15
	case dns.TypeANY:
		return 16
	case dns.TypeAXFR:
		return 17
	case dns.TypeIXFR:
		return 18
	}
	return 0
}

// rcodeNames are the rcode label values; "other" covers the rest.
var rcodeNames = [...]string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "other"}

const nRcodes = len(rcodeNames)

func rcodeIndex(rcode int) int {
	switch {
	case rcode >= dns.RcodeSuccess && rcode <= dns.RcodeRefused:
		return rcode
	case rcode == dns.RcodeBadVers:
		return 6
	}
	return nRcodes - 1
}

// queryCounts counts answered queries by protocol, qtype and rcode. Each
// UDP reader has its own (no cache line shared between cores on the fast
// path); the collector sums them.
type queryCounts [nProtos * nQtypes * nRcodes]atomic.Uint64

// count adds one query of qtype answered with rcode over proto.
func (c *queryCounts) count(proto int, qtype uint16, rcode int) {
	c[(proto*nQtypes+qtypeIndex(qtype))*nRcodes+rcodeIndex(rcode)].Add(1)
}

// latencyBuckets are the upper bounds of the query duration histogram, in
// seconds: from the fast path's tens of microseconds to forwarding that
// waits for upstream timeouts.
var latencyBuckets = [...]float64{0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// latencyBucketsNs are latencyBuckets in nanoseconds, for the comparison
// on the observing side.
var latencyBucketsNs = func() []int64 {
	ns := make([]int64, len(latencyBuckets))
	for i, b := range latencyBuckets {
		ns[i] = int64(b * 1e9)
	}
	return ns
}()

// histogram is a latency histogram that takes n observations of one
// duration at once (a UDP batch: every reply in it is sent by the same
// sendmmsg) with two atomic adds.
type histogram struct {
	counts [len(latencyBuckets) + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sumNs  atomic.Uint64
}

func (h *histogram) observe(d time.Duration, n uint64) {
	i := 0
	for i < len(latencyBucketsNs) && int64(d) > latencyBucketsNs[i] {
		i++
	}
	h.counts[i].Add(n)
	h.sumNs.Add(uint64(max(d, 0)) * n)
}

// Outcomes of a zone transfer or a NOTIFY: the result label.
const (
	resultOK      = "ok"      // completed (transfer sent or received, NOTIFY answered)
	resultRefused = "refused" // refused by policy (ACL, TSIG, unknown zone)
	resultFailed  = "failed"  // failed on the way (I/O, timeout, bad reply)
)

// Zone transfer kinds: the type label.
const (
	transferAXFR = "axfr"
	transferIXFR = "ixfr"
)

// metrics are the resolver's metrics. The zero value is not usable:
// newMetrics.
type metrics struct {
	queryDesc, latencyDesc *prometheus.Desc

	common   *queryCounts // TCP's and the UDP slow path's
	countsMu sync.Mutex
	counts   []*queryCounts // common and every UDP reader's; guarded by countsMu
	latency  [nProtos]histogram

	rateLimited *prometheus.CounterVec
	rrlDrop     prometheus.Counter
	rrlSlip     prometheus.Counter
	overloaded  prometheus.Counter
	forwarded   prometheus.Counter
	fwdErrors   prometheus.Counter
	transfers   *prometheus.CounterVec
	notifies    *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		queryDesc: prometheus.NewDesc("switchboard_resolver_queries_total",
			"DNS queries answered, by question type (other for types not named), response code and protocol.",
			[]string{"qtype", "rcode", "protocol"}, nil),
		latencyDesc: prometheus.NewDesc("switchboard_resolver_query_duration_seconds",
			"Time from a query's arrival until its answer was handed to the socket, by protocol (UDP: from the batch's recvmmsg to its sendmmsg; TCP: from the parsed query to the written answer).",
			[]string{"protocol"}, nil),
		common: new(queryCounts),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_resolver_rate_limited_total",
			Help: "UDP queries over the response rate limit: dropped, or slipped (answered empty with TC).",
		}, []string{"action"}),
		overloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_resolver_overload_dropped_total",
			Help: "UDP queries dropped unanswered because too many slow-path answers were in progress.",
		}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_resolver_forwarded_total",
			Help: "Exchanges with the upstream resolvers (cache misses; concurrent misses of one name and type share one).",
		}),
		fwdErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_resolver_forward_errors_total",
			Help: "Upstream exchanges that failed on every upstream (answered SERVFAIL).",
		}),
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_resolver_transfers_total",
			Help: "Zone transfers, by type (axfr, ixfr) and result (ok, refused, failed).",
		}, []string{"type", "result"}),
		notifies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_resolver_notifies_total",
			Help: "NOTIFY messages, by result (ok, refused, failed).",
		}, []string{"result"}),
	}
	m.counts = []*queryCounts{m.common}
	m.rrlDrop = m.rateLimited.WithLabelValues("drop")
	m.rrlSlip = m.rateLimited.WithLabelValues("slip")
	for _, t := range []string{transferAXFR, transferIXFR} {
		for _, r := range []string{resultOK, resultRefused, resultFailed} {
			m.transfers.WithLabelValues(t, r)
		}
	}
	for _, r := range []string{resultOK, resultRefused, resultFailed} {
		m.notifies.WithLabelValues(r)
	}
	return m
}

// shared returns the counters of the paths that are not a UDP reader's
// fast path (TCP, the UDP slow path).
func (m *metrics) shared() *queryCounts { return m.common }

// newCounts returns counters of its own for one UDP reader.
func (m *metrics) newCounts() *queryCounts {
	c := new(queryCounts)
	m.countsMu.Lock()
	m.counts = append(m.counts, c)
	m.countsMu.Unlock()
	return c
}

// transfer counts one zone transfer (typ: transferAXFR or transferIXFR;
// result: resultOK, resultRefused or resultFailed).
func (m *metrics) transfer(typ, result string) {
	m.transfers.WithLabelValues(typ, result).Inc()
}

// notify counts one NOTIFY, sent or received (result: resultOK,
// resultRefused or resultFailed).
func (m *metrics) notify(result string) {
	m.notifies.WithLabelValues(result).Inc()
}

// Describe implements prometheus.Collector for the per-query metrics.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.queryDesc
	ch <- m.latencyDesc
}

// Collect implements prometheus.Collector: the query counts summed over
// the readers (only the label sets seen), and the latency histograms.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	var sum [nProtos * nQtypes * nRcodes]uint64
	m.countsMu.Lock()
	for _, c := range m.counts {
		for i := range c {
			sum[i] += c[i].Load()
		}
	}
	m.countsMu.Unlock()
	for i, v := range sum {
		if v == 0 {
			continue
		}
		rc, rest := i%nRcodes, i/nRcodes
		qt, proto := rest%nQtypes, rest/nQtypes
		ch <- prometheus.MustNewConstMetric(m.queryDesc, prometheus.CounterValue, float64(v),
			qtypeNames[qt], rcodeNames[rc], protoNames[proto])
	}
	for p := range m.latency {
		h := &m.latency[p]
		buckets := make(map[float64]uint64, len(latencyBuckets))
		var cum uint64
		for i, b := range latencyBuckets {
			cum += h.counts[i].Load()
			buckets[b] = cum
		}
		cum += h.counts[len(latencyBuckets)].Load()
		ch <- prometheus.MustNewConstHistogram(m.latencyDesc, cum, float64(h.sumNs.Load())/1e9, buckets, protoNames[p])
	}
}

// cacheCollectors export the forwarding cache's own counters.
func cacheCollectors(c *cache) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchboard_resolver_cache_entries",
			Help: "Entries in the forwarding cache (positive and negative).",
		}, func() float64 { return float64(c.entries.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchboard_resolver_cache_capacity",
			Help: "Entries the forwarding cache holds at most (--cache-size, rounded up to whole shards).",
		}, func() float64 { return float64(c.capacity()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "switchboard_resolver_cache_hits_total",
			Help: "Forwarded names answered from the cache.",
		}, func() float64 { return float64(c.hits.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "switchboard_resolver_cache_misses_total",
			Help: "Forwarded names not in the cache (or expired there): asked upstream.",
		}, func() float64 { return float64(c.misses.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "switchboard_resolver_cache_evictions_total",
			Help: "Live cache entries evicted to make room for new ones.",
		}, func() float64 { return float64(c.evictions.Load()) }),
	}
}

// replyRcode returns the response code of a packed reply: the header's four
// bits, with the OPT record's upper eight (RFC 6891 6.1.3) when the reply
// is an empty one with only an OPT, as BADVERS is.
func replyRcode(out []byte) int {
	if len(out) < hdrLen {
		return dns.RcodeServerFailure
	}
	rcode := int(out[3] & 0x0F)
	if binary.BigEndian.Uint16(out[6:]) != 0 || binary.BigEndian.Uint16(out[8:]) != 0 || binary.BigEndian.Uint16(out[10:]) != 1 {
		return rcode
	}
	off := hdrLen
	for range binary.BigEndian.Uint16(out[4:]) {
		n, err := skipName(out, off)
		if err != nil {
			return rcode
		}
		off = n + 4
	}
	// OPT: root name, type, class (UDP size), TTL = extended rcode, ...
	if off+optRRLen <= len(out) && out[off] == 0 && binary.BigEndian.Uint16(out[off+1:]) == dns.TypeOPT {
		rcode |= int(out[off+5]) << 4
	}
	return rcode
}

// acceptTCP is acceptQuery for miekg/dns's TCP server, counting what it
// rejects from the header alone (FORMERR, NOTIMP: the server answers
// those without calling ServeDNS; qtype "other", as the question is not
// read).
func (s *server) acceptTCP(h dns.Header) dns.MsgAcceptAction {
	act := acceptQuery(h)
	switch act {
	case dns.MsgReject:
		s.met.shared().count(protoTCP, 0, dns.RcodeFormatError)
	case dns.MsgRejectNotImplemented:
		s.met.shared().count(protoTCP, 0, dns.RcodeNotImplemented)
	}
	return act
}

// collectors are every metric of the server, to register.
func (s *server) collectors() []prometheus.Collector {
	return append(cacheCollectors(s.cache), s.met, s.met.rateLimited, s.met.overloaded,
		s.met.forwarded, s.met.fwdErrors, s.met.transfers, s.met.notifies, s.mismatched)
}
