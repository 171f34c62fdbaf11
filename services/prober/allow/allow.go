// Package allow decides which targets the prober may send packets to: an
// allowlist of networks and host names, plus two dynamic sets of addresses
// (the registered instances and the discovered probers). A target is
// checked — and refused — before any packet is sent to it.
//
// The dynamic sets never vouch for loopback, link-local, unspecified or
// multicast addresses (see Restricted): an instance registered at
// 127.0.0.1, 0.0.0.0, 169.254.169.254 or fe80::1, or under a name that
// resolves to one, is a permitted target only when a static rule (a CIDR,
// an address, a host name, the loopback keyword or any) allows it too.
// Whoever may register an instance must not be able to aim the prober at
// the prober's own host or at the link's metadata services.
package allow

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
)

// ErrDenied is returned (wrapped) for a target outside the allowlist.
var ErrDenied = errors.New("target not in the allowlist")

// Keywords accepted in a rule list.
const (
	// Loopback allows 127.0.0.0/8, ::1 and "localhost".
	Loopback = "loopback"
	// Registered allows the addresses and host names of registered
	// instances (kept current by the health loop), except restricted
	// addresses (see Restricted).
	Registered = "registered"
	// Peers allows the addresses of probers found by discovery, except
	// restricted addresses (see Restricted).
	Peers = "peers"
	// Any allows every target (for lab use only).
	Any = "any"
)

// List is an allowlist. The zero value allows nothing. It is safe for
// concurrent use.
type List struct {
	prefixes   []netip.Prefix
	hosts      map[string]bool // exact lower-case names
	names      []string        // the host name rules as written, for Verify
	suffixes   []string        // ".example.com" from "*.example.com"
	registered bool
	peersOK    bool
	any        bool

	mu      sync.RWMutex
	dynamic map[string]bool // registered instance addresses (IP text or names)
	peers   map[string]bool // discovered prober addresses
}

// Parse builds a List from comma-separated rules: CIDR prefixes, IP
// addresses, host names, "*.suffix" wildcards and the keywords loopback,
// registered, peers and any. It checks syntax only: Verify checks that the
// host names resolve.
func Parse(rules string) (*List, error) {
	l := &List{hosts: map[string]bool{}, dynamic: map[string]bool{}}
	for _, r := range strings.Split(rules, ",") {
		r = strings.ToLower(strings.TrimSpace(r))
		switch {
		case r == "":
		case r == Loopback:
			l.prefixes = append(l.prefixes, netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
			l.hosts["localhost"] = true
		case r == Registered:
			l.registered = true
		case r == Peers:
			l.peersOK = true
		case r == Any:
			l.any = true
		case strings.Contains(r, "/"):
			p, err := netip.ParsePrefix(r)
			if err != nil {
				return nil, fmt.Errorf("allow rule %q: %w", r, err)
			}
			l.prefixes = append(l.prefixes, p.Masked())
		default:
			if a, err := netip.ParseAddr(r); err == nil {
				l.prefixes = append(l.prefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
				continue
			}
			if suf, ok := strings.CutPrefix(r, "*."); ok && validName(suf) {
				l.suffixes = append(l.suffixes, "."+suf)
				continue
			}
			if !validName(r) {
				return nil, fmt.Errorf("allow rule %q: not a network, address, host name or keyword (%s, %s, %s, %s)", r, Loopback, Registered, Peers, Any)
			}
			l.hosts[strings.TrimSuffix(r, ".")] = true
			l.names = append(l.names, r)
		}
	}
	return l, nil
}

// Verify resolves every host name rule and fails, naming the rule, on the
// first that does not resolve: a typo of a keyword ("loopbak") or of a
// name is an error at start, not a silently empty rule. Wildcards are
// not checked. The lookups share ctx's deadline.
func (l *List) Verify(ctx context.Context, r Resolver) error {
	if r == nil {
		r = net.DefaultResolver
	}
	for _, name := range l.names {
		if _, err := r.LookupNetIP(ctx, "ip", name); err != nil {
			return fmt.Errorf("allow rule %q: not a network, address or keyword (%s, %s, %s, %s), and it does not resolve as a host name: %w",
				name, Loopback, Registered, Peers, Any, err)
		}
	}
	return nil
}

func validName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// SetRegistered replaces the dynamic set of registered instance addresses.
func (l *List) SetRegistered(addrs []string) {
	m := normalize(addrs)
	l.mu.Lock()
	l.dynamic = m
	l.mu.Unlock()
}

// SetPeers replaces the dynamic set of discovered prober addresses.
func (l *List) SetPeers(addrs []string) {
	m := normalize(addrs)
	l.mu.Lock()
	l.peers = m
	l.mu.Unlock()
}

func normalize(addrs []string) map[string]bool {
	m := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		a = strings.ToLower(strings.TrimSuffix(a, "."))
		if ip, err := netip.ParseAddr(a); err == nil {
			a = ip.Unmap().String()
		}
		m[a] = true
	}
	return m
}

// dynamicHas reports whether key is in an enabled dynamic set.
func (l *List) dynamicHas(key string) bool {
	if !l.registered && !l.peersOK {
		return false
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return (l.registered && l.dynamic[key]) || (l.peersOK && l.peers[key])
}

// thisNetwork is 0.0.0.0/8: "this host on this network"; a connect to
// 0.0.0.0 reaches the local host.
var thisNetwork = netip.MustParsePrefix("0.0.0.0/8")

// Restricted reports whether ip is an address that only a static rule can
// allow, never the registered or peers sets: loopback, link-local (unicast
// and multicast, including 169.254.169.254), unspecified and 0.0.0.0/8
// (both reach the local host), and multicast.
func Restricted(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() ||
		(ip.Is4() && thisNetwork.Contains(ip))
}

// AllowedAddr reports whether packets may go to ip.
func (l *List) AllowedAddr(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	if l.staticAddr(ip) {
		return true
	}
	return !Restricted(ip) && l.dynamicHas(ip.String())
}

// staticAddr reports whether a static rule (a prefix, an address or any)
// allows ip.
func (l *List) staticAddr(ip netip.Addr) bool {
	if l.any {
		return true
	}
	for _, p := range l.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// How a host name is allowed as such.
const (
	nameNo      = iota
	nameDynamic // by the registered or peers set: vouches for unrestricted addresses
	nameStatic  // by a rule: vouches for every address it resolves to
)

// allowedName reports whether, and how, a host name is allowed as such.
func (l *List) allowedName(name string) int {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if l.any || l.hosts[name] {
		return nameStatic
	}
	for _, s := range l.suffixes {
		if strings.HasSuffix(name, s) {
			return nameStatic
		}
	}
	if l.dynamicHas(name) {
		return nameDynamic
	}
	return nameNo
}

// Resolver looks host names up; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Resolve checks host (an address or a name) and returns the addresses to
// use, of the family network asks for ("ip", "ip4" or "ip6"). A literal
// address must be allowed; a name must be allowed itself or every address
// it resolves to must be. A name allowed only by the registered or peers
// set does not vouch for restricted addresses: each restricted address it
// resolves to needs a static rule. Denials wrap ErrDenied; nothing is sent
// to the target either way.
func (l *List) Resolve(ctx context.Context, r Resolver, network, host string) ([]netip.Addr, error) {
	if host == "" {
		return nil, errors.New("empty host")
	}
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		ip = ip.Unmap()
		if !familyOK(network, ip) {
			return nil, fmt.Errorf("%s is not an %s address", ip, network)
		}
		if !l.AllowedAddr(ip) {
			return nil, fmt.Errorf("%s: %w", ip, ErrDenied)
		}
		return []netip.Addr{ip}, nil
	}
	if !validName(strings.ToLower(host)) {
		return nil, fmt.Errorf("%q is not an address or host name", host)
	}
	how := l.allowedName(host)
	if how == nameNo && !l.registered && !l.peersOK && len(l.prefixes) == 0 {
		// Nothing it could resolve to is allowed: refuse without a lookup.
		return nil, fmt.Errorf("%s: %w", host, ErrDenied)
	}
	if r == nil {
		r = net.DefaultResolver
	}
	addrs, err := r.LookupNetIP(ctx, network, host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if !familyOK(network, a) {
			continue
		}
		ok := false
		switch how {
		case nameStatic:
			ok = true
		case nameDynamic:
			ok = !Restricted(a) || l.staticAddr(a)
		default:
			ok = l.AllowedAddr(a)
		}
		if !ok {
			return nil, fmt.Errorf("%s resolves to %s: %w", host, a, ErrDenied)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("resolve %s: no %s address", host, network)
	}
	return out, nil
}

func familyOK(network string, ip netip.Addr) bool {
	switch network {
	case "ip4":
		return ip.Is4()
	case "ip6":
		return ip.Is6()
	}
	return true
}

// DialContext returns a dial function that refuses addresses outside l
// before connecting: hand it to http.Transport, grpc.WithContextDialer or
// a DNS client so that redirects and re-resolution stay inside the list.
func (l *List) DialContext(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ips, err := l.Resolve(ctx, nil, ipNetwork(network), host)
		if err != nil {
			return nil, err
		}
		var first error
		for _, ip := range ips {
			c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			if first == nil {
				first = err
			}
		}
		return nil, first
	}
}

func ipNetwork(network string) string {
	switch {
	case strings.HasSuffix(network, "4"):
		return "ip4"
	case strings.HasSuffix(network, "6"):
		return "ip6"
	}
	return "ip"
}
