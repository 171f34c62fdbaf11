// Package servicename holds the one rule every Switchboard service applies to
// a service name: it is used as a DNS label (web.service.switchboard), a
// Consul service name and an etcd key segment, so all of them must agree.
package servicename

import "fmt"

// MaxLen is the longest service name: one DNS label.
const MaxLen = 63

// Validate reports why s is not a service name, or nil: a name is 1-63
// bytes of lower-case letters, digits and '-', not starting or ending with
// '-'.
func Validate(s string) error {
	if s == "" {
		return fmt.Errorf("required")
	}
	if len(s) > MaxLen {
		return fmt.Errorf("must be at most %d bytes, got %d", MaxLen, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("must be a DNS label of lower-case letters, digits and '-' (got %q)", s)
		}
	}
	if s[0] == '-' || s[len(s)-1] == '-' {
		return fmt.Errorf("must not start or end with '-' (got %q)", s)
	}
	return nil
}
