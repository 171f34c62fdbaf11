package balancer

import "github.com/prometheus/client_golang/prometheus"

// metrics are the balancer's Prometheus series.
type metrics struct {
	picks    *prometheus.CounterVec
	reports  prometheus.Counter
	watchers prometheus.Gauge
	stale    prometheus.Gauge
	lifted   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		picks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_balancer_picks_total", Help: "Pick calls by result (ok, not_found, unavailable).",
		}, []string{"result"}),
		reports: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_balancer_reports_total", Help: "Load reports accepted.",
		}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_balancer_watch_streams", Help: "Open WatchEndpoints streams.",
		}),
		stale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_balancer_registry_stale", Help: "1 while the registry is unreachable and the last snapshot is served.",
		}),
		lifted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_balancer_ejections_lifted_total", Help: "Outlier ejections ended early because the endpoint's health checks pass again.",
		}),
	}
	reg.MustRegister(m.picks, m.reports, m.watchers, m.stale, m.lifted)
	m.stale.Set(1)
	return m
}
