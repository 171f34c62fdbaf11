package prober

import (
	"testing"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

func TestNextRiseFall(t *testing.T) {
	const (
		pass = registryv1.HealthStatus_HEALTH_STATUS_PASSING
		warn = registryv1.HealthStatus_HEALTH_STATUS_WARNING
		crit = registryv1.HealthStatus_HEALTH_STATUS_CRITICAL
		none = registryv1.HealthStatus_HEALTH_STATUS_UNSPECIFIED
	)
	tests := []struct {
		name             string
		cur              registryv1.HealthStatus
		ok               bool
		passes, failures int
		want             registryv1.HealthStatus
	}{
		{"one blip does not flap", pass, false, 0, 1, none},
		{"two failures still passing", pass, false, 0, 2, none},
		{"fall reached", pass, false, 0, 3, crit},
		{"warning falls too", warn, false, 0, 3, crit},
		{"already critical", crit, false, 0, 7, none},
		{"one pass does not rise", crit, true, 1, 0, none},
		{"rise reached", crit, true, 2, 0, pass},
		{"passing stays", pass, true, 9, 0, none},
		{"unjudged takes the first pass", none, true, 1, 0, pass},
		{"unjudged takes the first failure", none, false, 0, 1, crit},
	}
	for _, tt := range tests {
		if got := next(tt.cur, tt.ok, tt.passes, tt.failures, 2, 3); got != tt.want {
			t.Errorf("%s: next = %v, want %v", tt.name, got, tt.want)
		}
	}
}
