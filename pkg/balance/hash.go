package balance

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"
)

// The hashes here are stable across processes, machines and releases:
// every data plane must send one key to one endpoint, and every one must
// build the same Maglev table. (hash/maphash is seeded per process and so
// is not usable for this.) The function is FNV-1a over the bytes followed
// by a 64-bit finalizer that spreads FNV's weak low bits.

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// HashString returns the stable 64-bit hash of s.
func HashString(s string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return mix64(h)
}

// HashBytes returns the stable 64-bit hash of b; HashBytes(b) ==
// HashString(string(b)).
func HashBytes(b []byte) uint64 {
	h := uint64(fnvOffset)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return mix64(h)
}

// HashAddr returns the stable hash of an IP address. IPv4 and IPv4-mapped
// IPv6 forms of one address hash alike; zones are ignored.
func HashAddr(a netip.Addr) uint64 {
	b := a.Unmap().As16()
	return HashBytes(b[:])
}

// seeded hash of an endpoint ID for Maglev's two permutation parameters.
func hashSeed(s string, seed uint64) uint64 {
	h := uint64(fnvOffset) ^ seed
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return mix64(h ^ seed)
}

// HashSource names where a request's affinity key comes from.
type HashSource uint8

// Hash sources.
const (
	HashClientIP HashSource = iota // the peer's IP address
	HashHeader                     // a request header's value
	HashCookie                     // a cookie's value
)

// HashOn is a parsed Config.HashOn: where consistent_hash takes its key.
type HashOn struct {
	Source HashSource
	// Name is the header (canonical form) or cookie name; empty for
	// HashClientIP.
	Name string
}

// ErrBadHashOn is wrapped by ParseHashOn's errors.
var ErrBadHashOn = errors.New(`want "client_ip", "header:<Name>" or "cookie:<name>"`)

// ParseHashOn parses "client_ip", "header:<Name>" or "cookie:<name>".
func ParseHashOn(s string) (HashOn, error) {
	switch {
	case s == "client_ip":
		return HashOn{Source: HashClientIP}, nil
	case strings.HasPrefix(s, "header:"):
		name := s[len("header:"):]
		if !validToken(name) {
			return HashOn{}, fmt.Errorf("bad header name %q: %w", name, ErrBadHashOn)
		}
		return HashOn{Source: HashHeader, Name: textproto.CanonicalMIMEHeaderKey(name)}, nil
	case strings.HasPrefix(s, "cookie:"):
		name := s[len("cookie:"):]
		if !validToken(name) {
			return HashOn{}, fmt.Errorf("bad cookie name %q: %w", name, ErrBadHashOn)
		}
		return HashOn{Source: HashCookie, Name: name}, nil
	}
	return HashOn{}, fmt.Errorf("%q: %w", s, ErrBadHashOn)
}

// String returns the form ParseHashOn accepts.
func (h HashOn) String() string {
	switch h.Source {
	case HashHeader:
		return "header:" + h.Name
	case HashCookie:
		return "cookie:" + h.Name
	}
	return "client_ip"
}

// validToken reports whether s is a non-empty RFC 9110 token.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// Hash returns the affinity hash of r and whether the key was present. It
// does not allocate. Client IPs come from r.RemoteAddr.
func (h HashOn) Hash(r *http.Request) (uint64, bool) {
	switch h.Source {
	case HashHeader:
		vs := r.Header[h.Name]
		if len(vs) == 0 || vs[0] == "" {
			return 0, false
		}
		return HashString(vs[0]), true
	case HashCookie:
		for _, line := range r.Header["Cookie"] {
			if v, ok := CookieValue(line, h.Name); ok {
				return HashString(v), true
			}
		}
		return 0, false
	default:
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			a, err := netip.ParseAddr(r.RemoteAddr)
			if err != nil {
				return 0, false
			}
			return HashAddr(a), true
		}
		return HashAddr(ap.Addr()), true
	}
}

// CookieValue finds cookie name in one Cookie header line
// ("a=1; b=2") without allocating. Surrounding double quotes are kept, as
// the value is only hashed.
func CookieValue(line, name string) (string, bool) {
	for len(line) > 0 {
		var part string
		part, line, _ = strings.Cut(line, ";")
		part = strings.TrimSpace(part)
		k, v, ok := strings.Cut(part, "=")
		if ok && k == name {
			return v, true
		}
	}
	return "", false
}
