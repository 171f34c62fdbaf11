// Package dashboard serves Switchboard's live web dashboard: one
// self-contained page (inline CSS, vanilla JavaScript, an inline SVG chart;
// nothing fetched from elsewhere) showing services, their instances and
// health, each backend's share of traffic, and probe round-trip times over
// time. The page polls a JSON API beside it and keeps the RTT history itself.
//
// Mount it on an admin mux with Register (or Handler); feed it with any
// Source, usually NewGRPCSource over the registry and prober clients plus
// the edge's per-backend counters.
package dashboard

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"net/http"
	"time"
)

// Path is where the page is served; the API is under Path + "/api/".
const Path = "/dashboard"

// StatePath is the JSON API the page polls.
const StatePath = Path + "/api/state"

// stateTimeout bounds how long one API request waits for its Source.
const stateTimeout = 3 * time.Second

// State is everything the page shows at one moment.
type State struct {
	// Services with their instances, sorted by name.
	Services []Service `json:"services"`
	// Probes are the latest results of the prober's RTT-bearing jobs.
	Probes []Probe `json:"probes"`
	// At is when the state was read.
	At time.Time `json:"at"`
	// Errors lists parts that could not be read (the rest is still shown).
	Errors []string `json:"errors,omitempty"`
}

// Service is one service and its instances.
type Service struct {
	// Name is the service name.
	Name string `json:"name"`
	// Instances are the service's instances, sorted by id.
	Instances []Instance `json:"instances"`
}

// Health values an Instance reports.
const (
	HealthPassing  = "passing"
	HealthWarning  = "warning"
	HealthCritical = "critical"
	HealthUnknown  = "unknown"
)

// Instance is one backend of a service.
type Instance struct {
	// ID is the instance id.
	ID string `json:"id"`
	// Addr is host:port.
	Addr string `json:"addr"`
	// Health is one of the Health* values.
	Health string `json:"health"`
	// Share is the instance's fraction (0-1) of the service's requests
	// through the edge since it started.
	Share float64 `json:"share"`
	// Requests is how many requests the edge sent to the instance.
	Requests uint64 `json:"requests"`
}

// Probe is the latest result of one prober job.
type Probe struct {
	// Name is the job id.
	Name string `json:"name"`
	// Target is what the job probes.
	Target string `json:"target"`
	// RTTms is the round-trip time in milliseconds (mean for a ping).
	RTTms float64 `json:"rtt_ms"`
	// OK says the probe succeeded.
	OK bool `json:"ok"`
	// At is when the result was taken.
	At time.Time `json:"at"`
}

// Source reads the current state.
type Source interface {
	State(ctx context.Context) (*State, error)
}

// SourceFunc adapts a function to a Source.
type SourceFunc func(ctx context.Context) (*State, error)

// State calls f.
func (f SourceFunc) State(ctx context.Context) (*State, error) { return f(ctx) }

//go:embed page.html
var page []byte

// Handler serves the page at Path and its API at StatePath (full request
// paths, so mount it at both Path and Path+"/", as Register does).
func Handler(src Source) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+Path, servePage)
	mux.HandleFunc("GET "+Path+"/{$}", servePage)
	mux.HandleFunc("GET "+StatePath, func(w http.ResponseWriter, r *http.Request) {
		serveState(w, r, src)
	})
	return mux
}

// Register mounts Handler(src) on mux at Path and below.
func Register(mux *http.ServeMux, src Source) {
	h := Handler(src)
	mux.Handle(Path, h)
	mux.Handle(Path+"/", h)
}

func servePage(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	// Everything is inline; nothing may load from elsewhere.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(page)
}

func serveState(w http.ResponseWriter, r *http.Request, src Source) {
	ctx, cancel := context.WithTimeout(r.Context(), stateTimeout)
	defer cancel()
	st, err := src.State(ctx)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if err == nil && st == nil {
		err = errors.New("no state")
	}
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	if st.At.IsZero() {
		st.At = time.Now()
	}
	if st.Services == nil {
		st.Services = []Service{}
	}
	if st.Probes == nil {
		st.Probes = []Probe{}
	}
	for i := range st.Services {
		if st.Services[i].Instances == nil {
			st.Services[i].Instances = []Instance{}
		}
	}
	_ = json.NewEncoder(w).Encode(st)
}
