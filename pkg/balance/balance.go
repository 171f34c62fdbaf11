package balance

import (
	"errors"
	"sync/atomic"
	"time"
)

// Errors returned by Set.Pick. Callers tell "nothing configured" from
// "nothing usable right now" with errors.Is.
var (
	// ErrNoEndpoint means the set has no endpoints at all.
	ErrNoEndpoint = errors.New("balance: no endpoints")
	// ErrNoHealthy means endpoints exist but none can take traffic: all are
	// unhealthy, ejected or behind an open breaker, and the panic threshold
	// is disabled.
	ErrNoHealthy = errors.New("balance: no healthy endpoints")
)

// Health is what the registry or the prober says about an endpoint.
// The zero value, HealthUnknown, is treated as healthy so that endpoints
// built without health information still take traffic.
type Health uint8

// Health values.
const (
	HealthUnknown   Health = iota // no information: treated as healthy
	HealthHealthy                 // passing its checks
	HealthUnhealthy               // failing its checks: skipped unless in panic mode
)

// String returns the lower-case name of h.
func (h Health) String() string {
	switch h {
	case HealthUnknown:
		return "unknown"
	case HealthHealthy:
		return "healthy"
	case HealthUnhealthy:
		return "unhealthy"
	}
	return "invalid"
}

// Endpoint describes one backend of a service as the control plane sees it.
// It is plain data: Set.Update copies it.
type Endpoint struct {
	// ID identifies the endpoint across updates. Live state (outstanding
	// requests, latency, ejection, breaker) is keyed by ID, so an endpoint
	// that keeps its ID keeps its state. Consistent hashing also places
	// endpoints by ID, so every data plane builds the same table.
	ID string
	// Addr is where to send traffic (host:port). Not interpreted here.
	Addr string
	// Weight is the relative share of traffic; 0 means 1.
	Weight uint32
	// Zone is informational (locality); not used by the built-in policies.
	Zone string
	// Health is the registry's or prober's verdict.
	Health Health
	// AddedAt is when the endpoint came up; slow start ramps from it.
	// Zero means "when the Set first saw it" (endpoints present in the
	// first Update are not ramped).
	AddedAt time.Time
}

// weight returns the configured weight with 0 read as 1.
func (e *Endpoint) weight() float64 {
	if e.Weight == 0 {
		return 1
	}
	return float64(e.Weight)
}

// PickInfo carries what a policy may use to choose. The zero value is a
// valid pick without a hash key.
type PickInfo struct {
	// Hash is the request's affinity key, already hashed with HashString,
	// HashBytes, HashAddr or HashOn.Hash so that every process agrees.
	// Only consistent_hash uses it.
	Hash uint64
	// HasHash reports whether Hash is set. Without it consistent_hash
	// picks at random.
	HasHash bool
	// Attempt is set by Set.Pick: 0 for the first try, then 1, 2, ... when
	// the chosen endpoint could not admit the request (half-open breaker
	// busy, ejected since the snapshot was built). Policies with state per
	// call ignore it; consistent_hash uses it to probe another slot.
	Attempt int
}

// Picker chooses one endpoint. A Picker is an immutable snapshot built by a
// Builder; Pick must be safe for concurrent use, must not block and should
// not allocate.
type Picker interface {
	Pick(info PickInfo) (*EndpointState, error)
}

// BuildInfo is what a Builder gets: the endpoints that may be picked in this
// snapshot, with their effective weights.
type BuildInfo struct {
	// Endpoints to choose from, never empty. The slice belongs to the
	// picker; Builders may keep it.
	Endpoints []*EndpointState
	// Weights holds each endpoint's effective weight (> 0) for this
	// snapshot: configured weight times the slow-start ramp.
	Weights []float64
	// Panic is true when too few endpoints are healthy and the set routes
	// to all of them; pickers then skip their own admission checks.
	Panic bool
	// Config is the set's configuration (read-only).
	Config *Config
	// Rand is the set's random source, safe for concurrent use.
	Rand *Rand
	// Clock is a coarse clock: the time of the set's last Update, Done or
	// Refresh, read with one atomic load. Pickers may call it per pick.
	Clock Clock

	now *atomic.Int64 // what Clock reads, for the built-in policies
}

// Builder makes a Picker for one snapshot of endpoints. It is called with
// the set's lock held, never concurrently for one set.
type Builder func(BuildInfo) Picker

// Outcome is how a request to an endpoint ended, as fed back by Done.
type Outcome uint8

// Outcomes.
const (
	// Success: the endpoint answered (any status that is not its fault).
	Success Outcome = iota
	// Failure: the endpoint's fault — refused, reset, timed out, 5xx.
	// Counts toward outlier ejection and the breaker.
	Failure
	// Ignore: the request did not test the endpoint (the client gave up,
	// a local error). Only releases the outstanding count.
	Ignore
)
