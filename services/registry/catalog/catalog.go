// Package catalog is the registry's data model shared by every backend:
// validation and defaults of instances and DNS records, the health rules,
// the errors backends return, and Hub, the immutable catalog snapshots that
// one backend watch fans out to any number of gRPC watchers.
package catalog

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// Errors backends return (wrapped with context). The gRPC layer maps them to
// status codes.
var (
	// ErrNotFound: the instance or record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrUnavailable: the backend cannot be reached.
	ErrUnavailable = errors.New("backend unavailable")
	// ErrFailedPrecondition: the call does not fit the instance (for
	// example a Heartbeat for an instance without a TTL check).
	ErrFailedPrecondition = errors.New("failed precondition")
)

// FieldError is bad input in one named field ("instance.port").
type FieldError struct {
	// Field names the offending field, as in the request ("instance.port").
	Field string
	// Reason says what is wrong with it.
	Reason string
}

// Error returns "field: reason".
func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Defaults of a health check.
const (
	DefaultInterval = 10 * time.Second
	DefaultTimeout  = 2 * time.Second
)

// Healthy reports whether an instance in status s receives traffic:
// PASSING and WARNING do.
func Healthy(s registryv1.HealthStatus) bool {
	return s == registryv1.HealthStatus_HEALTH_STATUS_PASSING || s == registryv1.HealthStatus_HEALTH_STATUS_WARNING
}

// TTL returns an instance's heartbeat TTL, or 0 when it has no TTL check.
func TTL(inst *registryv1.Instance) time.Duration {
	c := inst.GetCheck()
	if c.GetKind() != registryv1.CheckKind_CHECK_KIND_TTL {
		return 0
	}
	return c.GetInterval().AsDuration()
}

// Prepare validates a registration and returns the instance as it will be
// stored: a copy with defaults filled in (weight 1, check interval and
// timeout, HTTP path "/"), health PASSING with no output, and
// updated_at set to now. Every instance starts PASSING: one without a check
// stays so, a prober-checked one (http/tcp/grpc) until the prober reports,
// and a TTL one until its TTL passes without a Heartbeat.
func Prepare(in *registryv1.Instance, now time.Time) (*registryv1.Instance, error) {
	if in == nil {
		return nil, fieldErr("instance", "required")
	}
	if err := ValidateInstance(in); err != nil {
		return nil, err
	}
	out := proto.Clone(in).(*registryv1.Instance)
	if out.Weight == 0 {
		out.Weight = 1
	}
	if out.Check != nil && out.Check.Kind == registryv1.CheckKind_CHECK_KIND_UNSPECIFIED {
		out.Check = nil
	}
	if c := out.Check; c != nil {
		if c.Interval == nil || c.Interval.AsDuration() == 0 {
			c.Interval = durationpb.New(DefaultInterval)
		}
		if c.Timeout == nil || c.Timeout.AsDuration() == 0 {
			c.Timeout = durationpb.New(DefaultTimeout)
		}
		if c.Kind == registryv1.CheckKind_CHECK_KIND_HTTP && c.HttpPath == "" {
			c.HttpPath = "/"
		}
	}
	if len(out.Metadata) == 0 {
		out.Metadata = nil
	}
	if len(out.Tags) == 0 {
		out.Tags = nil
	}
	out.Health = registryv1.HealthStatus_HEALTH_STATUS_PASSING
	out.HealthOutput = ""
	out.UpdatedAt = Timestamp(now)
	return out, nil
}

// Outputs the registry itself sets.
const (
	// HeartbeatOutput is the output of an instance after a Heartbeat.
	HeartbeatOutput = "heartbeat ok"
	// TTLExpiredOutput is the output of an instance whose TTL passed
	// without a Heartbeat.
	TTLExpiredOutput = "ttl expired"
)
