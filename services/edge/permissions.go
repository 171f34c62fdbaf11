package edge

import (
	"github.com/switchboard-net/switchboard/pkg/access"
	edgev1 "github.com/switchboard-net/switchboard/proto/switchboard/edge/v1"
)

// Methods is the permission each call of the edge's gRPC API needs: the
// views of routes and backends span every service (service "*" read);
// changing a backend's weight or state operates the edge (operator).
var Methods = access.Methods{
	edgev1.Edge_ListRoutes_FullMethodName:   access.Static(access.Service("*", access.Read)),
	edgev1.Edge_ListBackends_FullMethodName: access.Static(access.Service("*", access.Read)),
	edgev1.Edge_SetBackend_FullMethodName:   access.Static(access.Operator()),
}

// The runtime API's commands need the same permissions as their gRPC twins.
var (
	needShow    = access.Service("*", access.Read)
	needOperate = access.Operator()
)
