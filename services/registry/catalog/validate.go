package catalog

import (
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/switchboard-net/switchboard/pkg/servicename"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// Limits on what one instance may carry. They keep every backend's records
// small (Consul's service metadata has similar limits) and bound memory.
const (
	MaxTags          = 64
	MaxTagLen        = 256
	MaxMetadata      = 32
	MaxMetaKeyLen    = 128
	MaxMetaValueLen  = 512
	MaxAddressLen    = 253
	MaxZoneLen       = 128
	MaxIDLen         = 128
	MaxWeight        = 65535
	MaxOutputLen     = 4096
	MaxHTTPPathLen   = 256
	MaxGRPCSvcLen    = 128
	MinCheckInterval = time.Second
	MaxCheckInterval = 24 * time.Hour
	MaxCheckTimeout  = 5 * time.Minute
)

// reservedMetaPrefixes are metadata key prefixes the backends use for their
// own fields.
var reservedMetaPrefixes = []string{"switchboard-", "consul-"}

// Timestamp converts t to a timestamp at millisecond precision (what every
// backend keeps exactly).
func Timestamp(t time.Time) *timestamppb.Timestamp {
	return timestamppb.New(t.Truncate(time.Millisecond))
}

// ValidateServiceName checks a service name (see servicename.Validate) and
// names field when it is not one.
func ValidateServiceName(field, s string) error {
	if err := servicename.Validate(s); err != nil {
		return fieldErr(field, "%s", err)
	}
	return nil
}

// ValidateID checks an instance id: 1-128 bytes of [A-Za-z0-9._-].
func ValidateID(field, s string) error {
	if s == "" {
		return fieldErr(field, "required")
	}
	if len(s) > MaxIDLen {
		return fieldErr(field, "must be at most %d bytes, got %d", MaxIDLen, len(s))
	}
	for i := 0; i < len(s); i++ {
		if !idByte(s[i]) {
			return fieldErr(field, "must be [A-Za-z0-9._-] only (got %q)", s)
		}
	}
	return nil
}

func idByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// ValidateAddress checks an IPv4 or IPv6 address or a host name.
func ValidateAddress(field, s string) error {
	if s == "" {
		return fieldErr(field, "required")
	}
	if len(s) > MaxAddressLen {
		return fieldErr(field, "must be at most %d bytes", MaxAddressLen)
	}
	if strings.ContainsRune(s, ':') {
		if _, err := netip.ParseAddr(s); err != nil {
			return fieldErr(field, "not an IP address or host name: %q", s)
		}
		return nil
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return nil
	}
	if !isHostname(s) {
		return fieldErr(field, "not an IP address or host name: %q", s)
	}
	return nil
}

// isHostname reports whether s is a host name: dot-separated labels of
// letters, digits and '-', 1-63 bytes each, optionally ending in a dot.
func isHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	allDigits := true
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_':
				allDigits = false
			default:
				return false
			}
		}
	}
	return !allDigits // "1.2.3" is a bad IP, not a host
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// ValidateInstance checks every field of a registration. The error names
// the first offending field ("instance.port: must be 1-65535").
func ValidateInstance(in *registryv1.Instance) error {
	if err := ValidateServiceName("instance.service", in.GetService()); err != nil {
		return err
	}
	if err := ValidateID("instance.id", in.GetId()); err != nil {
		return err
	}
	if err := ValidateAddress("instance.address", in.GetAddress()); err != nil {
		return err
	}
	if p := in.GetPort(); p < 1 || p > 65535 {
		return fieldErr("instance.port", "must be 1-65535, got %d", p)
	}
	if n := len(in.GetTags()); n > MaxTags {
		return fieldErr("instance.tags", "at most %d tags, got %d", MaxTags, n)
	}
	for i, tag := range in.GetTags() {
		if tag == "" || len(tag) > MaxTagLen || !printable(tag) {
			return fieldErr("instance.tags", "tag %d must be 1-%d bytes of printable UTF-8", i, MaxTagLen)
		}
	}
	if n := len(in.GetMetadata()); n > MaxMetadata {
		return fieldErr("instance.metadata", "at most %d entries, got %d", MaxMetadata, n)
	}
	for k, v := range in.GetMetadata() {
		if k == "" || len(k) > MaxMetaKeyLen {
			return fieldErr("instance.metadata", "keys must be 1-%d bytes (got %d)", MaxMetaKeyLen, len(k))
		}
		for i := 0; i < len(k); i++ {
			c := k[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				return fieldErr("instance.metadata", "key %q must be [A-Za-z0-9_-] only", k)
			}
		}
		for _, p := range reservedMetaPrefixes {
			if strings.HasPrefix(strings.ToLower(k), p) {
				return fieldErr("instance.metadata", "key %q uses the reserved prefix %q", k, p)
			}
		}
		if len(v) > MaxMetaValueLen || !printable(v) {
			return fieldErr("instance.metadata", "value of %q must be at most %d bytes of printable UTF-8", k, MaxMetaValueLen)
		}
	}
	if w := in.GetWeight(); w > MaxWeight {
		return fieldErr("instance.weight", "must be at most %d, got %d", MaxWeight, w)
	}
	if z := in.GetZone(); len(z) > MaxZoneLen {
		return fieldErr("instance.zone", "must be at most %d bytes", MaxZoneLen)
	} else {
		for i := 0; i < len(z); i++ {
			if !idByte(z[i]) {
				return fieldErr("instance.zone", "must be [A-Za-z0-9._-] only (got %q)", z)
			}
		}
	}
	return validateCheck(in.GetCheck())
}

func validateCheck(c *registryv1.HealthCheck) error {
	if c == nil {
		return nil
	}
	switch c.Kind {
	case registryv1.CheckKind_CHECK_KIND_UNSPECIFIED, registryv1.CheckKind_CHECK_KIND_HTTP,
		registryv1.CheckKind_CHECK_KIND_TCP, registryv1.CheckKind_CHECK_KIND_GRPC, registryv1.CheckKind_CHECK_KIND_TTL:
	default:
		return fieldErr("instance.check.kind", "unknown kind %d", c.Kind)
	}
	if c.Interval != nil {
		if err := c.Interval.CheckValid(); err != nil {
			return fieldErr("instance.check.interval", "%v", err)
		}
		if d := c.Interval.AsDuration(); d != 0 && (d < MinCheckInterval || d > MaxCheckInterval) {
			return fieldErr("instance.check.interval", "must be %v-%v, got %v", MinCheckInterval, MaxCheckInterval, d)
		}
	}
	if c.Timeout != nil {
		if err := c.Timeout.CheckValid(); err != nil {
			return fieldErr("instance.check.timeout", "%v", err)
		}
		if d := c.Timeout.AsDuration(); d < 0 || d > MaxCheckTimeout {
			return fieldErr("instance.check.timeout", "must be 0-%v, got %v", MaxCheckTimeout, d)
		}
	}
	if p := c.HttpPath; p != "" && (len(p) > MaxHTTPPathLen || p[0] != '/' || !printable(p) || strings.ContainsRune(p, ' ')) {
		return fieldErr("instance.check.http_path", "must start with '/', be at most %d bytes and have no spaces", MaxHTTPPathLen)
	}
	if s := c.GrpcService; len(s) > MaxGRPCSvcLen || !printable(s) {
		return fieldErr("instance.check.grpc_service", "must be at most %d bytes of printable UTF-8", MaxGRPCSvcLen)
	}
	return nil
}

// ValidateHealth checks a SetHealth status and output.
func ValidateHealth(st registryv1.HealthStatus, output string) error {
	switch st {
	case registryv1.HealthStatus_HEALTH_STATUS_PASSING, registryv1.HealthStatus_HEALTH_STATUS_WARNING, registryv1.HealthStatus_HEALTH_STATUS_CRITICAL:
	default:
		return fieldErr("status", "must be PASSING, WARNING or CRITICAL, got %v", st)
	}
	if len(output) > MaxOutputLen || !utf8.ValidString(output) {
		return fieldErr("output", "must be at most %d bytes of UTF-8", MaxOutputLen)
	}
	return nil
}
