package resolver

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// Names in the service zone (zone "switchboard." by default):
//
//	<service>.service.<zone>          A/AAAA of healthy instances, SRV
//	<tag>.<service>.service.<zone>    the same, only instances with the tag
//	_<service>._tcp.service.<zone>    SRV (port, weight, priority)
//	<id>.<service>.instance.<zone>    A/AAAA of one instance (SRV targets)
//
// SRV priority is 1 for passing instances and 2 for those with a warning,
// so clients prefer the passing ones; SRV weight is the instance weight.

// serviceSOA returns the synthesized SOA of the service zone.
func serviceSOA(origin string, serial uint32, negTTL uint32) *dns.SOA {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: negTTL},
		Ns:      "ns." + origin,
		Mbox:    "hostmaster." + origin,
		Serial:  serial,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  negTTL,
	}
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

// instanceLabel turns an instance id into one DNS label.
func instanceLabel(id string) string {
	b := []byte(strings.ToLower(id))
	for i, c := range b {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	if len(b) == 0 {
		return "instance"
	}
	return string(b)
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
		used := map[string]int{}
		for _, in := range ins {
			label := instanceLabel(in.GetId())
			if k := used[label]; k > 0 {
				label = label + "-" + strconv.Itoa(k)
			}
			used[instanceLabel(in.GetId())]++
			target := label + "." + svc + ".instance." + origin
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
