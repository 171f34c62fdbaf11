package prober

import (
	"github.com/prometheus/client_golang/prometheus"

	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
)

// metrics exports job results like blackbox_exporter: per scheduled job
// gauges of the last run (success, duration, RTT, ...), and per kind
// counters and duration histograms of every run.
type metrics struct {
	success    *prometheus.GaugeVec
	duration   *prometheus.GaugeVec
	rtt        *prometheus.GaugeVec
	loss       *prometheus.GaugeVec
	certExpiry *prometheus.GaugeVec
	openPorts  *prometheus.GaugeVec
	bandwidth  *prometheus.GaugeVec
	runs       *prometheus.CounterVec
	runTime    *prometheus.HistogramVec
	rttHist    prometheus.Histogram

	checks      *prometheus.CounterVec
	transitions *prometheus.CounterVec
	instanceUp  *prometheus.GaugeVec
	refused     *prometheus.CounterVec

	discoveryDropped *prometheus.CounterVec
	probes           *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	job := []string{"job_id", "kind"}
	m := &metrics{
		success:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "switchboard_prober_probe_success", Help: "Whether the scheduled job's last run succeeded (1) or not (0)."}, job),
		duration:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "switchboard_prober_probe_duration_seconds", Help: "How long the scheduled job's last run took."}, job),
		rtt:        prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "switchboard_prober_ping_rtt_seconds", Help: "The ping job's last RTT summary (stat = min, avg, max, mdev)."}, []string{"job_id", "stat"}),
		loss:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "switchboard_prober_ping_loss_ratio", Help: "The ping job's last loss, 0-1."}, []string{"job_id"}),
		certExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "switchboard_prober_tls_cert_expiry_timestamp_seconds", Help: "The https check's leaf certificate expiry (Unix time)."}, []string{"job_id"}),
		openPorts:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "switchboard_prober_scan_open_ports", Help: "Open ports the scan job last found."}, []string{"job_id"}),
		bandwidth:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "switchboard_prober_bandwidth_bits_per_second", Help: "The bandwidth job's last throughput."}, []string{"job_id"}),
		runs:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_prober_jobs_total", Help: "Jobs run (one-off and scheduled) by kind and result."}, []string{"kind", "result"}),
		runTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "switchboard_prober_job_duration_seconds", Help: "Job run time by kind.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"kind"}),
		rttHist: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "switchboard_prober_ping_reply_rtt_seconds", Help: "RTT of every ping reply.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2.5, 12)}),
		checks:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_prober_health_checks_total", Help: "Instance health checks run by the health loop, by result."}, []string{"result"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_prober_health_transitions_total", Help: "Health changes reported to the registry, by new status."}, []string{"status"}),
		instanceUp:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "switchboard_prober_instance_up", Help: "Whether the health loop considers an instance passing (1) or critical (0)."}, []string{"service", "id"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_prober_health_checks_refused_total",
			Help: "Instance health checks the health loop skipped because the allowlist does not permit the instance's address, by service."}, []string{"service"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_prober_probe_requests_total",
			Help: "Checks run for /probe scrapes, by module and result."}, []string{"module", "result"}),
		discoveryDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_prober_discovery_dropped_total",
			Help: "Discovery datagrams dropped, by reason (unauthenticated, stale, replayed, malformed, overflow)."}, []string{"reason"}),
	}
	reg.MustRegister(m.success, m.duration, m.rtt, m.loss, m.certExpiry, m.openPorts, m.bandwidth, m.runs, m.runTime, m.rttHist,
		m.checks, m.transitions, m.instanceUp, m.refused, m.discoveryDropped, m.probes)
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// observe records one run; per-job gauges only for scheduled jobs (id set),
// so one-off runs do not grow label sets without bound.
func (m *metrics) observe(kind, id string, res *proberv1.JobResult) {
	result := "success"
	if !res.GetSuccess() {
		result = "failure"
	}
	m.runs.WithLabelValues(kind, result).Inc()
	m.runTime.WithLabelValues(kind).Observe(res.GetDuration().AsDuration().Seconds())
	if p := res.GetPing(); p != nil {
		for _, r := range p.GetReplies() {
			if r.GetReceived() {
				m.rttHist.Observe(r.GetRtt().AsDuration().Seconds())
			}
		}
	}
	if id == "" {
		return
	}
	m.success.WithLabelValues(id, kind).Set(b2f(res.GetSuccess()))
	m.duration.WithLabelValues(id, kind).Set(res.GetDuration().AsDuration().Seconds())
	switch {
	case res.GetPing() != nil:
		p := res.GetPing()
		m.loss.WithLabelValues(id).Set(p.GetLossPercent() / 100)
		if p.GetReceived() > 0 {
			m.rtt.WithLabelValues(id, "min").Set(p.GetMin().AsDuration().Seconds())
			m.rtt.WithLabelValues(id, "avg").Set(p.GetAvg().AsDuration().Seconds())
			m.rtt.WithLabelValues(id, "max").Set(p.GetMax().AsDuration().Seconds())
			m.rtt.WithLabelValues(id, "mdev").Set(p.GetMdev().AsDuration().Seconds())
		}
	case res.GetCheck() != nil:
		if e := res.GetCheck().GetCertExpiry(); e != nil {
			m.certExpiry.WithLabelValues(id).Set(float64(e.AsTime().Unix()))
		}
	case res.GetScan() != nil:
		m.openPorts.WithLabelValues(id).Set(float64(res.GetScan().GetOpen()))
	case res.GetBandwidth() != nil:
		m.bandwidth.WithLabelValues(id).Set(res.GetBandwidth().GetBitsPerSecond())
	}
}

// forget drops an unscheduled job's gauges.
func (m *metrics) forget(id string) {
	for _, g := range []*prometheus.GaugeVec{m.success, m.duration} {
		g.DeletePartialMatch(prometheus.Labels{"job_id": id})
	}
	for _, g := range []*prometheus.GaugeVec{m.rtt, m.loss, m.certExpiry, m.openPorts, m.bandwidth} {
		g.DeletePartialMatch(prometheus.Labels{"job_id": id})
	}
}
