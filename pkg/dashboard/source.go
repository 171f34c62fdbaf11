package dashboard

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	edgev1 "github.com/switchboard-net/switchboard/proto/switchboard/edge/v1"
	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// Bounds of one State read, so that a large catalog or a slow service
// cannot make the page (or the process serving it) do unbounded work.
const (
	maxServices = 64
	maxJobs     = 32
	callTimeout = 2 * time.Second
)

// BackendStat is one backend's traffic as the data plane (the edge) counts it.
type BackendStat struct {
	// Service is the service name.
	Service string
	// ID is the registry instance id ("" when the backend is not registered).
	ID string
	// Addr is host:port.
	Addr string
	// Requests is how many requests (or connections) went to the backend.
	Requests uint64
}

// GRPCSource builds State from the registry, the prober and the edge's counters.
type GRPCSource struct {
	registry registryv1.RegistryClient
	prober   proberv1.ProberClient
	backends func() []BackendStat
}

var _ Source = (*GRPCSource)(nil)

// NewGRPCSource returns a Source reading services and instances from the
// registry (ListServices, then GetService with unhealthy instances), the
// latest RTT of every ping and check job from the prober (ListJobs, then
// Results), and traffic shares from backends. Any of the three may be nil.
func NewGRPCSource(registry registryv1.RegistryClient, prober proberv1.ProberClient, backends func() []BackendStat) *GRPCSource {
	return &GRPCSource{registry: registry, prober: prober, backends: backends}
}

// State reads the current state. Parts that fail are named in State.Errors;
// it fails only when nothing at all could be read.
func (s *GRPCSource) State(ctx context.Context) (*State, error) {
	st := &State{At: time.Now()}
	var stats []BackendStat
	if s.backends != nil {
		stats = s.backends()
	}
	var regErr, probeErr error
	if s.registry != nil {
		st.Services, regErr = s.services(ctx)
		if regErr != nil {
			st.Errors = append(st.Errors, regErr.Error())
		}
	}
	st.Services = mergeTraffic(st.Services, stats)
	if s.prober != nil {
		st.Probes, probeErr = s.probes(ctx)
		if probeErr != nil {
			st.Errors = append(st.Errors, probeErr.Error())
		}
	}
	if (s.registry == nil || regErr != nil) && (s.prober == nil || probeErr != nil) && len(stats) == 0 &&
		(regErr != nil || probeErr != nil) {
		return nil, fmt.Errorf("dashboard state: %v", st.Errors)
	}
	return st, nil
}

func (s *GRPCSource) services(ctx context.Context) ([]Service, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	list, err := s.registry.ListServices(cctx, &registryv1.ListServicesRequest{})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("registry: list services: %w", err)
	}
	var out []Service
	for i, sum := range list.GetServices() {
		if i == maxServices {
			return out, fmt.Errorf("registry: showing the first %d of %d services", maxServices, len(list.GetServices()))
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		resp, err := s.registry.GetService(cctx, &registryv1.GetServiceRequest{Service: sum.GetName(), IncludeUnhealthy: true})
		cancel()
		if err != nil {
			return out, fmt.Errorf("registry: get service %s: %w", sum.GetName(), err)
		}
		svc := Service{Name: sum.GetName(), Instances: []Instance{}}
		for _, in := range resp.GetInstances() {
			svc.Instances = append(svc.Instances, Instance{
				ID:     in.GetId(),
				Addr:   net.JoinHostPort(in.GetAddress(), strconv.Itoa(int(in.GetPort()))),
				Health: healthName(in.GetHealth()),
			})
		}
		out = append(out, svc)
	}
	return out, nil
}

// healthName maps the registry's health to the page's words.
func healthName(h registryv1.HealthStatus) string {
	switch h {
	case registryv1.HealthStatus_HEALTH_STATUS_PASSING:
		return HealthPassing
	case registryv1.HealthStatus_HEALTH_STATUS_WARNING:
		return HealthWarning
	case registryv1.HealthStatus_HEALTH_STATUS_CRITICAL:
		return HealthCritical
	default:
		return HealthUnknown
	}
}

// mergeTraffic adds the edge's counters to the registry's instances (by
// service and id, else by address) and computes each instance's share of
// its service's requests. Backends the registry does not know (static
// routes) are listed too, with unknown health.
func mergeTraffic(svcs []Service, stats []BackendStat) []Service {
	byName := make(map[string]int, len(svcs))
	for i, s := range svcs {
		byName[s.Name] = i
	}
	for _, b := range stats {
		si, ok := byName[b.Service]
		if !ok {
			svcs = append(svcs, Service{Name: b.Service, Instances: []Instance{}})
			si = len(svcs) - 1
			byName[b.Service] = si
		}
		ins := svcs[si].Instances
		found := false
		for i := range ins {
			if (b.ID != "" && ins[i].ID == b.ID) || (b.ID == "" && ins[i].Addr == b.Addr) {
				ins[i].Requests += b.Requests
				found = true
				break
			}
		}
		if !found {
			id := b.ID
			if id == "" {
				id = b.Addr
			}
			ins = append(ins, Instance{ID: id, Addr: b.Addr, Health: HealthUnknown, Requests: b.Requests})
		}
		svcs[si].Instances = ins
	}
	for si := range svcs {
		var total uint64
		for _, in := range svcs[si].Instances {
			total += in.Requests
		}
		for i := range svcs[si].Instances {
			if total > 0 {
				svcs[si].Instances[i].Share = float64(svcs[si].Instances[i].Requests) / float64(total)
			}
		}
		sort.Slice(svcs[si].Instances, func(a, b int) bool { return svcs[si].Instances[a].ID < svcs[si].Instances[b].ID })
	}
	sort.Slice(svcs, func(a, b int) bool { return svcs[a].Name < svcs[b].Name })
	return svcs
}

func (s *GRPCSource) probes(ctx context.Context) ([]Probe, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	jobs, err := s.prober.ListJobs(cctx, &proberv1.ListJobsRequest{})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("prober: list jobs: %w", err)
	}
	out := []Probe{}
	n := 0
	for _, job := range jobs.GetJobs() {
		target, ok := rttTarget(job.GetSpec())
		if !ok {
			continue
		}
		if n == maxJobs {
			return out, fmt.Errorf("prober: showing the first %d jobs", maxJobs)
		}
		n++
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		res, err := s.prober.Results(cctx, &proberv1.ResultsRequest{Id: job.GetId(), Limit: 1})
		cancel()
		if err != nil {
			return out, fmt.Errorf("prober: results of %s: %w", job.GetId(), err)
		}
		if len(res.GetResults()) == 0 {
			continue
		}
		out = append(out, probeOf(job.GetId(), target, res.GetResults()[0]))
	}
	return out, nil
}

// rttTarget reports whether a job measures a round-trip time, and its target.
func rttTarget(spec *proberv1.JobSpec) (string, bool) {
	switch {
	case spec.GetPing() != nil:
		return spec.GetPing().GetTarget(), true
	case spec.GetCheck() != nil:
		return spec.GetCheck().GetKind() + " " + spec.GetCheck().GetTarget(), true
	}
	return "", false
}

// probeOf turns a job's result into a Probe: a ping's mean RTT, or a
// check's duration.
func probeOf(id, target string, r *proberv1.JobResult) Probe {
	p := Probe{Name: id, Target: target, OK: r.GetSuccess(), At: r.GetStartedAt().AsTime()}
	switch {
	case r.GetPing() != nil:
		p.RTTms = ms(r.GetPing().GetAvg().AsDuration())
		p.OK = p.OK && r.GetPing().GetReceived() > 0
	case r.GetCheck() != nil:
		p.RTTms = ms(r.GetCheck().GetDuration().AsDuration())
		p.OK = p.OK && r.GetCheck().GetOk()
	default:
		p.RTTms = ms(r.GetDuration().AsDuration())
	}
	return p
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// EdgeBackends returns a backends callback for NewGRPCSource that reads an
// edge's counters over its gRPC API (ListBackends), for processes that do
// not hold the edge in memory (`switchboard dev` may use either).
func EdgeBackends(edge edgev1.EdgeClient) func() []BackendStat {
	return func() []BackendStat {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		resp, err := edge.ListBackends(ctx, &edgev1.ListBackendsRequest{})
		if err != nil {
			return nil
		}
		out := make([]BackendStat, 0, len(resp.GetBackends()))
		for _, b := range resp.GetBackends() {
			out = append(out, BackendStat{Service: b.GetService(), ID: b.GetId(), Addr: b.GetAddress(), Requests: b.GetTotal()})
		}
		return out
	}
}
