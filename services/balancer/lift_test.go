package balancer

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/balance/grpcbalance"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// TestPassingHealthLiftsEjection: an endpoint ejected for an hour comes
// back, on the WatchEndpoints stream and in picks, as soon as the registry
// says its health checks pass after failing; one whose checks passed all
// along stays ejected.
func TestPassingHealthLiftsEjection(t *testing.T) {
	// The aim is a restarted backend back in rotation within 2 s of
	// passing; the ejection itself would last an hour.
	const within = 2 * time.Second
	const unknown = registryv1.HealthStatus_HEALTH_STATUS_UNSPECIFIED
	for _, tc := range []struct {
		name       string
		during     registryv1.HealthStatus // b's health after the ejection
		wantLifted bool
	}{
		{"critical then passing", critical, true},
		{"unknown then passing", unknown, true},
		{"passing all along", passing, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg, addr, _ := newFakeRegistry(t)
			reg.set(inst("web", "a", 1, passing, 0), inst("web", "b", 2, passing, 0), inst("web", "c", 3, passing, 0))
			c, _ := startBalancer(t, addr, t.TempDir())
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := c.SetPolicy(ctx, &balancerv1.SetPolicyRequest{Service: "web", Policy: &balancerv1.Policy{
				SlowStart: durationpb.New(10 * time.Second),
				Outlier:   &balancerv1.OutlierDetection{ConsecutiveFailures: 3, BaseEjectionTime: durationpb.New(time.Hour), MaxEjectionTime: durationpb.New(time.Hour)},
			}}); err != nil {
				t.Fatal(err)
			}
			stream, err := c.WatchEndpoints(ctx, &balancerv1.WatchEndpointsRequest{Service: "web"})
			if err != nil {
				t.Fatal(err)
			}
			// next returns the next set that satisfies ok, or the error
			// of a stream that ended (or ran past its deadline) first.
			next := func(ok func(map[string]*balancerv1.Endpoint) bool) error {
				for {
					resp, err := stream.Recv()
					if err != nil {
						return err
					}
					eps := map[string]*balancerv1.Endpoint{}
					for _, e := range resp.Endpoints {
						eps[e.Id] = e
					}
					if ok(eps) {
						return nil
					}
				}
			}
			if err := next(func(m map[string]*balancerv1.Endpoint) bool { return len(m) == 3 }); err != nil {
				t.Fatal(err)
			}
			var reports []*balancerv1.LoadReport
			for range 3 {
				reports = append(reports, &balancerv1.LoadReport{Service: "web", EndpointId: "b", Outcome: balancerv1.Outcome_OUTCOME_FAILURE})
			}
			if _, err := c.Report(ctx, &balancerv1.ReportRequest{Reports: reports}); err != nil {
				t.Fatal(err)
			}
			if err := next(func(m map[string]*balancerv1.Endpoint) bool { return m["b"].Ejected }); err != nil {
				t.Fatalf("waiting for b's ejection: %v", err)
			}
			// The prober sees the backend down (or the check has no
			// result yet), then passing again once it has restarted.
			if tc.during != passing {
				reg.set(inst("web", "a", 1, passing, 0), inst("web", "b", 2, tc.during, 0), inst("web", "c", 3, passing, 0))
				if err := next(func(m map[string]*balancerv1.Endpoint) bool {
					return m["b"].Healthy == (tc.during != critical) && m["b"].Ejected
				}); err != nil {
					t.Fatalf("waiting for b's health %v: %v", tc.during, err)
				}
			}
			// The registry passes the change along (a tag, so that
			// "passing all along" also produces a message).
			back := inst("web", "b", 2, passing, 0)
			back.Tags = append(back.Tags, "restarted")
			passed := time.Now()
			reg.set(inst("web", "a", 1, passing, 0), back, inst("web", "c", 3, passing, 0))
			var got *balancerv1.Endpoint
			done := make(chan error, 1)
			go func() {
				done <- next(func(m map[string]*balancerv1.Endpoint) bool {
					got = m["b"]
					return len(got.Tags) == 2
				})
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(within):
				t.Fatalf("no update within %v of b passing", within)
			}
			if lifted := !got.Ejected; lifted != tc.wantLifted {
				t.Fatalf("b after passing: ejected=%v; want lifted=%v", got.Ejected, tc.wantLifted)
			}
			if !tc.wantLifted {
				if got.EffectiveWeight != 0 {
					t.Fatalf("still ejected but effective weight %v", got.EffectiveWeight)
				}
				return
			}
			t.Logf("b back on the stream %v after passing", time.Since(passed))
			if w := got.EffectiveWeight; w <= 0 || w >= 1 {
				t.Fatalf("lifted b's effective weight %v, want a slow-start ramp in (0, 1)", w)
			}
			picked := 0
			for range 300 {
				resp, err := c.Pick(context.Background(), &balancerv1.PickRequest{Service: "web"})
				if err != nil {
					t.Fatal(err)
				}
				if resp.Endpoint.Id == "b" {
					picked++
				}
			}
			if picked == 0 {
				t.Fatal("lifted b never picked in 300 picks")
			}
		})
	}
}

// backend is a gRPC server (grpc.health.v1) that counts the calls it
// serves, registered in the fake registry under its real port.
type backend struct {
	port  uint32
	calls atomic.Int64
}

func startBackend(t *testing.T) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{port: uint32(ln.Addr().(*net.TCPAddr).Port)}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		b.calls.Add(1)
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return b
}

// TestLiftedEndpointReachesGoClients follows the lift to a data plane: a
// Go client balanced by pkg/balance/grpcbalance (fed by this balancer's
// WatchEndpoints) stops calling an ejected backend and calls it again soon
// after the registry says its checks pass, though the ejection is an hour.
func TestLiftedEndpointReachesGoClients(t *testing.T) {
	reg, regAddr, _ := newFakeRegistry(t)
	bs := []*backend{startBackend(t), startBackend(t), startBackend(t)}
	instances := func(bHealth registryv1.HealthStatus) []*registryv1.Instance {
		return []*registryv1.Instance{inst("web", "a", bs[0].port, passing, 0), inst("web", "b", bs[1].port, bHealth, 0), inst("web", "c", bs[2].port, passing, 0)}
	}
	reg.set(instances(passing)...)
	c, bal := startBalancer(t, regAddr, t.TempDir())
	ctx := context.Background()
	if _, err := c.SetPolicy(ctx, &balancerv1.SetPolicyRequest{Service: "web", Policy: &balancerv1.Policy{
		Outlier: &balancerv1.OutlierDetection{ConsecutiveFailures: 3, BaseEjectionTime: durationpb.New(time.Hour), MaxEjectionTime: durationpb.New(time.Hour)},
	}}); err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("switchboard:///web", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(grpcbalance.NewResolverBuilder(grpcbalance.ResolverOptions{BalancerAddr: bal.Addrs["grpc"]})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)
	// reachesB calls until b has served one call (true) or the time is up.
	reachesB := func(within time.Duration) bool {
		deadline := time.Now().Add(within)
		bs[1].calls.Store(0)
		for time.Now().Before(deadline) {
			callCtx, cancel := context.WithTimeout(ctx, time.Second)
			_, _ = client.Check(callCtx, &healthpb.HealthCheckRequest{})
			cancel()
			if bs[1].calls.Load() > 0 {
				return true
			}
		}
		return false
	}
	if !reachesB(10 * time.Second) {
		t.Fatal("b never served before the ejection")
	}

	var reports []*balancerv1.LoadReport
	for range 3 {
		reports = append(reports, &balancerv1.LoadReport{Service: "web", EndpointId: "b", Outcome: balancerv1.Outcome_OUTCOME_FAILURE})
	}
	if _, err := c.Report(ctx, &balancerv1.ReportRequest{Reports: reports}); err != nil {
		t.Fatal(err)
	}
	reg.set(instances(critical)...) // the prober sees it down
	eventually(t, "client stops calling the ejected b", func() error {
		if reachesB(300 * time.Millisecond) {
			return errors.New("b still gets calls")
		}
		return nil
	})

	reg.set(instances(passing)...) // restarted, checks pass
	passed := time.Now()
	if !reachesB(2 * time.Second) {
		t.Fatal("the Go client did not call b within 2s of its checks passing (ejection: 1h)")
	}
	t.Logf("b served by the Go client %v after passing", time.Since(passed))
}
