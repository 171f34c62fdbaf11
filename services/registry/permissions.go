package registry

import (
	"github.com/switchboard-net/switchboard/pkg/access"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
)

// RegisteredByKey is the instance metadata key where the registry records
// who registered an instance (the caller's token name or certificate name).
// The registry owns it: a value sent by the caller is replaced.
const RegisteredByKey = "registered-by"

// Methods is the permission each registry RPC needs. Writes to an instance
// (register, replace, deregister, heartbeat, health) need write on its
// service; reads need read; ListServices is filtered per caller; records
// need records write on the zone holding the name, and read to list them.
var Methods = access.Methods{
	registryv1.Registry_Register_FullMethodName: access.For(func(r *registryv1.RegisterRequest) []access.Need {
		return []access.Need{access.Service(r.GetInstance().GetService(), access.Write)}
	}),
	registryv1.Registry_Deregister_FullMethodName: access.ServiceName((*registryv1.DeregisterRequest).GetService, access.Write),
	registryv1.Registry_Heartbeat_FullMethodName:  access.ServiceName((*registryv1.HeartbeatRequest).GetService, access.Write),
	registryv1.Registry_SetHealth_FullMethodName:  access.ServiceName((*registryv1.SetHealthRequest).GetService, access.Write),
	registryv1.Registry_GetService_FullMethodName: access.ServiceName((*registryv1.GetServiceRequest).GetService, access.Read),
	registryv1.Registry_Watch_FullMethodName:      access.ServiceName((*registryv1.WatchRequest).GetService, access.Read),
	// Filtered in the handler: each caller sees the services it may read.
	registryv1.Registry_ListServices_FullMethodName: access.Public,
	registryv1.Registry_PutRecord_FullMethodName: access.For(func(r *registryv1.PutRecordRequest) []access.Need {
		return []access.Need{access.Records(r.GetRecord().GetName())}
	}),
	registryv1.Registry_DeleteRecord_FullMethodName: access.For(func(r *registryv1.DeleteRecordRequest) []access.Need {
		return []access.Need{access.Records(r.GetName())}
	}),
	registryv1.Registry_ListRecords_FullMethodName: access.For(func(r *registryv1.ListRecordsRequest) []access.Need {
		return []access.Need{access.RecordsRead(orAll(r.GetSuffix()))}
	}),
	registryv1.Registry_WatchRecords_FullMethodName: access.Static(access.RecordsRead("*")),
	// Shared configuration: a balancer policy is its service's (write to
	// change, read on every service to list or watch them all); prober jobs
	// aim the prober's packets and may carry a target's credentials, so
	// they are the operator's to change and to read.
	registryv1.Registry_PutConfig_FullMethodName: access.For(func(r *registryv1.PutConfigRequest) []access.Need {
		return []access.Need{configNeed(r.GetEntry().GetKind(), r.GetEntry().GetKey(), access.Write)}
	}),
	registryv1.Registry_DeleteConfig_FullMethodName: access.For(func(r *registryv1.DeleteConfigRequest) []access.Need {
		return []access.Need{configNeed(r.GetKind(), r.GetKey(), access.Write)}
	}),
	registryv1.Registry_ListConfig_FullMethodName: access.For(func(r *registryv1.ListConfigRequest) []access.Need {
		return []access.Need{configNeed(r.GetKind(), "*", access.Read)}
	}),
	registryv1.Registry_WatchConfig_FullMethodName: access.For(func(r *registryv1.WatchConfigRequest) []access.Need {
		return []access.Need{configNeed(r.GetKind(), "*", access.Read)}
	}),
}

// configNeed is the permission on a configuration entry (key "*": every
// entry of the kind). An unknown kind needs the operator permission: the
// handler then refuses it as invalid.
func configNeed(kind, key string, l access.Level) access.Need {
	if kind == catalog.KindPolicy {
		if key == "" {
			key = "*"
		}
		return access.Service(key, l)
	}
	return access.Operator()
}

func orAll(s string) string {
	if s == "" {
		return "*"
	}
	return s
}
