package edge

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	edgev1 "github.com/switchboard-net/switchboard/proto/switchboard/edge/v1"
)

// grpcAPI serves the Edge gRPC service: the runtime API over gRPC.
type grpcAPI struct {
	edgev1.UnimplementedEdgeServer
	e *Edge
}

func (a *grpcAPI) ListRoutes(context.Context, *edgev1.ListRoutesRequest) (*edgev1.ListRoutesResponse, error) {
	resp := &edgev1.ListRoutesResponse{}
	for _, r := range a.e.listRoutes() {
		resp.Routes = append(resp.Routes, &edgev1.Route{Protocol: r.Protocol, Host: r.Host, PathPrefix: r.PathPrefix,
			Service: r.Service, Source: r.Source, StripPrefix: r.Strip, Headers: r.Headers})
	}
	return resp, nil
}

func (a *grpcAPI) ListBackends(_ context.Context, req *edgev1.ListBackendsRequest) (*edgev1.ListBackendsResponse, error) {
	if s := req.GetService(); s != "" && a.e.ups.lookup(s) == nil {
		return nil, status.Errorf(codes.NotFound, "service %q: not known to this edge", s)
	}
	resp := &edgev1.ListBackendsResponse{}
	for _, b := range a.e.ups.backends(req.GetService()) {
		resp.Backends = append(resp.Backends, backendProto(b))
	}
	return resp, nil
}

func (a *grpcAPI) SetBackend(_ context.Context, req *edgev1.SetBackendRequest) (*edgev1.SetBackendResponse, error) {
	if req.GetService() == "" {
		return nil, status.Error(codes.InvalidArgument, "service: required")
	}
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id: required")
	}
	if req.Disabled == nil && req.Weight == nil {
		return nil, status.Error(codes.InvalidArgument, "disabled or weight: set at least one")
	}
	if req.Weight != nil && *req.Weight > 1_000_000 {
		return nil, status.Error(codes.InvalidArgument, "weight: must be 0-1000000")
	}
	b, err := a.e.ups.setOverride(req.GetService(), req.GetId(), req.Disabled, req.Weight)
	if err != nil {
		if errors.Is(err, errNotFound) {
			return nil, status.Error(codes.NotFound, err.Error())
		}
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return &edgev1.SetBackendResponse{Backend: backendProto(b)}, nil
}

func backendProto(b BackendInfo) *edgev1.Backend {
	return &edgev1.Backend{Service: b.Service, Id: b.ID, Address: b.Addr, Weight: b.Weight,
		Disabled: b.Disabled, Healthy: b.Healthy, Active: uint64(max(b.Active, 0)), Total: b.Total, Failures: b.Failures,
		Ejected: b.Ejected, Breaker: b.Breaker}
}
