package balancer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-net/switchboard/pkg/balance"
)

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

var (
	endpointsDesc = prometheus.NewDesc("switchboard_balancer_endpoints",
		"Endpoints the registry lists for the service (every health).", []string{"service"}, nil)
	healthyDesc = prometheus.NewDesc("switchboard_balancer_endpoints_healthy",
		"Endpoints of the service that may take traffic: not critical in the registry, not ejected, breaker not open.", []string{"service"}, nil)
	ejectedDesc = prometheus.NewDesc("switchboard_balancer_endpoints_ejected",
		"Endpoints of the service ejected by outlier detection.", []string{"service"}, nil)
	breakerDesc = prometheus.NewDesc("switchboard_balancer_breaker_open",
		"Endpoints of the service whose circuit breaker is open.", []string{"service"}, nil)
)

// serviceCollector exports each service's endpoint counts at scrape
// time. A service with no endpoint left (deregistered) has no series.
type serviceCollector struct{ b *Balancer }

// Describe implements prometheus.Collector.
func (c serviceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- endpointsDesc
	ch <- healthyDesc
	ch <- ejectedDesc
	ch <- breakerDesc
}

// Collect implements prometheus.Collector.
func (c serviceCollector) Collect(ch chan<- prometheus.Metric) {
	c.b.mu.RLock()
	list := make([]*svc, 0, len(c.b.services))
	for _, s := range c.b.services {
		list = append(list, s)
	}
	c.b.mu.RUnlock()
	for _, s := range list {
		n := s.counts()
		if n.endpoints == 0 {
			continue
		}
		ch <- prometheus.MustNewConstMetric(endpointsDesc, prometheus.GaugeValue, float64(n.endpoints), s.name)
		ch <- prometheus.MustNewConstMetric(healthyDesc, prometheus.GaugeValue, float64(n.healthy), s.name)
		ch <- prometheus.MustNewConstMetric(ejectedDesc, prometheus.GaugeValue, float64(n.ejected), s.name)
		ch <- prometheus.MustNewConstMetric(breakerDesc, prometheus.GaugeValue, float64(n.breakerOpen), s.name)
	}
}

// endpointCounts is a service's endpoints by state.
type endpointCounts struct{ endpoints, healthy, ejected, breakerOpen int }

func (s *svc) counts() endpointCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n endpointCounts
	for _, es := range s.set.Endpoints() {
		n.endpoints++
		ej, open := es.Ejected(), es.Breaker() == balance.BreakerOpen
		if ej {
			n.ejected++
		}
		if open {
			n.breakerOpen++
		}
		if !ej && !open && es.Endpoint().Health != balance.HealthUnhealthy {
			n.healthy++
		}
	}
	return n
}
