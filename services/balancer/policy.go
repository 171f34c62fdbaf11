package balancer

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/balance"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
)

// fieldError is bad input in one field of a request, named as in the proto.
type fieldError struct {
	field string
	err   error
}

func (e *fieldError) Error() string { return e.field + ": " + e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }

// protoFields maps pkg/balance's config field names to the Policy fields.
var protoFields = map[string]string{
	"Policy":                      "policy.name",
	"HashOn":                      "policy.hash_on",
	"PanicThresholdPercent":       "policy.panic_threshold_percent",
	"SlowStart":                   "policy.slow_start",
	"Outlier.ConsecutiveFailures": "policy.outlier.consecutive_failures",
	"Outlier.BaseEjection":        "policy.outlier.base_ejection_time",
	"Outlier.MaxEjection":         "policy.outlier.max_ejection_time",
	"Outlier.MaxEjectedPercent":   "policy.outlier.max_ejection_percent",
	"Breaker.FailureThreshold":    "policy.breaker.failure_threshold",
	"Breaker.OpenTime":            "policy.breaker.open_time",
}

// toConfig turns a Policy into a validated balance.Config. Zero fields take
// the documented defaults. Errors are *fieldError values (joined when
// several fields are wrong).
func toConfig(p *balancerv1.Policy) (balance.Config, error) {
	cfg := balance.DefaultConfig()
	if p == nil {
		return cfg, nil
	}
	var errs []error
	dur := func(field string, d *durationpb.Duration, dst *int64) {
		if d == nil {
			return
		}
		if err := d.CheckValid(); err != nil {
			errs = append(errs, &fieldError{field, err})
			return
		}
		if d.AsDuration() < 0 {
			errs = append(errs, &fieldError{field, errors.New("must not be negative")})
			return
		}
		*dst = int64(d.AsDuration())
	}
	if p.Name != "" {
		cfg.Policy = p.Name
	}
	if p.HashOn != "" {
		cfg.HashOn = p.HashOn
	}
	if p.PanicThresholdPercent != 0 {
		if p.PanicThresholdPercent > 100 {
			errs = append(errs, &fieldError{"policy.panic_threshold_percent", fmt.Errorf("%d is over 100", p.PanicThresholdPercent)})
		}
		cfg.PanicThresholdPercent = int(p.PanicThresholdPercent)
	}
	dur("policy.slow_start", p.SlowStart, (*int64)(&cfg.SlowStart))
	if o := p.Outlier; o != nil {
		if o.ConsecutiveFailures != 0 {
			cfg.Outlier.ConsecutiveFailures = int(o.ConsecutiveFailures)
		}
		dur("policy.outlier.base_ejection_time", o.BaseEjectionTime, (*int64)(&cfg.Outlier.BaseEjection))
		dur("policy.outlier.max_ejection_time", o.MaxEjectionTime, (*int64)(&cfg.Outlier.MaxEjection))
		if o.MaxEjectionPercent != 0 {
			if o.MaxEjectionPercent > 100 {
				errs = append(errs, &fieldError{"policy.outlier.max_ejection_percent", fmt.Errorf("%d is over 100", o.MaxEjectionPercent)})
			}
			cfg.Outlier.MaxEjectedPercent = int(o.MaxEjectionPercent)
		}
	}
	if br := p.Breaker; br != nil {
		cfg.Breaker.FailureThreshold = int(br.FailureThreshold)
		dur("policy.breaker.open_time", br.OpenTime, (*int64)(&cfg.Breaker.OpenTime))
	}
	if len(errs) == 0 {
		if err := cfg.Validate(); err != nil {
			errs = append(errs, renameFields(err)...)
		}
	}
	if len(errs) > 0 {
		return cfg, errors.Join(errs...)
	}
	return cfg, nil
}

// renameFields turns pkg/balance's *ConfigError values into *fieldError
// values named after the proto fields.
func renameFields(err error) []error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	out := make([]error, 0, len(list))
	for _, e := range list {
		var ce *balance.ConfigError
		if errors.As(e, &ce) {
			name, ok := protoFields[ce.Field]
			if !ok {
				name = "policy"
			}
			out = append(out, &fieldError{name, ce.Err})
			continue
		}
		out = append(out, &fieldError{"policy", e})
	}
	return out
}

// fromConfig returns the Policy a Config stands for, defaults filled in.
func fromConfig(c balance.Config) *balancerv1.Policy {
	return &balancerv1.Policy{
		Name:                  c.Policy,
		HashOn:                c.HashOn,
		PanicThresholdPercent: uint32(c.PanicThresholdPercent),
		SlowStart:             durationpb.New(c.SlowStart),
		Outlier: &balancerv1.OutlierDetection{
			ConsecutiveFailures: uint32(c.Outlier.ConsecutiveFailures),
			BaseEjectionTime:    durationpb.New(c.Outlier.BaseEjection),
			MaxEjectionTime:     durationpb.New(c.Outlier.MaxEjection),
			MaxEjectionPercent:  uint32(c.Outlier.MaxEjectedPercent),
		},
		Breaker: &balancerv1.CircuitBreaker{
			FailureThreshold: uint32(c.Breaker.FailureThreshold),
			OpenTime:         durationpb.New(c.Breaker.OpenTime),
		},
	}
}

// policyStore is the local cache of the registry's policies: one JSON
// file, rewritten atomically (temp file, fsync, rename) whenever the
// registry's set changes. It only serves start-up while the registry is
// unreachable; the registry's policy set replaces it as soon as it arrives.
type policyStore struct {
	path string
	mu   sync.Mutex
	m    map[string]*balancerv1.Policy
}

func openPolicyStore(path string) (*policyStore, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("policy store: %w", err)
	}
	s := &policyStore{path: path, m: map[string]*balancerv1.Policy{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("policy store: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("policy store %s: %w", path, err)
	}
	for name, r := range raw {
		p := &balancerv1.Policy{}
		if err := protojson.Unmarshal(r, p); err != nil {
			return nil, fmt.Errorf("policy store %s: service %q: %w", path, name, err)
		}
		s.m[name] = p
	}
	return s, nil
}

// get returns a service's stored policy, or nil.
func (s *policyStore) get(service string) *balancerv1.Policy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[service]
}

// all returns a copy of every cached policy.
func (s *policyStore) all() map[string]*balancerv1.Policy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m)
}

// replace makes m the cached set and rewrites the file when it changed.
// The set in memory is m even when the write fails.
func (s *policyStore) replace(m map[string]*balancerv1.Policy) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if maps.EqualFunc(s.m, m, func(a, b *balancerv1.Policy) bool { return proto.Equal(a, b) }) {
		return nil
	}
	s.m = maps.Clone(m)
	return s.writeLocked()
}

func (s *policyStore) writeLocked() error {
	names := make([]string, 0, len(s.m))
	for n := range s.m {
		names = append(names, n)
	}
	sort.Strings(names)
	raw := make(map[string]json.RawMessage, len(s.m))
	for _, n := range names {
		b, err := protojson.Marshal(s.m[n])
		if err != nil {
			return fmt.Errorf("policy store: %w", err)
		}
		raw[n] = b
	}
	data, err := json.MarshalIndent(raw, "", "  ")
	if err != nil {
		return fmt.Errorf("policy store: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".policies-*.json")
	if err != nil {
		return fmt.Errorf("policy store: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("policy store: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("policy store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("policy store: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return fmt.Errorf("policy store: %w", err)
	}
	return nil
}
