package edge

import (
	"io"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

var durationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// metrics are the edge's Prometheus series.
type metrics struct {
	reqs        *prometheus.CounterVec
	dur         *prometheus.HistogramVec
	up          *prometheus.HistogramVec
	beReqs      *prometheus.CounterVec
	beFails     *prometheus.CounterVec
	beLat       *prometheus.HistogramVec
	beBytes     *prometheus.CounterVec
	retries     prometheus.Counter
	tryTimeouts prometheus.Counter
	hedges      prometheus.Counter
	dropped     prometheus.Counter
	// reportsDropped mirrors dropped for the balancer watcher's log.
	reportsDropped atomic.Uint64
	tcpConns       *prometheus.CounterVec
	udpFlows       *prometheus.CounterVec
	wireStreams    prometheus.Counter
	limited        prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		reqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_edge_http_requests_total", Help: "HTTP requests by route and status class."},
			[]string{"route", "code"}),
		dur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "switchboard_edge_http_request_duration_seconds", Help: "Time from the request head to the end of the response (body streaming included), by route.",
			Buckets: durationBuckets},
			[]string{"route"}),
		up: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "switchboard_edge_http_upstream_latency_seconds", Help: "Time from sending the request to the first byte of the backend's answer (every try together), by route.",
			Buckets: durationBuckets},
			[]string{"route"}),
		beReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_edge_backend_requests_total", Help: "Requests and connections sent to each backend."},
			[]string{"service", "backend"}),
		beFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_edge_backend_failures_total", Help: "Failed requests and connections per backend."},
			[]string{"service", "backend"}),
		beLat: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "switchboard_edge_backend_upstream_latency_seconds", Help: "Per try: time from sending the request to the first byte of the backend's answer (HTTP), or the connect time (TCP), per backend.",
			Buckets: durationBuckets},
			[]string{"service", "backend"}),
		beBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_edge_backend_bytes_total", Help: "Bytes sent to and received from each backend, by direction (sent, received): on the wire for HTTP/1.1, upgraded, TCP and wire connections, UDP payloads; bodies for HTTP/2 and gRPC."},
			[]string{"service", "backend", "direction"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_edge_http_retries_total", Help: "Tries after a request's first (retries and hedges), each on a backend it has not tried when there is one."}),
		tryTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_edge_http_try_timeouts_total", Help: "Tries that got no response head within --try-timeout (counted against their backend)."}),
		hedges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_edge_http_hedges_total", Help: "Hedged tries: started on a per-try timeout while the late try went on (--hedge)."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_edge_reports_dropped_total", Help: "Load reports dropped: the queue was full, or the balancer did not take them (unreachable)."}),
		tcpConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_edge_tcp_connections_total", Help: "TCP connections proxied, by listener."},
			[]string{"listener"}),
		udpFlows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_edge_udp_flows_total", Help: "UDP flows created, by listener."},
			[]string{"listener"}),
		wireStreams: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_edge_wire_streams_total", Help: "Wire streams tunnelled."}),
		limited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_edge_http_rate_limited_total", Help: "Requests refused by the per-client rate limit."}),
	}
	if reg != nil {
		reg.MustRegister(m.reqs, m.dur, m.up, m.beReqs, m.beFails, m.beLat, m.beBytes, m.retries, m.tryTimeouts, m.hedges, m.dropped, m.tcpConns, m.udpFlows, m.wireStreams, m.limited)
	}
	return m
}

func (m *metrics) routeSeries(r *route) {
	codes := [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}
	for i, c := range codes {
		r.mCode[i] = m.reqs.WithLabelValues(r.name, c)
	}
	r.mDur = m.dur.WithLabelValues(r.name)
	r.mUp = m.up.WithLabelValues(r.name)
}

// backendSeries resolves b's series once, when b is created, so the
// request path counts without looking labels up (or allocating).
func (m *metrics) backendSeries(b *backend) {
	b.mReq, b.mFail = m.beReqs.WithLabelValues(b.svc, b.id), m.beFails.WithLabelValues(b.svc, b.id)
	b.mLat = m.beLat.WithLabelValues(b.svc, b.id)
	b.mSent, b.mRecv = m.beBytes.WithLabelValues(b.svc, b.id, "sent"), m.beBytes.WithLabelValues(b.svc, b.id, "received")
}

// forgetBackend drops the series of a backend that went away, so their
// number stays bounded by the backends the edge has.
func (m *metrics) forgetBackend(b *backend) {
	m.beReqs.DeleteLabelValues(b.svc, b.id)
	m.beFails.DeleteLabelValues(b.svc, b.id)
	m.beLat.DeleteLabelValues(b.svc, b.id)
	m.beBytes.DeleteLabelValues(b.svc, b.id, "sent")
	m.beBytes.DeleteLabelValues(b.svc, b.id, "received")
}

// backendCollector exports every backend's state as the edge sees it at
// scrape time: up (in the endpoint set, healthy, not ejected, breaker not
// open) and active requests. Series come and go with the backends.
type backendCollector struct{ u *upstreams }

var (
	backendUpDesc = prometheus.NewDesc("switchboard_edge_backend_up",
		"1 while the backend may be picked: in the endpoint set, not disabled, healthy, not ejected and its breaker not open; else 0.",
		[]string{"service", "backend"}, nil)
	backendActiveDesc = prometheus.NewDesc("switchboard_edge_backend_active_requests",
		"Requests (HTTP tries, TCP connections, wire streams) in flight to the backend.",
		[]string{"service", "backend"}, nil)
)

// Describe implements prometheus.Collector.
func (c backendCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- backendUpDesc
	ch <- backendActiveDesc
}

// Collect implements prometheus.Collector.
func (c backendCollector) Collect(ch chan<- prometheus.Metric) {
	for _, bi := range c.u.backends("") {
		up := 0.0
		if bi.Healthy && !bi.Disabled {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(backendUpDesc, prometheus.GaugeValue, up, bi.Service, bi.ID)
		ch <- prometheus.MustNewConstMetric(backendActiveDesc, prometheus.GaugeValue, float64(bi.Active), bi.Service, bi.ID)
	}
}

// countReader counts the bytes read from a backend connection.
type countReader struct {
	r io.Reader
	c prometheus.Counter
}

func (r *countReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.c.Add(float64(n))
	}
	return n, err
}

// countWriter counts the bytes written to a backend connection.
type countWriter struct {
	w io.Writer
	c prometheus.Counter
}

func (w *countWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if n > 0 {
		w.c.Add(float64(n))
	}
	return n, err
}

// countJoined adds what a joined (TCP, upgraded, wire) connection moved:
// toBackend sent, fromBackend received.
func (b *backend) countJoined(toBackend, fromBackend int64) {
	if toBackend > 0 {
		b.mSent.Add(float64(toBackend))
	}
	if fromBackend > 0 {
		b.mRecv.Add(float64(fromBackend))
	}
}

func statusClass(code int) int {
	if c := code / 100; c >= 1 && c <= 5 {
		return c
	}
	return 0
}
