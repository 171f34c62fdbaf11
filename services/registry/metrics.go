package registry

import (
	"slices"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-net/switchboard/services/registry/catalog"
)

// Metrics are the registry's Prometheus metrics. They are also the store's
// catalog.Observer: the backend's reachability and its restores.
type Metrics struct {
	ops           *prometheus.CounterVec
	watches       *prometheus.GaugeVec
	backendErrors *prometheus.CounterVec
	watchResets   prometheus.Counter

	backendUp       prometheus.Gauge
	restoreDuration prometheus.Histogram
	restoredInsts   prometheus.Counter
	restoredRecs    prometheus.Counter
	restoreFailures prometheus.Counter

	store atomic.Pointer[Store] // for the catalog gauges, once open
}

var _ catalog.Observer = (*Metrics)(nil)

func newMetrics(backend string) *Metrics {
	labels := prometheus.Labels{"store": backend}
	return &Metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_registry_operations_total",
			Help: "Successful catalog writes by operation (register, deregister, heartbeat, set_health, put_record, delete_record, put_config, delete_config).",
		}, []string{"op"}),
		watches: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchboard_registry_watch_streams",
			Help: "Open Watch (instances), WatchRecords (records) and WatchConfig (config) streams.",
		}, []string{"kind"}),
		backendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_registry_backend_errors_total",
			Help: "Calls that failed in the backend (unreachable, timed out or refused), by operation.",
		}, []string{"op"}),
		watchResets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_registry_watch_resets_total",
			Help: "Fresh snapshots sent to incremental Watch streams whose pending changes had grown as large as a snapshot (slow readers).",
		}),
		backendUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_registry_backend_up", Help: "1 while the backend answers (for Consul and etcd: reachable and restored after a loss), else 0.", ConstLabels: labels,
		}),
		restoreDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "switchboard_registry_restore_duration_seconds", Help: "Time from the backend's return after a loss until the registry had put back what it lost.", ConstLabels: labels,
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120},
		}),
		restoredInsts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_registry_restored_instances_total", Help: "Instances the registry put back after the backend lost them.", ConstLabels: labels,
		}),
		restoredRecs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_registry_restored_records_total", Help: "DNS records the registry put back after the backend lost them.", ConstLabels: labels,
		}),
		restoreFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_registry_restore_failures_total", Help: "Instances and records the backend refused to take back in a restore (tried again at the next one).", ConstLabels: labels,
		}),
	}
}

// NewMetrics returns the registry's metrics for the named backend,
// registered on reg. Pass them to the store as its observer, then
// SetStore once it is open for the gauges of its catalog (instances,
// index, staleness).
func NewMetrics(reg prometheus.Registerer, backend string) *Metrics {
	m := newMetrics(backend)
	labels := prometheus.Labels{"store": backend}
	snap := func() *catalog.Snapshot {
		if s := m.store.Load(); s != nil {
			return (*s).Snapshot()
		}
		return nil
	}
	reg.MustRegister(m.ops, m.watches, m.backendErrors, m.watchResets,
		m.backendUp, m.restoreDuration, m.restoredInsts, m.restoredRecs, m.restoreFailures,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchboard_registry_instances", Help: "Registered instances.", ConstLabels: labels,
		}, func() float64 {
			if s := snap(); s != nil {
				_, all := s.All()
				return float64(len(all))
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchboard_registry_catalog_index", Help: "Current catalog index.", ConstLabels: labels,
		}, func() float64 {
			if s := snap(); s != nil {
				return float64(s.Index())
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchboard_registry_stale", Help: "1 while the backend is unreachable and the catalog is the last one known.", ConstLabels: labels,
		}, func() float64 {
			if s := snap(); s == nil || s.Stale() {
				return 1
			}
			return 0
		}),
	)
	for _, op := range []string{"register", "deregister", "heartbeat", "set_health", "put_record", "delete_record", "put_config", "delete_config"} {
		m.ops.WithLabelValues(op)
		m.backendErrors.WithLabelValues(op)
	}
	m.watches.WithLabelValues("instances")
	m.watches.WithLabelValues("records")
	m.watches.WithLabelValues("config")
	return m
}

// SetStore gives the catalog gauges their store.
func (m *Metrics) SetStore(s Store) { m.store.Store(&s) }

// BackendUp sets switchboard_registry_backend_up.
func (m *Metrics) BackendUp(up bool) {
	if up {
		m.backendUp.Set(1)
	} else {
		m.backendUp.Set(0)
	}
}

// Restored counts a finished restore.
func (m *Metrics) Restored(r catalog.Restore) {
	m.restoreDuration.Observe(r.Took.Seconds())
	m.restoredInsts.Add(float64(r.Instances))
	m.restoredRecs.Add(float64(r.Records))
	m.restoreFailures.Add(float64(r.Failed))
}

func sortStrings(s []string) { slices.Sort(s) }
