package resolver

import (
	"context"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	resolverv1 "github.com/switchboard-net/switchboard/proto/switchboard/resolver/v1"
)

// api is the switchboard.resolver.v1.Resolver gRPC service.
type api struct {
	resolverv1.UnimplementedResolverServer
	s   *server
	reg registryv1.RegistryClient
}

var _ resolverv1.ResolverServer = (*api)(nil)

// managedTypes are the record types UpsertRecord accepts.
var managedTypes = map[string]bool{"A": true, "AAAA": true, "CNAME": true, "TXT": true, "MX": true,
	"NS": true, "SOA": true, "SRV": true, "PTR": true}

// defaultRecordTTL is the TTL of a managed record stored without one.
const defaultRecordTTL = 300

// Lookup runs a query through the server, as a loopback client over TCP.
func (a *api) Lookup(_ context.Context, req *resolverv1.LookupRequest) (*resolverv1.LookupResponse, error) {
	name := dns.Fqdn(strings.TrimSpace(req.GetName()))
	if _, ok := dns.IsDomainName(name); !ok || req.GetName() == "" {
		return nil, status.Errorf(codes.InvalidArgument, "name: %q is not a domain name", req.GetName())
	}
	typ := strings.ToUpper(req.GetType())
	if typ == "" {
		typ = "A"
	}
	qtype, ok := dns.StringToType[typ]
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "type: unknown DNS type %q", req.GetType())
	}
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = true
	out, cached, err := a.s.respond(nil, q, netip.AddrFrom4([4]byte{127, 0, 0, 1}), false, false)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "answering %s %s: %v", name, typ, err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil {
		return nil, status.Errorf(codes.Internal, "unpacking our own answer: %v", err)
	}
	return &resolverv1.LookupResponse{
		Rcode:         dns.RcodeToString[m.Rcode],
		Authoritative: m.Authoritative,
		Answer:        toRecords(m.Answer, ""),
		Authority:     toRecords(m.Ns, ""),
		Additional:    toRecords(m.Extra, ""),
		Cached:        cached,
	}, nil
}

func toRecords(rrs []dns.RR, source string) []*resolverv1.Record {
	out := make([]*resolverv1.Record, 0, len(rrs))
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		out = append(out, toRecord(rr, source))
	}
	return out
}

func toRecord(rr dns.RR, source string) *resolverv1.Record {
	h := rr.Header()
	return &resolverv1.Record{
		Name:   h.Name,
		Type:   dns.TypeToString[h.Rrtype],
		Ttl:    h.Ttl,
		Data:   strings.TrimSpace(rdataString(rr)),
		Source: source,
	}
}

// canonical validates a record for the store and returns it in canonical
// form (lower-case fully qualified name, data as the parser prints it).
func (a *api) canonical(rec *resolverv1.Record) (*registryv1.Record, error) {
	if rec == nil {
		return nil, status.Error(codes.InvalidArgument, "record: required")
	}
	name := lowerASCII(dns.Fqdn(strings.TrimSpace(rec.GetName())))
	if _, ok := dns.IsDomainName(name); !ok || rec.GetName() == "" {
		return nil, status.Errorf(codes.InvalidArgument, "record.name: %q is not a domain name", rec.GetName())
	}
	typ := strings.ToUpper(rec.GetType())
	if !managedTypes[typ] {
		return nil, status.Errorf(codes.InvalidArgument, "record.type: %q is not one of A, AAAA, CNAME, TXT, MX, NS, SOA, SRV, PTR", rec.GetType())
	}
	if strings.TrimSpace(rec.GetData()) == "" {
		return nil, status.Error(codes.InvalidArgument, "record.data: required")
	}
	ttl := rec.GetTtl()
	if ttl == 0 {
		ttl = defaultRecordTTL
	}
	out := &registryv1.Record{Name: name, Type: typ, Ttl: ttl, Data: rec.GetData()}
	rr, err := recordRR(out)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "record.%v", err)
	}
	if a.s.auth.Load().zoneOf(name) == nil {
		return nil, status.Errorf(codes.InvalidArgument, "record.name: %s is outside every served zone (%s)", name, strings.Join(a.zoneNames(), ", "))
	}
	out.Data = strings.TrimSpace(rdataString(rr))
	return out, nil
}

func (a *api) zoneNames() []string {
	var names []string
	for _, z := range a.s.auth.Load().zones {
		names = append(names, z.origin)
	}
	slices.Sort(names)
	return names
}

// registryErr keeps the registry's status code (Unavailable when it
// cannot be reached) and says which call failed.
func registryErr(call string, err error) error {
	st := status.Convert(err)
	code := st.Code()
	if code == codes.Unknown {
		code = codes.Unavailable
	}
	return status.Errorf(code, "registry %s: %s", call, st.Message())
}

// UpsertRecord stores a managed record in the registry; it is served once
// the registry's WatchRecords delivers it.
func (a *api) UpsertRecord(ctx context.Context, req *resolverv1.UpsertRecordRequest) (*resolverv1.UpsertRecordResponse, error) {
	rec, err := a.canonical(req.GetRecord())
	if err != nil {
		return nil, err
	}
	resp, err := a.reg.PutRecord(ctx, &registryv1.PutRecordRequest{Record: rec})
	if err != nil {
		return nil, registryErr("PutRecord", err)
	}
	got := resp.GetRecord()
	if got == nil {
		got = rec
	}
	return &resolverv1.UpsertRecordResponse{Record: &resolverv1.Record{
		Name: got.GetName(), Type: got.GetType(), Ttl: got.GetTtl(), Data: got.GetData(), Source: "managed",
	}}, nil
}

// DeleteRecord removes managed records through the registry.
func (a *api) DeleteRecord(ctx context.Context, req *resolverv1.DeleteRecordRequest) (*resolverv1.DeleteRecordResponse, error) {
	name := lowerASCII(dns.Fqdn(strings.TrimSpace(req.GetName())))
	if _, ok := dns.IsDomainName(name); !ok || req.GetName() == "" {
		return nil, status.Errorf(codes.InvalidArgument, "name: %q is not a domain name", req.GetName())
	}
	typ := strings.ToUpper(req.GetType())
	if !managedTypes[typ] {
		return nil, status.Errorf(codes.InvalidArgument, "type: %q is not one of A, AAAA, CNAME, TXT, MX, NS, SOA, SRV, PTR", req.GetType())
	}
	data := req.GetData()
	if strings.TrimSpace(data) != "" {
		rr, err := recordRR(&registryv1.Record{Name: name, Type: typ, Data: data})
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%v", err)
		}
		data = strings.TrimSpace(rdataString(rr))
	}
	resp, err := a.reg.DeleteRecord(ctx, &registryv1.DeleteRecordRequest{Name: name, Type: typ, Data: data})
	if err != nil {
		return nil, registryErr("DeleteRecord", err)
	}
	return &resolverv1.DeleteRecordResponse{Deleted: resp.GetDeleted()}, nil
}

// ListRecords lists zone-file and managed records.
func (a *api) ListRecords(_ context.Context, req *resolverv1.ListRecordsRequest) (*resolverv1.ListRecordsResponse, error) {
	suffix := ""
	if req.GetSuffix() != "" {
		suffix = lowerASCII(dns.Fqdn(req.GetSuffix()))
		if _, ok := dns.IsDomainName(suffix); !ok {
			return nil, status.Errorf(codes.InvalidArgument, "suffix: %q is not a domain name", req.GetSuffix())
		}
	}
	var out []*resolverv1.Record
	keep := func(name string) bool { return suffix == "" || dns.IsSubDomain(suffix, lowerASCII(name)) }
	a.s.mu.Lock()
	for _, z := range a.s.static {
		src := "zonefile:" + z.src.path
		if keep(z.soa.Hdr.Name) {
			out = append(out, toRecord(z.soa, src))
		}
		for _, rr := range z.rrs {
			if keep(rr.Header().Name) {
				out = append(out, toRecord(rr, src))
			}
		}
	}
	for _, rec := range a.s.managed {
		if keep(rec.GetName()) {
			out = append(out, &resolverv1.Record{Name: rec.GetName(), Type: rec.GetType(), Ttl: rec.GetTtl(), Data: rec.GetData(), Source: "managed"})
		}
	}
	a.s.mu.Unlock()
	slices.SortStableFunc(out, func(x, y *resolverv1.Record) int {
		if c := strings.Compare(lowerASCII(x.Name), lowerASCII(y.Name)); c != 0 {
			return c
		}
		return strings.Compare(x.Type, y.Type)
	})
	return &resolverv1.ListRecordsResponse{Records: out}, nil
}

// CacheStats reports the forwarding cache's counters.
func (a *api) CacheStats(context.Context, *resolverv1.CacheStatsRequest) (*resolverv1.CacheStatsResponse, error) {
	c := a.s.cache
	return &resolverv1.CacheStatsResponse{
		Entries:         uint64(max(c.entries.Load(), 0)),
		Capacity:        uint64(c.capacity()),
		Hits:            c.hits.Load(),
		Misses:          c.misses.Load(),
		Evictions:       c.evictions.Load(),
		NegativeEntries: uint64(max(c.negative.Load(), 0)),
	}, nil
}

// FlushCache empties the cache or drops one name.
func (a *api) FlushCache(_ context.Context, req *resolverv1.FlushCacheRequest) (*resolverv1.FlushCacheResponse, error) {
	if n := req.GetName(); n != "" {
		if _, ok := dns.IsDomainName(n); !ok {
			return nil, status.Errorf(codes.InvalidArgument, "name: %q is not a domain name", n)
		}
	}
	return &resolverv1.FlushCacheResponse{Removed: a.s.cache.flush(req.GetName())}, nil
}
