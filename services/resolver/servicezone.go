package resolver

import (
	"crypto/sha256"
	"encoding/base32"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// Names in the service zone (zone "switchboard." by default):
//
//	<service>.service.<zone>          A/AAAA of healthy instances, SRV
//	<tag>.<service>.service.<zone>    the same, only instances with the tag
//	_<service>._tcp.service.<zone>    SRV (port, weight, priority)
//	<label>.<service>.instance.<zone> A/AAAA of one instance (SRV targets;
//	                                  the label is instanceLabel(id))
//	<zone> NS, ns.<zone> A/AAAA       the zone's name server (serviceNS)
//
// SRV priority is 1 for passing instances and 2 for those with a warning,
// so clients prefer the passing ones; SRV weight is the instance weight.

// serviceSOA returns the synthesized SOA of the service zone; ns is the
// primary name server (MNAME), the name of the zone's NS record.
func serviceSOA(origin, ns string, serial uint32, negTTL uint32) *dns.SOA {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: negTTL},
		Ns:      ns,
		Mbox:    "hostmaster." + origin,
		Serial:  serial,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  negTTL,
	}
}

// serviceNS returns the service zone's apex NS record and, when the name
// server's name lies in the zone, its address records (the resolver's
// advertised addresses).
func serviceNS(origin, ns string, addrs []netip.Addr, ttl uint32) []sourced {
	out := []sourced{{rr: &dns.NS{Hdr: hdr(origin, dns.TypeNS, ttl), Ns: ns}, source: "service"}}
	if !inZone(origin, ns) {
		return out
	}
	for _, a := range addrs {
		var rr dns.RR
		if a.Is4() {
			rr = &dns.A{Hdr: hdr(ns, dns.TypeA, ttl), A: a.AsSlice()}
		} else {
			rr = &dns.AAAA{Hdr: hdr(ns, dns.TypeAAAA, ttl), AAAA: a.AsSlice()}
		}
		out = append(out, sourced{rr: rr, source: "service"})
	}
	return out
}

// isLabel reports whether s is a usable DNS label for a name we build.
func isLabel(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// instanceLabel turns an instance id into one DNS label, the same for the
// same id whatever else is registered, and different for different ids:
//
//   - an id that is already a plain label — lower-case letters, digits and
//     single hyphens inside, at most 63 bytes — is its own label
//     ("web-1", "checkout-1");
//   - any other id ("web.1", "Web-1", "a--b", "x_y", too long) becomes its
//     letters and digits with hyphens for the rest (runs collapsed, at
//     most 45 bytes), "--", and 16 base-32 characters of the SHA-256 of
//     the id itself ("web-1--5k3u...").
//
// Plain labels never hold "--" and encoded ones always do, so the two
// never meet; two encoded ids meet only if 80 bits of SHA-256 do.
func instanceLabel(id string) string {
	if isPlainLabel(id) {
		return id
	}
	var b strings.Builder
	hyphen := true // no leading hyphen
	for i := 0; i < len(id) && b.Len() < maxEncodedPrefix; i++ {
		c := id[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		default:
			c = '-'
		}
		if c == '-' && hyphen {
			continue
		}
		hyphen = c == '-'
		b.WriteByte(c)
	}
	prefix := strings.TrimRight(b.String(), "-")
	if prefix == "" {
		prefix = "i"
	}
	sum := sha256.Sum256([]byte(id))
	return prefix + "--" + labelHash.EncodeToString(sum[:10])
}

// maxEncodedPrefix leaves room for "--" and 16 hash characters in 63 bytes.
const maxEncodedPrefix = 45

// labelHash is lower-case base32hex without padding: letters and digits.
var labelHash = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// isPlainLabel reports whether id is a lower-case LDH label without "--"
// (nor a hyphen at either end), at most 63 bytes.
func isPlainLabel(id string) bool {
	if id == "" || len(id) > 63 || id[0] == '-' || id[len(id)-1] == '-' || strings.Contains(id, "--") {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// serviceRecords turns healthy instances into service-zone records.
func serviceRecords(origin string, ttl uint32, instances []*registryv1.Instance) []sourced {
	byService := map[string][]*registryv1.Instance{}
	for _, in := range instances {
		if in.GetHealth() == registryv1.HealthStatus_HEALTH_STATUS_CRITICAL {
			continue
		}
		svc := strings.ToLower(in.GetService())
		if !isLabel(svc) || in.GetAddress() == "" || in.GetPort() == 0 || in.GetPort() > 65535 {
			continue
		}
		byService[svc] = append(byService[svc], in)
	}
	names := make([]string, 0, len(byService))
	for s := range byService {
		names = append(names, s)
	}
	slices.Sort(names)

	var out []sourced
	for _, svc := range names {
		ins := byService[svc]
		slices.SortFunc(ins, func(a, b *registryv1.Instance) int { return strings.Compare(a.GetId(), b.GetId()) })
		base := svc + ".service." + origin
		srvName := "_" + svc + "._tcp.service." + origin
		for _, in := range ins {
			target := instanceLabel(in.GetId()) + "." + svc + ".instance." + origin
			weight := max(in.GetWeight(), 1)
			addr, err := netip.ParseAddr(in.GetAddress())
			var addrRR dns.RR
			if err == nil {
				addr = addr.Unmap()
				if addr.Is4() {
					addrRR = &dns.A{Hdr: hdr(target, dns.TypeA, ttl), A: addr.AsSlice()}
				} else {
					addrRR = &dns.AAAA{Hdr: hdr(target, dns.TypeAAAA, ttl), AAAA: addr.AsSlice()}
				}
				out = append(out, sourced{rr: addrRR, source: "service", weight: weight})
			} else {
				target = dns.Fqdn(strings.ToLower(in.GetAddress()))
				if _, ok := dns.IsDomainName(target); !ok {
					continue
				}
			}
			prio := uint16(1)
			if in.GetHealth() == registryv1.HealthStatus_HEALTH_STATUS_WARNING {
				prio = 2
			}
			srv := func(owner string) dns.RR {
				return &dns.SRV{Hdr: hdr(owner, dns.TypeSRV, ttl), Priority: prio, Weight: uint16(min(weight, 65535)),
					Port: uint16(in.GetPort()), Target: target}
			}
			owners := []string{base}
			for _, tag := range in.GetTags() {
				if isLabel(tag) {
					owners = append(owners, strings.ToLower(tag)+"."+base)
				}
			}
			for _, owner := range owners {
				if addrRR != nil {
					rr := dns.Copy(addrRR)
					rr.Header().Name = owner
					out = append(out, sourced{rr: rr, source: "service", weight: weight})
				}
				out = append(out, sourced{rr: srv(owner), source: "service", weight: weight})
			}
			out = append(out, sourced{rr: srv(srvName), source: "service", weight: weight})
		}
	}
	return out
}

func hdr(name string, t uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
}
