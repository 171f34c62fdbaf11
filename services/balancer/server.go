package balancer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchboard-net/switchboard/pkg/balance"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
)

// maxReportBatch bounds one Report call.
const maxReportBatch = 10000

// server is the gRPC face of a Balancer.
type server struct {
	balancerv1.UnimplementedBalancerServer
	b *Balancer
}

// invalid turns field errors into InvalidArgument with a BadRequest detail
// naming every field at fault.
func invalid(err error) error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	br := &errdetails.BadRequest{}
	for _, e := range list {
		var fe *fieldError
		if errors.As(e, &fe) {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: fe.field, Description: fe.err.Error()})
		}
	}
	st := status.New(codes.InvalidArgument, err.Error())
	if ds, derr := st.WithDetails(br); derr == nil {
		st = ds
	}
	return st.Err()
}

// Pick chooses one endpoint of a service.
func (s *server) Pick(_ context.Context, req *balancerv1.PickRequest) (*balancerv1.PickResponse, error) {
	if err := validService("service", req.Service); err != nil {
		return nil, invalid(err)
	}
	sv := s.b.lookup(req.Service)
	var info balance.PickInfo
	if req.HashKey != "" {
		info = balance.PickInfo{Hash: balance.HashString(req.HashKey), HasHash: true}
	}
	if sv == nil {
		if !s.b.hasSnapshot() {
			// Not knowing the service is not knowing it is absent.
			s.b.met.picks.WithLabelValues("unavailable").Inc()
			return nil, status.Errorf(codes.Unavailable, "no registry snapshot yet: service %q is not known so far; try again", req.Service)
		}
		s.b.met.picks.WithLabelValues("not_found").Inc()
		return nil, status.Errorf(codes.NotFound, "service %q is not registered", req.Service)
	}
	sv.mu.Lock()
	registered, healthy := len(sv.instances), sv.healthy
	sv.mu.Unlock()
	if registered > 0 && healthy == 0 {
		// Panic mode spreads load over partly failing sets; with no healthy
		// instance at all the honest answer is that none is available.
		s.b.met.picks.WithLabelValues("unavailable").Inc()
		return nil, status.Errorf(codes.Unavailable, "service %q: no healthy endpoint (%d registered, all failing their health checks)", req.Service, registered)
	}
	sel, err := sv.set.Pick(info)
	switch {
	case errors.Is(err, balance.ErrNoEndpoint):
		s.b.met.picks.WithLabelValues("not_found").Inc()
		return nil, status.Errorf(codes.NotFound, "service %q has no registered instances", req.Service)
	case errors.Is(err, balance.ErrNoHealthy):
		s.b.met.picks.WithLabelValues("unavailable").Inc()
		return nil, status.Errorf(codes.Unavailable, "service %q: no healthy endpoint (%d registered, none healthy and not ejected)", req.Service, len(sv.set.Endpoints()))
	case err != nil:
		return nil, status.Errorf(codes.Internal, "pick %q: %v", req.Service, err)
	}
	// The caller's request is not tracked here; its outcome comes back
	// through Report.
	sel.Done(balance.Ignore, 0)
	sv.mu.Lock()
	in := sv.instances[sel.Endpoint.ID()]
	sv.mu.Unlock()
	if in == nil {
		return nil, status.Errorf(codes.Unavailable, "service %q changed during the pick; try again", req.Service)
	}
	s.b.met.picks.WithLabelValues("ok").Inc()
	return &balancerv1.PickResponse{Endpoint: endpointOf(in, sel.Endpoint)}, nil
}

// Report feeds a batch of outcomes into latency estimates and outlier
// detection. Reports for services or endpoints no longer known are skipped
// (they raced a deregistration); accepted counts the rest.
func (s *server) Report(_ context.Context, req *balancerv1.ReportRequest) (*balancerv1.ReportResponse, error) {
	if len(req.Reports) > maxReportBatch {
		return nil, invalid(&fieldError{"reports", fmt.Errorf("%d reports; at most %d per call", len(req.Reports), maxReportBatch)})
	}
	var errs []error
	for i, r := range req.Reports {
		field := fmt.Sprintf("reports[%d]", i)
		if err := validService(field+".service", r.Service); err != nil {
			errs = append(errs, err)
		}
		if r.EndpointId == "" {
			errs = append(errs, &fieldError{field + ".endpoint_id", errors.New("required")})
		}
		if _, ok := outcomeOf(r.Outcome); !ok {
			errs = append(errs, &fieldError{field + ".outcome", fmt.Errorf("%v is not an outcome", r.Outcome)})
		}
		if r.Latency != nil && (r.Latency.CheckValid() != nil || r.Latency.AsDuration() < 0) {
			errs = append(errs, &fieldError{field + ".latency", errors.New("must be a valid, non-negative duration")})
		}
	}
	if len(errs) > 0 {
		return nil, invalid(errors.Join(errs...))
	}
	touched := map[*svc]bool{}
	var accepted uint32
	for _, r := range req.Reports {
		sv := s.b.lookup(r.Service)
		if sv == nil {
			continue
		}
		o, _ := outcomeOf(r.Outcome)
		var lat time.Duration
		if r.Latency != nil {
			lat = r.Latency.AsDuration()
		}
		if sv.set.Observe(r.EndpointId, o, lat) {
			accepted++
			touched[sv] = true
		}
	}
	s.b.met.reports.Add(float64(accepted))
	changed := false
	for sv := range touched {
		if sv.reshape() {
			changed = true
		}
	}
	if changed {
		s.b.notify()
	}
	return &balancerv1.ReportResponse{Accepted: accepted}, nil
}

func outcomeOf(o balancerv1.Outcome) (balance.Outcome, bool) {
	switch o {
	case balancerv1.Outcome_OUTCOME_SUCCESS:
		return balance.Success, true
	case balancerv1.Outcome_OUTCOME_FAILURE, balancerv1.Outcome_OUTCOME_TIMEOUT:
		return balance.Failure, true
	}
	return balance.Ignore, false
}

// WatchEndpoints streams a service's endpoint set (or every service's, one
// message per service) each time it changes.
func (s *server) WatchEndpoints(req *balancerv1.WatchEndpointsRequest, stream balancerv1.Balancer_WatchEndpointsServer) error {
	if req.Service != "" {
		if err := validService("service", req.Service); err != nil {
			return invalid(err)
		}
	}
	s.b.met.watchers.Inc()
	defer s.b.met.watchers.Dec()
	type sent struct {
		version uint64
		stale   bool
	}
	seen := map[string]sent{}
	first := true
	for {
		s.b.mu.RLock()
		wake := s.b.changed
		stale := s.b.stale
		var list []*svc
		if req.Service != "" {
			if sv := s.b.services[req.Service]; sv != nil {
				list = append(list, sv)
			}
		} else {
			for _, sv := range s.b.services {
				list = append(list, sv)
			}
		}
		s.b.mu.RUnlock()

		if first && req.Service != "" && len(list) == 0 {
			// Not registered yet: say so with an empty set, then wait.
			if err := stream.Send(&balancerv1.WatchEndpointsResponse{
				Service: req.Service, Policy: s.b.policy(req.Service), Stale: stale,
			}); err != nil {
				return err
			}
		}
		first = false
		for _, sv := range list {
			sv.mu.Lock()
			v := sv.version
			sv.mu.Unlock()
			if prev, ok := seen[sv.name]; ok && prev.version == v && prev.stale == stale {
				continue
			}
			if err := stream.Send(s.b.snapshot(sv, stale)); err != nil {
				return err
			}
			seen[sv.name] = sent{v, stale}
		}
		select {
		case <-stream.Context().Done():
			return status.FromContextError(stream.Context().Err()).Err()
		case <-wake:
		}
	}
}

// SetPolicy validates a service's policy and stores it in the registry
// (every balancer replica applies it from there); this one applies it at
// once.
func (s *server) SetPolicy(ctx context.Context, req *balancerv1.SetPolicyRequest) (*balancerv1.SetPolicyResponse, error) {
	if err := validService("service", req.Service); err != nil {
		return nil, invalid(err)
	}
	if req.Policy == nil {
		return nil, invalid(&fieldError{"policy", errors.New("required")})
	}
	p, err := s.b.setPolicy(ctx, req.Service, req.Policy)
	if err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			return nil, invalid(err)
		}
		if errors.Is(err, errRegistry) && status.Code(err) == codes.PermissionDenied {
			return nil, status.Errorf(codes.PermissionDenied, "the registry refused the balancer's policy write (its token needs service %q write): %v", req.Service, err)
		}
		return nil, status.Errorf(codes.Unavailable, "storing the policy in the registry: %v", err)
	}
	return &balancerv1.SetPolicyResponse{Policy: p}, nil
}

// GetPolicy returns a service's policy (the default when none was set).
func (s *server) GetPolicy(_ context.Context, req *balancerv1.GetPolicyRequest) (*balancerv1.GetPolicyResponse, error) {
	if err := validService("service", req.Service); err != nil {
		return nil, invalid(err)
	}
	return &balancerv1.GetPolicyResponse{Policy: s.b.policy(req.Service), Stale: s.b.policiesStale()}, nil
}
