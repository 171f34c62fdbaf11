package balancer

import (
	"context"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// fakeRegistry serves Watch from snapshots the test pushes, and keeps
// configuration entries (the policies) for PutConfig and WatchConfig.
type fakeRegistry struct {
	registryv1.UnimplementedRegistryServer
	mu      sync.Mutex
	index   uint64
	current []*registryv1.Instance
	config  map[string]*registryv1.ConfigEntry // policies by key
	wake    chan struct{}
}

func newFakeRegistry(t testing.TB) (*fakeRegistry, string, func()) {
	t.Helper()
	f := &fakeRegistry{wake: make(chan struct{}), config: map[string]*registryv1.ConfigEntry{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	registryv1.RegisterRegistryServer(srv, f)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return f, ln.Addr().String(), srv.Stop
}

func (f *fakeRegistry) set(instances ...*registryv1.Instance) {
	f.mu.Lock()
	f.index++
	f.current = instances
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

func (f *fakeRegistry) Watch(req *registryv1.WatchRequest, stream registryv1.Registry_WatchServer) error {
	var sent uint64
	for {
		f.mu.Lock()
		idx, list, wake := f.index, f.current, f.wake
		f.mu.Unlock()
		if idx != sent {
			if err := stream.Send(&registryv1.WatchResponse{Index: idx, Instances: list, Snapshot: req.GetIncremental()}); err != nil {
				return err
			}
			sent = idx
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-wake:
		}
	}
}

func (f *fakeRegistry) PutConfig(_ context.Context, req *registryv1.PutConfigRequest) (*registryv1.PutConfigResponse, error) {
	if req.GetEntry().GetKind() != "policy" {
		return nil, status.Error(codes.InvalidArgument, "entry.kind: the fake keeps policies only")
	}
	f.mu.Lock()
	f.index++
	f.config[req.Entry.Key] = req.Entry
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
	return &registryv1.PutConfigResponse{Entry: req.Entry}, nil
}

func (f *fakeRegistry) WatchConfig(req *registryv1.WatchConfigRequest, stream registryv1.Registry_WatchConfigServer) error {
	var sent uint64
	for {
		f.mu.Lock()
		idx, wake := f.index, f.wake
		var list []*registryv1.ConfigEntry
		for _, e := range f.config {
			list = append(list, e)
		}
		f.mu.Unlock()
		if idx != sent {
			if err := stream.Send(&registryv1.WatchConfigResponse{Index: idx, Entries: list}); err != nil {
				return err
			}
			sent = idx
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-wake:
		}
	}
}

func inst(svc, id string, port uint32, h registryv1.HealthStatus, weight uint32) *registryv1.Instance {
	return &registryv1.Instance{Service: svc, Id: id, Address: "127.0.0.1", Port: port, Health: h, Weight: weight, Tags: []string{"t-" + id}}
}

const passing, critical = registryv1.HealthStatus_HEALTH_STATUS_PASSING, registryv1.HealthStatus_HEALTH_STATUS_CRITICAL

func startBalancer(t testing.TB, regAddr, dataDir string) (balancerv1.BalancerClient, *servicetest.Instance) {
	t.Helper()
	inst := servicetest.Start(t, Spec(), "--registry-addr="+regAddr, "--data-dir="+dataDir, "--refresh-interval=50ms")
	return balancerv1.NewBalancerClient(inst.Conn(t)), inst
}

// eventually polls fn until it returns nil or 10s pass.
func eventually(t *testing.T, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pickCounts(t *testing.T, c balancerv1.BalancerClient, svc string, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		resp, err := c.Pick(context.Background(), &balancerv1.PickRequest{Service: svc})
		if err != nil {
			t.Fatal(err)
		}
		counts[resp.Endpoint.Id]++
	}
	return counts
}

func TestPickFollowsRegistryAndHealth(t *testing.T) {
	reg, addr, _ := newFakeRegistry(t)
	reg.set(inst("web", "a", 1001, passing, 0), inst("web", "b", 1002, passing, 0), inst("web", "c", 1003, critical, 0))
	c, _ := startBalancer(t, addr, t.TempDir())

	eventually(t, "endpoints arrive", func() error {
		_, err := c.Pick(context.Background(), &balancerv1.PickRequest{Service: "web"})
		return err
	})
	counts := pickCounts(t, c, "web", 300)
	if counts["c"] != 0 || counts["a"] != 150 || counts["b"] != 150 {
		t.Fatalf("round_robin over a, b (c critical): %v", counts)
	}

	// The registry changes: c recovers, a leaves.
	reg.set(inst("web", "b", 1002, passing, 0), inst("web", "c", 1003, passing, 0))
	eventually(t, "update applied", func() error {
		if got := pickCounts(t, c, "web", 20); got["a"] != 0 || got["c"] == 0 {
			return fmt.Errorf("picks %v", got)
		}
		return nil
	})
	resp, err := c.Pick(context.Background(), &balancerv1.PickRequest{Service: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if ep := resp.Endpoint; ep.Address != "127.0.0.1" || ep.Port < 1002 || len(ep.Tags) != 1 {
		t.Fatalf("endpoint %v lacks the registry's data", ep)
	}
}

func TestPickErrors(t *testing.T) {
	reg, addr, _ := newFakeRegistry(t)
	reg.set(inst("down", "a", 1001, critical, 0), inst("down", "b", 1002, critical, 0), inst("web", "w", 1, passing, 0))
	c, _ := startBalancer(t, addr, t.TempDir())
	eventually(t, "endpoints arrive", func() error {
		_, err := c.Pick(context.Background(), &balancerv1.PickRequest{Service: "web"})
		return err
	})
	tests := []struct {
		svc  string
		code codes.Code
		msg  string
	}{
		{"nosuch", codes.NotFound, `"nosuch" is not registered`},
		{"down", codes.Unavailable, "no healthy endpoint"},
		{"Bad_Name", codes.InvalidArgument, "service: must be a DNS label"},
		{"", codes.InvalidArgument, "service"},
	}
	for _, tt := range tests {
		_, err := c.Pick(context.Background(), &balancerv1.PickRequest{Service: tt.svc})
		if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.msg) {
			t.Errorf("Pick(%q) = %v, want %v mentioning %q", tt.svc, err, tt.code, tt.msg)
		}
	}
}

// TestPickBeforeFirstSnapshotIsUnavailable: a balancer that has not heard
// from the registry yet does not know whether a service exists, so Pick
// says Unavailable (retry), not NotFound.
func TestPickBeforeFirstSnapshotIsUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing answers there: no snapshot can arrive
	c, _ := startBalancer(t, addr, t.TempDir())
	_, err = c.Pick(context.Background(), &balancerv1.PickRequest{Service: "web"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "no registry snapshot yet") {
		t.Fatalf("Pick before the first snapshot = %v, want Unavailable (no registry snapshot yet)", err)
	}
}

func TestWeightedPolicyDistribution(t *testing.T) {
	reg, addr, _ := newFakeRegistry(t)
	reg.set(inst("api", "a", 1, passing, 1), inst("api", "b", 2, passing, 3))
	c, _ := startBalancer(t, addr, t.TempDir())
	if _, err := c.SetPolicy(context.Background(), &balancerv1.SetPolicyRequest{Service: "api", Policy: &balancerv1.Policy{Name: "weighted_round_robin"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "endpoints arrive", func() error {
		_, err := c.Pick(context.Background(), &balancerv1.PickRequest{Service: "api"})
		return err
	})
	counts := pickCounts(t, c, "api", 400)
	// Smooth WRR is exact over whole periods: 1:3 of 400 (give or take the
	// period the probe pick above started).
	if math.Abs(float64(counts["b"])-300) > 4 || math.Abs(float64(counts["a"])-100) > 4 {
		t.Fatalf("weights 1:3 over 400 picks: %v", counts)
	}
}

func TestConsistentHashKeepsKeys(t *testing.T) {
	reg, addr, _ := newFakeRegistry(t)
	var list []*registryv1.Instance
	for i := 0; i < 10; i++ {
		list = append(list, inst("kv", fmt.Sprintf("n%d", i), uint32(1000+i), passing, 0))
	}
	reg.set(list...)
	c, _ := startBalancer(t, addr, t.TempDir())
	if _, err := c.SetPolicy(context.Background(), &balancerv1.SetPolicyRequest{Service: "kv", Policy: &balancerv1.Policy{Name: "consistent_hash"}}); err != nil {
		t.Fatal(err)
	}
	owner := func(key string) string {
		resp, err := c.Pick(context.Background(), &balancerv1.PickRequest{Service: "kv", HashKey: key})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Endpoint.Id
	}
	eventually(t, "endpoints arrive", func() error {
		_, err := c.Pick(context.Background(), &balancerv1.PickRequest{Service: "kv", HashKey: "x"})
		return err
	})
	before := map[string]string{}
	for i := 0; i < 200; i++ {
		k := fmt.Sprintf("user-%d", i)
		before[k] = owner(k)
		if again := owner(k); again != before[k] {
			t.Fatalf("key %s moved between two picks: %s then %s", k, before[k], again)
		}
	}
	reg.set(list[1:]...) // n0 leaves
	eventually(t, "n0 gone", func() error {
		for k, o := range before {
			if o == "n0" && owner(k) == "n0" {
				return fmt.Errorf("key %s still on n0", k)
			}
		}
		return nil
	})
	moved := 0
	for k, o := range before {
		if o != "n0" && owner(k) != o {
			moved++
		}
	}
	if moved > 10 { // keys not on n0 should stay put (Maglev moves a few)
		t.Fatalf("%d of the keys not on the removed endpoint moved", moved)
	}
}

func TestReportEjectsAndWatchShowsIt(t *testing.T) {
	reg, addr, _ := newFakeRegistry(t)
	reg.set(inst("web", "a", 1, passing, 0), inst("web", "b", 2, passing, 0), inst("web", "c", 3, passing, 0))
	c, _ := startBalancer(t, addr, t.TempDir())
	if _, err := c.SetPolicy(context.Background(), &balancerv1.SetPolicyRequest{Service: "web", Policy: &balancerv1.Policy{
		Outlier: &balancerv1.OutlierDetection{ConsecutiveFailures: 3, BaseEjectionTime: durationpb.New(300 * time.Millisecond)},
	}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.WatchEndpoints(ctx, &balancerv1.WatchEndpointsRequest{Service: "web"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor := func(what string, ok func(map[string]*balancerv1.Endpoint) bool) {
		t.Helper()
		for {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("waiting for %s: %v", what, err)
			}
			eps := map[string]*balancerv1.Endpoint{}
			for _, e := range resp.Endpoints {
				eps[e.Id] = e
			}
			if ok(eps) {
				return
			}
		}
	}
	waitFor("three endpoints", func(m map[string]*balancerv1.Endpoint) bool { return len(m) == 3 })

	var reports []*balancerv1.LoadReport
	for i := 0; i < 3; i++ {
		reports = append(reports, &balancerv1.LoadReport{Service: "web", EndpointId: "b", Outcome: balancerv1.Outcome_OUTCOME_FAILURE, Latency: durationpb.New(time.Millisecond)})
	}
	reports = append(reports, &balancerv1.LoadReport{Service: "gone", EndpointId: "x", Outcome: balancerv1.Outcome_OUTCOME_SUCCESS})
	resp, err := c.Report(ctx, &balancerv1.ReportRequest{Reports: reports})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Accepted != 3 {
		t.Fatalf("accepted %d reports, want 3 (the unknown service's is skipped)", resp.Accepted)
	}
	waitFor("b ejected", func(m map[string]*balancerv1.Endpoint) bool {
		return m["b"].Ejected && m["b"].EffectiveWeight == 0 && !m["a"].Ejected
	})
	for id, n := range pickCounts(t, c, "web", 30) {
		if id == "b" && n > 0 {
			t.Fatalf("ejected b was picked %d times", n)
		}
	}
	// The ejection ends on its own and watchers hear of it.
	waitFor("b back", func(m map[string]*balancerv1.Endpoint) bool { return !m["b"].Ejected && m["b"].EffectiveWeight > 0 })
}

func TestBadPoliciesAndReports(t *testing.T) {
	_, addr, _ := newFakeRegistry(t)
	c, _ := startBalancer(t, addr, t.TempDir())
	policies := []struct {
		p     *balancerv1.Policy
		field string
	}{
		{&balancerv1.Policy{Name: "fastest"}, "policy.name"},
		{&balancerv1.Policy{HashOn: "ear"}, "policy.hash_on"},
		{&balancerv1.Policy{PanicThresholdPercent: 101}, "policy.panic_threshold_percent"},
		{&balancerv1.Policy{SlowStart: durationpb.New(-time.Second)}, "policy.slow_start"},
		{&balancerv1.Policy{Outlier: &balancerv1.OutlierDetection{MaxEjectionPercent: 250}}, "policy.outlier.max_ejection_percent"},
		{nil, "policy"},
	}
	for _, tt := range policies {
		_, err := c.SetPolicy(context.Background(), &balancerv1.SetPolicyRequest{Service: "web", Policy: tt.p})
		if status.Code(err) != codes.InvalidArgument || !hasViolation(err, tt.field) {
			t.Errorf("SetPolicy(%v) = %v, want InvalidArgument naming %s", tt.p, err, tt.field)
		}
	}
	_, err := c.Report(context.Background(), &balancerv1.ReportRequest{Reports: []*balancerv1.LoadReport{{Service: "web", EndpointId: "a"}}})
	if status.Code(err) != codes.InvalidArgument || !hasViolation(err, "reports[0].outcome") {
		t.Errorf("Report without an outcome = %v", err)
	}
	// A bad policy leaves the old one in place.
	got, err := c.GetPolicy(context.Background(), &balancerv1.GetPolicyRequest{Service: "web"})
	if err != nil || got.Policy.Name != "round_robin" {
		t.Fatalf("GetPolicy after bad SetPolicy = %v, %v; want the default round_robin", got, err)
	}
}

func hasViolation(err error, field string) bool {
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.FieldViolations {
				if v.Field == field {
					return true
				}
			}
		}
	}
	return false
}

// TestPolicySharedByReplicas: a policy set on one balancer is in force on
// another following the same registry, and a balancer started later takes
// it from the registry, not from its own (empty) data directory.
func TestPolicySharedByReplicas(t *testing.T) {
	reg, addr, _ := newFakeRegistry(t)
	reg.set(inst("orders", "a", 1, passing, 0))
	c1, _ := startBalancer(t, addr, t.TempDir())
	c2, _ := startBalancer(t, addr, t.TempDir())
	want := &balancerv1.Policy{Name: "p2c", SlowStart: durationpb.New(30 * time.Second)}
	if _, err := c1.SetPolicy(context.Background(), &balancerv1.SetPolicyRequest{Service: "orders", Policy: want}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []balancerv1.BalancerClient{c1, c2} {
		eventually(t, "the policy on every replica", func() error {
			got, err := c.GetPolicy(context.Background(), &balancerv1.GetPolicyRequest{Service: "orders"})
			if err != nil {
				return err
			}
			if got.Policy.Name != "p2c" || got.Policy.SlowStart.AsDuration() != 30*time.Second || got.Stale {
				return fmt.Errorf("policy %v (stale %v)", got.Policy, got.Stale)
			}
			return nil
		})
	}
	c3, _ := startBalancer(t, addr, t.TempDir())
	eventually(t, "the policy on a balancer started later", func() error {
		got, err := c3.GetPolicy(context.Background(), &balancerv1.GetPolicyRequest{Service: "orders"})
		if err != nil {
			return err
		}
		if got.Policy.Name != "p2c" || got.Stale {
			return fmt.Errorf("policy %v (stale %v)", got.Policy, got.Stale)
		}
		return nil
	})
}

// TestPolicyCacheServesStartWithoutRegistry: the local file is a start-up
// cache of the registry's policies, used (and said to be stale) when the
// registry cannot be reached; SetPolicy then fails instead of diverging.
func TestPolicyCacheServesStartWithoutRegistry(t *testing.T) {
	_, addr, stop := newFakeRegistry(t)
	dir := t.TempDir()
	c, inst := startBalancer(t, addr, dir)
	want := &balancerv1.Policy{Name: "p2c", SlowStart: durationpb.New(30 * time.Second)}
	if _, err := c.SetPolicy(context.Background(), &balancerv1.SetPolicyRequest{Service: "orders", Policy: want}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the policy written to the cache", func() error {
		p, err := openPolicyStore(filepath.Join(dir, "policies.json"))
		if err != nil {
			return err
		}
		if p.get("orders").GetName() != "p2c" {
			return fmt.Errorf("cache holds %v", p.all())
		}
		return nil
	})
	if err := inst.Stop(); err != nil {
		t.Fatal(err)
	}
	stop()
	c2, _ := startBalancer(t, addr, dir)
	got, err := c2.GetPolicy(context.Background(), &balancerv1.GetPolicyRequest{Service: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Policy.Name != "p2c" || got.Policy.SlowStart.AsDuration() != 30*time.Second || !got.Stale {
		t.Fatalf("with the registry down: %v (stale %v), want the cached p2c marked stale", got.Policy, got.Stale)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c2.SetPolicy(ctx, &balancerv1.SetPolicyRequest{Service: "orders", Policy: &balancerv1.Policy{Name: "round_robin"}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("SetPolicy with the registry down = %v, want Unavailable", err)
	}
}

func TestRegistryOutageKeepsEndpointsAndMarksStale(t *testing.T) {
	reg, addr, stop := newFakeRegistry(t)
	reg.set(inst("web", "a", 1, passing, 0))
	c, _ := startBalancer(t, addr, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.WatchEndpoints(ctx, &balancerv1.WatchEndpointsRequest{Service: "web"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Endpoints) == 1 && !resp.Stale {
			break
		}
	}
	stop()
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Stale {
			if len(resp.Endpoints) != 1 {
				t.Fatalf("stale set lost its endpoints: %v", resp.Endpoints)
			}
			break
		}
	}
	if _, err := c.Pick(ctx, &balancerv1.PickRequest{Service: "web"}); err != nil {
		t.Fatalf("Pick with the registry down: %v", err)
	}
}
