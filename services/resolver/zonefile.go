package resolver

import (
	"fmt"
	"io"
	"os"

	"github.com/miekg/dns"
)

// staticZone is a zone read from an RFC 1035 master file.
type staticZone struct {
	path string
	soa  *dns.SOA
	rrs  []dns.RR // everything but the SOA
}

// loadZoneFile reads a master file; its SOA defines the zone, and every
// record must lie within it.
func loadZoneFile(path string) (*staticZone, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("zone file: %w", err)
	}
	defer f.Close()
	z, err := parseZone(f, path)
	if err != nil {
		return nil, fmt.Errorf("zone file %s: %w", path, err)
	}
	return z, nil
}

// parseZone parses master-file text ($INCLUDE is not allowed).
func parseZone(r io.Reader, path string) (*staticZone, error) {
	zp := dns.NewZoneParser(r, "", path)
	z := &staticZone{path: path}
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		if soa, isSOA := rr.(*dns.SOA); isSOA {
			if z.soa != nil {
				return nil, fmt.Errorf("second SOA at %s", rr.Header().Name)
			}
			z.soa = soa
			continue
		}
		if rr.Header().Class != dns.ClassINET {
			return nil, fmt.Errorf("%s: class %s is not served", rr.Header().Name, dns.ClassToString[rr.Header().Class])
		}
		z.rrs = append(z.rrs, rr)
	}
	if err := zp.Err(); err != nil {
		return nil, err
	}
	if z.soa == nil {
		return nil, fmt.Errorf("no SOA record: the SOA defines the zone")
	}
	for _, rr := range z.rrs {
		if !dns.IsSubDomain(z.soa.Hdr.Name, rr.Header().Name) {
			return nil, fmt.Errorf("%s is outside the zone %s", rr.Header().Name, z.soa.Hdr.Name)
		}
	}
	return z, nil
}
