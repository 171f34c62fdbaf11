package dashboard

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// fakeRegistry answers ListServices and GetService from a map; other
// methods are not used by the source (calling them panics).
type fakeRegistry struct {
	registryv1.RegistryClient
	services map[string][]*registryv1.Instance
	err      error
	sawAll   bool
}

func (f *fakeRegistry) ListServices(ctx context.Context, _ *registryv1.ListServicesRequest, _ ...grpc.CallOption) (*registryv1.ListServicesResponse, error) {
	if _, ok := ctx.Deadline(); !ok {
		return nil, errors.New("call without deadline")
	}
	if f.err != nil {
		return nil, f.err
	}
	resp := &registryv1.ListServicesResponse{}
	for _, name := range []string{"api", "demo"} {
		if _, ok := f.services[name]; ok {
			resp.Services = append(resp.Services, &registryv1.ServiceSummary{Name: name})
		}
	}
	return resp, nil
}

func (f *fakeRegistry) GetService(ctx context.Context, req *registryv1.GetServiceRequest, _ ...grpc.CallOption) (*registryv1.GetServiceResponse, error) {
	if _, ok := ctx.Deadline(); !ok {
		return nil, errors.New("call without deadline")
	}
	f.sawAll = f.sawAll || req.GetIncludeUnhealthy()
	ins, ok := f.services[req.GetService()]
	if !ok {
		return nil, status.Error(codes.NotFound, "no such service")
	}
	return &registryv1.GetServiceResponse{Instances: ins}, nil
}

type fakeProber struct {
	proberv1.ProberClient
	jobs    []*proberv1.Job
	results map[string][]*proberv1.JobResult
	err     error
}

func (f *fakeProber) ListJobs(context.Context, *proberv1.ListJobsRequest, ...grpc.CallOption) (*proberv1.ListJobsResponse, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &proberv1.ListJobsResponse{Jobs: f.jobs}, nil
}

func (f *fakeProber) Results(_ context.Context, req *proberv1.ResultsRequest, _ ...grpc.CallOption) (*proberv1.ResultsResponse, error) {
	if req.GetLimit() != 1 {
		return nil, errors.New("want only the latest result")
	}
	return &proberv1.ResultsResponse{Results: f.results[req.GetId()]}, nil
}

func inst(svc, id, addr string, port uint32, h registryv1.HealthStatus) *registryv1.Instance {
	return &registryv1.Instance{Service: svc, Id: id, Address: addr, Port: port, Health: h}
}

func TestGRPCSourceState(t *testing.T) {
	at := time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)
	reg := &fakeRegistry{services: map[string][]*registryv1.Instance{
		"demo": {
			inst("demo", "demo-1", "172.18.0.7", 8080, registryv1.HealthStatus_HEALTH_STATUS_PASSING),
			inst("demo", "demo-2", "172.18.0.8", 8080, registryv1.HealthStatus_HEALTH_STATUS_CRITICAL),
		},
		"api": {inst("api", "api-1", "fd00::1", 9000, registryv1.HealthStatus_HEALTH_STATUS_UNSPECIFIED)},
	}}
	prb := &fakeProber{
		jobs: []*proberv1.Job{
			{Id: "ping-demo", Spec: &proberv1.JobSpec{Kind: &proberv1.JobSpec_Ping{Ping: &proberv1.PingSpec{Target: "172.18.0.7"}}}},
			{Id: "check-demo", Spec: &proberv1.JobSpec{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{Kind: "http", Target: "http://172.18.0.8:8080/healthz"}}}},
			{Id: "scan", Spec: &proberv1.JobSpec{Kind: &proberv1.JobSpec_Scan{Scan: &proberv1.ScanSpec{Target: "172.18.0.7"}}}},
			{Id: "never-ran", Spec: &proberv1.JobSpec{Kind: &proberv1.JobSpec_Ping{Ping: &proberv1.PingSpec{Target: "10.1.1.1"}}}},
		},
		results: map[string][]*proberv1.JobResult{
			"ping-demo": {{JobId: "ping-demo", StartedAt: timestamppb.New(at), Success: true,
				Result: &proberv1.JobResult_Ping{Ping: &proberv1.PingResult{Sent: 3, Received: 3, Avg: durationpb.New(1500 * time.Microsecond)}}}},
			"check-demo": {{JobId: "check-demo", StartedAt: timestamppb.New(at), Success: false,
				Result: &proberv1.JobResult_Check{Check: &proberv1.CheckResult{Ok: false, Duration: durationpb.New(4 * time.Millisecond)}}}},
			"scan": {{JobId: "scan", Success: true}},
		},
	}
	backends := func() []BackendStat {
		return []BackendStat{
			{Service: "demo", ID: "demo-1", Addr: "172.18.0.7:8080", Requests: 75},
			{Service: "demo", ID: "demo-2", Addr: "172.18.0.8:8080", Requests: 25},
			{Service: "static", Addr: "10.9.9.9:80", Requests: 7},
		}
	}
	st, err := NewGRPCSource(reg, prb, backends).State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reg.sawAll {
		t.Error("GetService did not ask for unhealthy instances")
	}
	if len(st.Errors) != 0 {
		t.Errorf("errors: %v", st.Errors)
	}
	want := []Service{
		{Name: "api", Instances: []Instance{{ID: "api-1", Addr: "[fd00::1]:9000", Health: HealthUnknown}}},
		{Name: "demo", Instances: []Instance{
			{ID: "demo-1", Addr: "172.18.0.7:8080", Health: HealthPassing, Share: 0.75, Requests: 75},
			{ID: "demo-2", Addr: "172.18.0.8:8080", Health: HealthCritical, Share: 0.25, Requests: 25},
		}},
		{Name: "static", Instances: []Instance{{ID: "10.9.9.9:80", Addr: "10.9.9.9:80", Health: HealthUnknown, Share: 1, Requests: 7}}},
	}
	if len(st.Services) != len(want) {
		t.Fatalf("services %+v, want %+v", st.Services, want)
	}
	for i := range want {
		g, w := st.Services[i], want[i]
		if g.Name != w.Name || len(g.Instances) != len(w.Instances) {
			t.Fatalf("service %d: %+v, want %+v", i, g, w)
		}
		for j := range w.Instances {
			gi, wi := g.Instances[j], w.Instances[j]
			if gi.ID != wi.ID || gi.Addr != wi.Addr || gi.Health != wi.Health || gi.Requests != wi.Requests || math.Abs(gi.Share-wi.Share) > 1e-9 {
				t.Errorf("%s instance %d: %+v, want %+v", w.Name, j, gi, wi)
			}
		}
	}
	wantProbes := []Probe{
		{Name: "ping-demo", Target: "172.18.0.7", RTTms: 1.5, OK: true, At: at},
		{Name: "check-demo", Target: "http http://172.18.0.8:8080/healthz", RTTms: 4, OK: false, At: at},
	}
	if len(st.Probes) != len(wantProbes) {
		t.Fatalf("probes %+v, want %+v", st.Probes, wantProbes)
	}
	for i, w := range wantProbes {
		if g := st.Probes[i]; g.Name != w.Name || g.Target != w.Target || math.Abs(g.RTTms-w.RTTms) > 1e-9 || g.OK != w.OK || !g.At.Equal(w.At) {
			t.Errorf("probe %d: %+v, want %+v", i, g, w)
		}
	}
}

func TestGRPCSourcePartialFailure(t *testing.T) {
	tests := []struct {
		name     string
		reg      *fakeRegistry
		prb      *fakeProber
		backends func() []BackendStat
		wantErr  bool
		errs     int
	}{
		{name: "prober down", reg: &fakeRegistry{services: map[string][]*registryv1.Instance{"demo": nil}},
			prb: &fakeProber{err: status.Error(codes.Unavailable, "down")}, errs: 1},
		{name: "registry down", reg: &fakeRegistry{err: status.Error(codes.Unavailable, "down")},
			prb: &fakeProber{}, errs: 1},
		{name: "everything down", reg: &fakeRegistry{err: status.Error(codes.Unavailable, "down")},
			prb: &fakeProber{err: status.Error(codes.Unavailable, "down")}, wantErr: true},
		{name: "everything down but traffic", reg: &fakeRegistry{err: status.Error(codes.Unavailable, "down")},
			prb:      &fakeProber{err: status.Error(codes.Unavailable, "down")},
			backends: func() []BackendStat { return []BackendStat{{Service: "demo", ID: "d", Requests: 1}} }, errs: 2},
		{name: "registry only", reg: &fakeRegistry{services: map[string][]*registryv1.Instance{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var src *GRPCSource
			switch {
			case tt.prb == nil:
				src = NewGRPCSource(tt.reg, nil, tt.backends)
			default:
				src = NewGRPCSource(tt.reg, tt.prb, tt.backends)
			}
			st, err := src.State(context.Background())
			if tt.wantErr {
				if err == nil {
					t.Fatalf("state %+v, want an error", st)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Errors) != tt.errs {
				t.Errorf("errors %v, want %d", st.Errors, tt.errs)
			}
		})
	}
}
