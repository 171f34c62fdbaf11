package resolver

import (
	"github.com/switchboard-net/switchboard/pkg/access"
	resolverv1 "github.com/switchboard-net/switchboard/proto/switchboard/resolver/v1"
)

// Methods is the permission each resolver RPC needs. Lookup answers what
// the DNS port answers anyone; record changes need records write on the
// zone holding the name; the cache is operator's to flush.
var Methods = access.Methods{
	resolverv1.Resolver_Lookup_FullMethodName: access.Public,
	resolverv1.Resolver_UpsertRecord_FullMethodName: access.For(func(r *resolverv1.UpsertRecordRequest) []access.Need {
		return []access.Need{access.Records(r.GetRecord().GetName())}
	}),
	resolverv1.Resolver_DeleteRecord_FullMethodName: access.For(func(r *resolverv1.DeleteRecordRequest) []access.Need {
		return []access.Need{access.Records(r.GetName())}
	}),
	resolverv1.Resolver_ListRecords_FullMethodName: access.For(func(r *resolverv1.ListRecordsRequest) []access.Need {
		s := r.GetSuffix()
		if s == "" {
			s = "*"
		}
		return []access.Need{access.RecordsRead(s)}
	}),
	resolverv1.Resolver_CacheStats_FullMethodName: access.Static(access.Service("*", access.Read)),
	resolverv1.Resolver_FlushCache_FullMethodName: access.Static(access.Operator()),
}
