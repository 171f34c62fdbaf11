package resolver

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"strings"

	"github.com/miekg/dns"
)

// zoneSource is one --zone-file value: "path", or "path=origin" for a file
// whose "@" and relative names are read against origin (a file without
// $ORIGIN). The origin is what follows the last "=": a path that itself
// holds "=" is written with an explicit origin, or with a trailing "="
// (none).
type zoneSource struct {
	path   string
	origin string // lower case, fully qualified; "" when the file sets $ORIGIN
}

func parseZoneSource(v string) (zoneSource, error) {
	src := zoneSource{path: v}
	if i := strings.LastIndexByte(v, '='); i >= 0 {
		src.path, src.origin = v[:i], v[i+1:]
		if src.origin != "" {
			src.origin = lowerASCII(dns.Fqdn(src.origin))
			if _, ok := dns.IsDomainName(src.origin); !ok {
				return src, fmt.Errorf("%q: origin %q is not a domain name", v, v[i+1:])
			}
		}
	}
	if src.path == "" {
		return src, fmt.Errorf("%q: no file name", v)
	}
	return src, nil
}

func (s zoneSource) String() string {
	if s.origin == "" {
		return s.path
	}
	return s.path + "=" + s.origin
}

// staticZone is a zone read from an RFC 1035 master file.
type staticZone struct {
	src   zoneSource
	soa   *dns.SOA
	rrs   []dns.RR // everything but the SOA
	lines []int    // the line each of rrs starts on
	sum   [sha256.Size]byte
}

// loadZoneFile reads and checks a master file; its SOA defines the zone,
// and every record must lie within it and be servable. Errors name the
// file and, where the text is at fault, the line.
func loadZoneFile(src zoneSource) (*staticZone, error) {
	data, err := os.ReadFile(src.path)
	if err != nil {
		return nil, fmt.Errorf("zone file: %w", err)
	}
	z, err := parseZone(data, src)
	if err != nil {
		return nil, fmt.Errorf("zone file %s: %w", src.path, err)
	}
	return z, nil
}

// parseZone parses master-file text ($INCLUDE is not allowed) and checks
// it the way the authority snapshot will take it.
func parseZone(data []byte, src zoneSource) (*staticZone, error) {
	lc := &lineCounter{r: bytes.NewReader(data)}
	zp := dns.NewZoneParser(lc, src.origin, "")
	z := &staticZone{src: src, sum: sha256.Sum256(data)}
	lines := bytes.Split(data, []byte("\n"))
	prevEnd := 0 // the line the previous record ended on
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		end := lc.lines
		if !lc.atLineStart {
			end++ // the last line, without a newline
		}
		line := recordStart(lines, prevEnd, end)
		prevEnd = end
		if soa, isSOA := rr.(*dns.SOA); isSOA {
			if z.soa != nil {
				return nil, fmt.Errorf("line %d: second SOA at %s", line, rr.Header().Name)
			}
			z.soa = soa
			continue
		}
		if rr.Header().Class != dns.ClassINET {
			return nil, fmt.Errorf("line %d: %s: class %s is not served", line, rr.Header().Name, dns.ClassToString[rr.Header().Class])
		}
		z.rrs = append(z.rrs, rr)
		z.lines = append(z.lines, line)
	}
	if err := zp.Err(); err != nil {
		if src.origin == "" && strings.Contains(err.Error(), "bad owner name") {
			return nil, fmt.Errorf("%w (no $ORIGIN: name the zone with --zone-file=%s=<origin>)", err, src.path)
		}
		return nil, err
	}
	if z.soa == nil {
		return nil, fmt.Errorf("no SOA record: the SOA defines the zone")
	}
	if src.origin != "" && !strings.EqualFold(dns.Fqdn(z.soa.Hdr.Name), src.origin) {
		return nil, fmt.Errorf("the SOA's owner %s is not the zone %s named for the file", z.soa.Hdr.Name, src.origin)
	}
	// The zone alone, as the snapshot builder takes it: names outside the
	// zone, CNAMEs beside other data and unsupported types fail here, with
	// their line.
	b := newAuthorityBuilder()
	in := b.addZone(z.soa, "zonefile:"+src.path)
	for i, rr := range z.rrs {
		if err := b.add(sourced{rr: rr, source: "zonefile:" + src.path}, in); err != nil {
			return nil, fmt.Errorf("line %d: %w", z.lines[i], err)
		}
	}
	return z, nil
}

// recordStart returns the line (1-based) a record ending on line end
// starts on: the first line after prevEnd with more than blanks, a
// comment or a $ directive.
func recordStart(lines [][]byte, prevEnd, end int) int {
	for l := prevEnd + 1; l < end && l <= len(lines); l++ {
		t := bytes.TrimSpace(lines[l-1])
		if len(t) > 0 && t[0] != ';' && t[0] != '$' {
			return l
		}
	}
	return end
}

// lineCounter counts the newlines the zone parser has read. The parser
// reads byte by byte from an io.ByteReader, so after a record the count is
// the line that record ended on.
type lineCounter struct {
	r           *bytes.Reader
	lines       int
	atLineStart bool
}

func (c *lineCounter) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.atLineStart = b == '\n'
		if c.atLineStart {
			c.lines++
		}
	}
	return b, err
}

func (c *lineCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.lines += bytes.Count(p[:n], []byte("\n"))
	if n > 0 {
		c.atLineStart = p[n-1] == '\n'
	}
	return n, err
}
