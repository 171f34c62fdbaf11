package prober

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	"github.com/switchboard-net/switchboard/services/prober/allow"
)

// server implements switchboard.prober.v1.Prober.
type server struct {
	proberv1.UnimplementedProberServer
	r     *runner
	sched *scheduler
}

var _ proberv1.ProberServer = (*server)(nil)

// statusOf maps a prepare error to a gRPC status.
func statusOf(err error) error {
	var fe *fieldError
	var pe *preconditionError
	var re *registryError
	switch {
	case errors.As(err, &re):
		return re.GRPCStatus().Err()
	case errors.As(err, &fe):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, allow.ErrDenied):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.As(err, &pe):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Unavailable, err.Error())
}

// Run runs one job, streaming progress and then the result.
func (s *server) Run(req *proberv1.RunRequest, stream grpc.ServerStreamingServer[proberv1.RunResponse]) error {
	ctx := stream.Context()
	j, err := s.r.prepare(ctx, req.GetSpec(), "spec")
	if err != nil {
		var re *resolveError
		if errors.As(err, &re) {
			// The name does not resolve: a failed job, not bad input.
			return stream.Send(&proberv1.RunResponse{Event: &proberv1.RunResponse_Result{Result: failed(err)}})
		}
		return statusOf(err)
	}
	var sendErr error
	emit := lockedEmit(func(p *proberv1.Progress) {
		if sendErr == nil {
			sendErr = stream.Send(&proberv1.RunResponse{Event: &proberv1.RunResponse_Progress{Progress: p}})
		}
	})
	res := s.r.execute(ctx, j, "", emit)
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	if sendErr != nil {
		return sendErr
	}
	return stream.Send(&proberv1.RunResponse{Event: &proberv1.RunResponse_Result{Result: redactResult(ctx, res)}})
}

// Schedule adds or replaces a periodic job.
func (s *server) Schedule(ctx context.Context, req *proberv1.ScheduleRequest) (*proberv1.ScheduleResponse, error) {
	job, err := s.sched.add(ctx, req.GetJob())
	if err != nil {
		return nil, statusOf(err)
	}
	return &proberv1.ScheduleResponse{Job: job}, nil
}

// Unschedule removes a periodic job.
func (s *server) Unschedule(ctx context.Context, req *proberv1.UnscheduleRequest) (*proberv1.UnscheduleResponse, error) {
	if err := validID(req.GetId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, "id: "+err.Error())
	}
	found, err := s.sched.remove(ctx, req.GetId())
	if err != nil {
		return nil, statusOf(err)
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "job %q not found", req.GetId())
	}
	return &proberv1.UnscheduleResponse{}, nil
}

// ListJobs lists periodic jobs by id; checks' expect_body patterns and
// URL credentials are redacted for callers who are not operators.
func (s *server) ListJobs(ctx context.Context, _ *proberv1.ListJobsRequest) (*proberv1.ListJobsResponse, error) {
	jobs, stale := s.sched.list()
	return &proberv1.ListJobsResponse{Jobs: redactJobs(ctx, jobs), Stale: stale}, nil
}

// Results returns a job's recent results, newest first; checks' details
// are redacted for callers who are not operators.
func (s *server) Results(ctx context.Context, req *proberv1.ResultsRequest) (*proberv1.ResultsResponse, error) {
	if err := validID(req.GetId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, "id: "+err.Error())
	}
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = 20
	}
	res, ok := s.sched.results(req.GetId(), limit)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "job %q not found", req.GetId())
	}
	return &proberv1.ResultsResponse{Results: redactResults(ctx, res)}, nil
}
