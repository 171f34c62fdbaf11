package balance

import (
	"errors"
	"fmt"
	"time"
)

// Config is one service's balancing configuration. Start from
// DefaultConfig and change what you need: in the zero value every optional
// feature (panic mode, slow start, outlier detection, breaker) is off.
type Config struct {
	// Policy is a registered policy name (see Names); "" means round_robin.
	Policy string
	// HashOn says where consistent_hash takes its key: "client_ip",
	// "header:<Name>" or "cookie:<name>" (see ParseHashOn). Callers hash
	// the request with HashOn.Hash and pass the result in PickInfo.
	HashOn string
	// HashTableSize is the Maglev table size for consistent_hash: a prime,
	// at least 7, ideally >= 100 × endpoints. 0 means 65537.
	HashTableSize uint32
	// PanicThresholdPercent: when fewer than this percentage of endpoints
	// can take traffic, picks go to all endpoints (healthy or not), as in
	// Envoy. 0 disables panic mode. Default 50.
	PanicThresholdPercent int
	// SlowStart ramps a newly added (or newly healthy again) endpoint's
	// weight from SlowStartMinPercent to 100% over this window. 0 disables.
	SlowStart time.Duration
	// SlowStartMinPercent is the weight a ramping endpoint starts at, 1..100.
	// Default 10.
	SlowStartMinPercent int
	// Outlier is passive outlier detection.
	Outlier OutlierConfig
	// Breaker is the per-endpoint circuit breaker.
	Breaker BreakerConfig
	// LatencyDecay is p2c's EWMA time constant: how fast the latency
	// estimate forgets. 0 means 10s.
	LatencyDecay time.Duration
	// LeastConnChoices is how many endpoints least_conn compares per pick,
	// a window starting at a rotating position. 0 means 8. A value at or
	// above the endpoint count makes the choice exact (O(n) per pick).
	LeastConnChoices int
}

// OutlierConfig configures passive outlier detection: an endpoint that
// fails ConsecutiveFailures requests in a row is ejected for BaseEjection,
// doubled at each repeated ejection up to MaxEjection; no more than
// MaxEjectedPercent of the endpoints are ejected at once (but always at
// least one may be).
type OutlierConfig struct {
	ConsecutiveFailures int           // 0 disables; default 5
	BaseEjection        time.Duration // default 30s
	MaxEjection         time.Duration // default 5m
	MaxEjectedPercent   int           // 0..100; default 50
}

// BreakerConfig configures the per-endpoint circuit breaker: after
// FailureThreshold consecutive failures it opens (no traffic) for OpenTime,
// then goes half-open and admits HalfOpenRequests trial requests at a time;
// that many successes close it, any failure opens it again.
type BreakerConfig struct {
	FailureThreshold int           // 0 disables (the default)
	OpenTime         time.Duration // default 10s
	HalfOpenRequests int           // default 1
}

// DefaultConfig returns the defaults: round_robin, client_ip hashing, a
// 65537-slot Maglev table, panic threshold 50%, outlier detection after 5
// consecutive failures (30s doubling to 5m, at most 50% ejected), breaker
// off, slow start off.
func DefaultConfig() Config {
	return Config{
		Policy:                RoundRobinName,
		HashOn:                "client_ip",
		HashTableSize:         DefaultHashTableSize,
		PanicThresholdPercent: 50,
		SlowStartMinPercent:   10,
		Outlier: OutlierConfig{
			ConsecutiveFailures: 5,
			BaseEjection:        30 * time.Second,
			MaxEjection:         5 * time.Minute,
			MaxEjectedPercent:   50,
		},
		Breaker: BreakerConfig{
			OpenTime:         10 * time.Second,
			HalfOpenRequests: 1,
		},
		LatencyDecay: 10 * time.Second,
	}
}

// DefaultHashTableSize is the default Maglev table size (a prime).
const DefaultHashTableSize = 65537

// maxHashTableSize bounds the Maglev table (memory is 4 bytes a slot).
const maxHashTableSize = 1 << 24

// ConfigError reports an invalid configuration field. The gRPC layer maps
// it to InvalidArgument naming Field.
type ConfigError struct {
	Field string // dotted field name, e.g. "Outlier.MaxEjectedPercent"
	Err   error
}

func (e *ConfigError) Error() string { return "balance: config " + e.Field + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *ConfigError) Unwrap() error { return e.Err }

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Validate checks c and returns every problem found, each a *ConfigError
// naming its field (joined with errors.Join).
func (c *Config) Validate() error {
	var errs []error
	if c.Policy != "" {
		if _, ok := Lookup(c.Policy); !ok {
			errs = append(errs, fieldErr("Policy", "unknown policy %q (known: %v)", c.Policy, Names()))
		}
	}
	if c.HashOn != "" {
		if _, err := ParseHashOn(c.HashOn); err != nil {
			errs = append(errs, &ConfigError{Field: "HashOn", Err: err})
		}
	}
	if n := c.HashTableSize; n != 0 && (n < 7 || n > maxHashTableSize || !isPrime(n)) {
		errs = append(errs, fieldErr("HashTableSize", "%d is not a prime in [7, %d]", n, maxHashTableSize))
	}
	if p := c.PanicThresholdPercent; p < 0 || p > 100 {
		errs = append(errs, fieldErr("PanicThresholdPercent", "%d is outside 0..100", p))
	}
	if c.SlowStart < 0 {
		errs = append(errs, fieldErr("SlowStart", "negative duration %v", c.SlowStart))
	}
	if c.SlowStart > 0 {
		if p := c.SlowStartMinPercent; p < 1 || p > 100 {
			errs = append(errs, fieldErr("SlowStartMinPercent", "%d is outside 1..100", p))
		}
	}
	o := &c.Outlier
	if o.ConsecutiveFailures < 0 {
		errs = append(errs, fieldErr("Outlier.ConsecutiveFailures", "negative count %d", o.ConsecutiveFailures))
	}
	if o.ConsecutiveFailures > 0 {
		if o.BaseEjection <= 0 {
			errs = append(errs, fieldErr("Outlier.BaseEjection", "must be positive, got %v", o.BaseEjection))
		}
		if o.MaxEjection < o.BaseEjection {
			errs = append(errs, fieldErr("Outlier.MaxEjection", "%v is below BaseEjection %v", o.MaxEjection, o.BaseEjection))
		}
		if p := o.MaxEjectedPercent; p < 0 || p > 100 {
			errs = append(errs, fieldErr("Outlier.MaxEjectedPercent", "%d is outside 0..100", p))
		}
	}
	b := &c.Breaker
	if b.FailureThreshold < 0 {
		errs = append(errs, fieldErr("Breaker.FailureThreshold", "negative count %d", b.FailureThreshold))
	}
	if b.FailureThreshold > 0 {
		if b.OpenTime <= 0 {
			errs = append(errs, fieldErr("Breaker.OpenTime", "must be positive, got %v", b.OpenTime))
		}
		if b.HalfOpenRequests < 1 {
			errs = append(errs, fieldErr("Breaker.HalfOpenRequests", "must be at least 1, got %d", b.HalfOpenRequests))
		}
	}
	if c.LatencyDecay < 0 {
		errs = append(errs, fieldErr("LatencyDecay", "negative duration %v", c.LatencyDecay))
	}
	if k := c.LeastConnChoices; k < 0 || k == 1 {
		errs = append(errs, fieldErr("LeastConnChoices", "must be 0 (default) or at least 2, got %d", k))
	}
	return errors.Join(errs...)
}

// withDefaults fills the fields whose zero value means "use the default"
// (not the ones whose zero value disables a feature).
func (c Config) withDefaults() Config {
	if c.Policy == "" {
		c.Policy = RoundRobinName
	}
	if c.HashTableSize == 0 {
		c.HashTableSize = DefaultHashTableSize
	}
	if c.LatencyDecay == 0 {
		c.LatencyDecay = 10 * time.Second
	}
	return c
}

func isPrime(n uint32) bool {
	if n < 2 {
		return false
	}
	if n%2 == 0 {
		return n == 2
	}
	for d := uint32(3); d*d <= n; d += 2 {
		if n%d == 0 {
			return false
		}
	}
	return true
}
