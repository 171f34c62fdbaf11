package registry

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the registry's Prometheus metrics.
type Metrics struct {
	ops           *prometheus.CounterVec
	watches       *prometheus.GaugeVec
	backendErrors *prometheus.CounterVec
}

func newMetrics() *Metrics {
	return &Metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_registry_operations_total",
			Help: "Successful catalog writes by operation (register, deregister, heartbeat, set_health, put_record, delete_record).",
		}, []string{"op"}),
		watches: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchboard_registry_watch_streams",
			Help: "Open Watch (instances) and WatchRecords (records) streams.",
		}, []string{"kind"}),
		backendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_registry_backend_errors_total",
			Help: "Calls that failed in the backend (unreachable, timed out or refused), by operation.",
		}, []string{"op"}),
	}
}

// NewMetrics returns the registry's metrics registered on reg, with gauges
// of the store's catalog (instances, index, staleness).
func NewMetrics(reg prometheus.Registerer, store Store, backend string) *Metrics {
	m := newMetrics()
	labels := prometheus.Labels{"store": backend}
	reg.MustRegister(m.ops, m.watches, m.backendErrors,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchboard_registry_instances", Help: "Registered instances.", ConstLabels: labels,
		}, func() float64 { _, all := store.Snapshot().All(); return float64(len(all)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchboard_registry_catalog_index", Help: "Current catalog index.", ConstLabels: labels,
		}, func() float64 { return float64(store.Snapshot().Index()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchboard_registry_stale", Help: "1 while the backend is unreachable and the catalog is the last one known.", ConstLabels: labels,
		}, func() float64 {
			if store.Snapshot().Stale() {
				return 1
			}
			return 0
		}),
	)
	for _, op := range []string{"register", "deregister", "heartbeat", "set_health", "put_record", "delete_record"} {
		m.ops.WithLabelValues(op)
		m.backendErrors.WithLabelValues(op)
	}
	m.watches.WithLabelValues("instances")
	m.watches.WithLabelValues("records")
	return m
}

func sortStrings(s []string) { slices.Sort(s) }
