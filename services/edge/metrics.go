package edge

import (
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
			Name: "edge_http_requests_total", Help: "HTTP requests by route and status class."},
			[]string{"route", "code"}),
		dur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edge_http_request_duration_seconds", Help: "Time from the request head to the end of the response (body streaming included), by route.",
			Buckets: durationBuckets},
			[]string{"route"}),
		up: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edge_http_upstream_latency_seconds", Help: "Time from sending the request to the first byte of the backend's answer (every try together), by route.",
			Buckets: durationBuckets},
			[]string{"route"}),
		beReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_backend_requests_total", Help: "Requests and connections sent to each backend."},
			[]string{"service", "backend"}),
		beFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_backend_failures_total", Help: "Failed requests and connections per backend."},
			[]string{"service", "backend"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_http_retries_total", Help: "Tries after a request's first (retries and hedges), each on a backend it has not tried when there is one."}),
		tryTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_http_try_timeouts_total", Help: "Tries that got no response head within --try-timeout (counted against their backend)."}),
		hedges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_http_hedges_total", Help: "Hedged tries: started on a per-try timeout while the late try went on (--hedge)."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_reports_dropped_total", Help: "Load reports dropped: the queue was full, or the balancer did not take them (unreachable)."}),
		tcpConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_tcp_connections_total", Help: "TCP connections proxied, by listener."},
			[]string{"listener"}),
		udpFlows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_udp_flows_total", Help: "UDP flows created, by listener."},
			[]string{"listener"}),
		wireStreams: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_wire_streams_total", Help: "Wire streams tunnelled."}),
		limited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_http_rate_limited_total", Help: "Requests refused by the per-client rate limit."}),
	}
	if reg != nil {
		reg.MustRegister(m.reqs, m.dur, m.up, m.beReqs, m.beFails, m.retries, m.tryTimeouts, m.hedges, m.dropped, m.tcpConns, m.udpFlows, m.wireStreams, m.limited)
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

func (m *metrics) backendCounters(b *backend) (req, fail prometheus.Counter) {
	return m.beReqs.WithLabelValues(b.svc, b.id), m.beFails.WithLabelValues(b.svc, b.id)
}

func (m *metrics) forgetBackend(b *backend) {
	m.beReqs.DeleteLabelValues(b.svc, b.id)
	m.beFails.DeleteLabelValues(b.svc, b.id)
}

func statusClass(code int) int {
	if c := code / 100; c >= 1 && c <= 5 {
		return c
	}
	return 0
}
