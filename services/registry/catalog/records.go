package catalog

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/netip"
	"strconv"
	"strings"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// Record limits.
const (
	MaxRecordData = 4096
	DefaultTTL    = 300
	MaxTTL        = 1<<31 - 1
)

// recordTypes are the record types the registry stores.
var recordTypes = map[string]bool{"A": true, "AAAA": true, "CNAME": true, "TXT": true, "MX": true, "NS": true, "SOA": true, "SRV": true, "PTR": true}

// CanonicalName lower-cases a DNS name and makes it fully qualified.
func CanonicalName(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if s != "" && !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// ValidateDomain checks a DNS name in presentation form (labels of 1-63
// bytes, 255 bytes in all; "." is the root). field names the offending field.
func ValidateDomain(field, s string) error {
	if s == "" {
		return fieldErr(field, "required")
	}
	if s == "." {
		return nil
	}
	if len(s) > 254 {
		return fieldErr(field, "must be at most 253 bytes")
	}
	name := strings.TrimSuffix(s, ".")
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fieldErr(field, "labels must be 1-63 bytes (got %q)", s)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '*') {
				return fieldErr(field, "not a DNS name: %q", s)
			}
		}
	}
	return nil
}

// PrepareRecord validates a record and returns its stored form: name
// lower-cased and fully qualified, type upper-cased, TTL defaulted to 300
// when 0, data with surrounding space trimmed and domain names in it fully
// qualified.
func PrepareRecord(in *registryv1.Record) (*registryv1.Record, error) {
	if in == nil {
		return nil, fieldErr("record", "required")
	}
	out := &registryv1.Record{
		Name: CanonicalName(in.GetName()),
		Type: strings.ToUpper(strings.TrimSpace(in.GetType())),
		Ttl:  in.GetTtl(),
		Data: strings.TrimSpace(in.GetData()),
	}
	if err := ValidateDomain("record.name", out.Name); err != nil {
		return nil, err
	}
	if out.Type == "" {
		return nil, fieldErr("record.type", "required")
	}
	if !recordTypes[out.Type] {
		return nil, fieldErr("record.type", "unsupported type %q (A, AAAA, CNAME, TXT, MX, NS, SOA, SRV, PTR)", out.Type)
	}
	if out.Ttl == 0 {
		out.Ttl = DefaultTTL
	}
	if out.Ttl > MaxTTL {
		return nil, fieldErr("record.ttl", "must be at most %d", MaxTTL)
	}
	data, err := parseData(out.Type, out.Data)
	if err != nil {
		return nil, err
	}
	out.Data = data
	return out, nil
}

// parseData checks record data in master-file syntax for its type and
// returns it in canonical form.
func parseData(typ, data string) (string, error) {
	const field = "record.data"
	if data == "" {
		return "", fieldErr(field, "required")
	}
	if len(data) > MaxRecordData || !printable(data) {
		return "", fieldErr(field, "must be at most %d bytes of printable UTF-8", MaxRecordData)
	}
	f := strings.Fields(data)
	want := map[string]int{"A": 1, "AAAA": 1, "CNAME": 1, "NS": 1, "PTR": 1, "MX": 2, "SRV": 4, "SOA": 7}
	if n, ok := want[typ]; ok && len(f) != n {
		return "", fieldErr(field, "%s data needs %d fields, got %d", typ, n, len(f))
	}
	num := func(s string, bits int) error {
		if _, err := strconv.ParseUint(s, 10, bits); err != nil {
			return fieldErr(field, "%q is not a %d-bit number", s, bits)
		}
		return nil
	}
	domain := func(s string) (string, error) {
		if err := ValidateDomain(field, CanonicalName(s)); err != nil {
			return "", err
		}
		return CanonicalName(s), nil
	}
	switch typ {
	case "A":
		a, err := netip.ParseAddr(f[0])
		if err != nil || !a.Is4() {
			return "", fieldErr(field, "%q is not an IPv4 address", f[0])
		}
		return a.String(), nil
	case "AAAA":
		a, err := netip.ParseAddr(f[0])
		if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
			return "", fieldErr(field, "%q is not an IPv6 address", f[0])
		}
		return a.String(), nil
	case "CNAME", "NS", "PTR":
		return domain(f[0])
	case "MX":
		if err := num(f[0], 16); err != nil {
			return "", err
		}
		d, err := domain(f[1])
		if err != nil {
			return "", err
		}
		return f[0] + " " + d, nil
	case "SRV":
		for _, s := range f[:3] {
			if err := num(s, 16); err != nil {
				return "", err
			}
		}
		d, err := domain(f[3])
		if err != nil {
			return "", err
		}
		return strings.Join(f[:3], " ") + " " + d, nil
	case "SOA":
		ns, err := domain(f[0])
		if err != nil {
			return "", err
		}
		mbox, err := domain(f[1])
		if err != nil {
			return "", err
		}
		for _, s := range f[2:] {
			if err := num(s, 32); err != nil {
				return "", err
			}
		}
		return ns + " " + mbox + " " + strings.Join(f[2:], " "), nil
	default: // TXT: free text, quoted or not
		return data, nil
	}
}

// RecordKey identifies a record by name, type and data: the key backends
// store it under, "<name>/<type>/<hash of data>".
func RecordKey(r *registryv1.Record) string {
	return RecordSetKey(r.Name, r.Type) + DataHash(r.Data)
}

// RecordSetKey is the key prefix of every record of one name and type.
func RecordSetKey(name, typ string) string { return name + "/" + typ + "/" }

// DataHash is a short, key-safe digest of record data.
func DataHash(data string) string {
	h := sha256.Sum256([]byte(data))
	return hex.EncodeToString(h[:12])
}

// RecordRef validates and canonicalises the name, type and (optional) data
// naming records to delete.
func RecordRef(name, typ, data string) (string, string, string, error) {
	name = CanonicalName(name)
	if err := ValidateDomain("name", name); err != nil {
		return "", "", "", err
	}
	typ = strings.ToUpper(strings.TrimSpace(typ))
	if !recordTypes[typ] {
		return "", "", "", fieldErr("type", "unsupported type %q (A, AAAA, CNAME, TXT, MX, NS, SOA, SRV, PTR)", typ)
	}
	data = strings.TrimSpace(data)
	if data == "" {
		return name, typ, "", nil
	}
	d, err := parseData(typ, data)
	if err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			fe.Field = "data"
		}
		return "", "", "", err
	}
	return name, typ, d, nil
}
