package grpcbalance

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
)

// countingServer is a gRPC server that counts the calls it serves.
type countingServer struct {
	host  string
	port  uint32
	calls atomic.Int64
}

func startCountingServer(t *testing.T) *countingServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &countingServer{}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	p, _ := strconv.Atoi(port)
	s.host, s.port = host, uint32(p)
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		s.calls.Add(1)
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return s
}

// fakeControlPlane streams endpoint sets the test pushes.
type fakeControlPlane struct {
	balancerv1.UnimplementedBalancerServer
	mu   sync.Mutex
	cur  *balancerv1.WatchEndpointsResponse
	wake chan struct{}
}

func (f *fakeControlPlane) push(r *balancerv1.WatchEndpointsResponse) {
	f.mu.Lock()
	f.cur = r
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

func (f *fakeControlPlane) WatchEndpoints(req *balancerv1.WatchEndpointsRequest, stream balancerv1.Balancer_WatchEndpointsServer) error {
	var sent *balancerv1.WatchEndpointsResponse
	for {
		f.mu.Lock()
		cur, wake := f.cur, f.wake
		f.mu.Unlock()
		if cur != nil && cur != sent && cur.Service == req.Service {
			if err := stream.Send(cur); err != nil {
				return err
			}
			sent = cur
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-wake:
		}
	}
}

func startControlPlane(t *testing.T) (*fakeControlPlane, string) {
	t.Helper()
	f := &fakeControlPlane{wake: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	balancerv1.RegisterBalancerServer(srv, f)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return f, ln.Addr().String()
}

func streamed(s *countingServer, id string, eff float64, ejected bool) *balancerv1.Endpoint {
	return &balancerv1.Endpoint{Id: id, Address: s.host, Port: s.port, Weight: 1, EffectiveWeight: eff, Healthy: true, Ejected: ejected}
}

func dialService(t *testing.T, balAddr, target string) healthpb.HealthClient {
	t.Helper()
	cc, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(NewResolverBuilder(ResolverOptions{BalancerAddr: balAddr})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

// readyAll calls until every server has served (all subchannels ready),
// then zeroes the counters.
func readyAll(t *testing.T, c healthpb.HealthClient, ss ...*countingServer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		all := err == nil
		for _, s := range ss {
			all = all && s.calls.Load() > 0
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("servers never all served (last error %v)", err)
		}
	}
	for _, s := range ss {
		s.calls.Store(0)
	}
}

func callTimes(t *testing.T, c healthpb.HealthClient, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := c.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStreamRoundRobinAndEjection(t *testing.T) {
	a, b, c := startCountingServer(t), startCountingServer(t), startCountingServer(t)
	cp, addr := startControlPlane(t)
	cp.push(&balancerv1.WatchEndpointsResponse{Service: "orders", Policy: &balancerv1.Policy{Name: "round_robin"},
		Endpoints: []*balancerv1.Endpoint{streamed(a, "a", 1, false), streamed(b, "b", 1, false), streamed(c, "c", 1, false)}})
	cl := dialService(t, addr, "switchboard:///orders")
	readyAll(t, cl, a, b, c)
	callTimes(t, cl, 300)
	for i, s := range []*countingServer{a, b, c} {
		if n := s.calls.Load(); n != 100 {
			t.Errorf("server %d served %d of 300 round-robin calls, want 100", i, n)
		}
	}

	// The control plane ejects b: calls stop reaching it.
	cp.push(&balancerv1.WatchEndpointsResponse{Service: "orders", Policy: &balancerv1.Policy{Name: "round_robin"},
		Endpoints: []*balancerv1.Endpoint{streamed(a, "a", 1, false), streamed(b, "b", 0, true), streamed(c, "c", 1, false)}})
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.calls.Store(0)
		callTimes(t, cl, 20)
		if b.calls.Load() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ejected server still gets calls")
		}
	}
}

func TestStreamWeightsAndPolicy(t *testing.T) {
	a, b := startCountingServer(t), startCountingServer(t)
	cp, addr := startControlPlane(t)
	cp.push(&balancerv1.WatchEndpointsResponse{Service: "api", Policy: &balancerv1.Policy{Name: "weighted_round_robin"},
		Endpoints: []*balancerv1.Endpoint{streamed(a, "a", 1, false), streamed(b, "b", 3, false)}})
	cl := dialService(t, addr, "switchboard:///api")
	readyAll(t, cl, a, b)
	callTimes(t, cl, 400)
	if na, nb := a.calls.Load(), b.calls.Load(); na < 98 || na > 102 || nb < 298 || nb > 302 {
		t.Fatalf("streamed weights 1:3 over 400 calls: a=%d b=%d", na, nb)
	}
	// A weight change on the same addresses reaches the picker.
	cp.push(&balancerv1.WatchEndpointsResponse{Service: "api", Policy: &balancerv1.Policy{Name: "weighted_round_robin"},
		Endpoints: []*balancerv1.Endpoint{streamed(a, "a", 1, false), streamed(b, "b", 1, false)}})
	deadline := time.Now().Add(10 * time.Second)
	for {
		a.calls.Store(0)
		b.calls.Store(0)
		callTimes(t, cl, 100)
		if d := a.calls.Load() - b.calls.Load(); d >= -2 && d <= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new weights 1:1 not applied: a=%d b=%d", a.calls.Load(), b.calls.Load())
		}
	}
}

func TestTargetNamesTheBalancer(t *testing.T) {
	a := startCountingServer(t)
	cp, addr := startControlPlane(t)
	cp.push(&balancerv1.WatchEndpointsResponse{Service: "x", Endpoints: []*balancerv1.Endpoint{streamed(a, "a", 1, false)}})
	// The default address is wrong; the target's authority wins.
	cl := dialService(t, "127.0.0.1:1", fmt.Sprintf("switchboard://%s/x", addr))
	readyAll(t, cl, a)
}

func TestStreamBadTarget(t *testing.T) {
	cc, err := grpc.NewClient("switchboard:///", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(NewResolverBuilder(ResolverOptions{BalancerAddr: "127.0.0.1:1"})))
	if err == nil {
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	}
	if err == nil {
		t.Fatal("a target without a service worked")
	}
}
