package grpcbalance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/switchboard-net/switchboard/pkg/balance"
)

// backend is a real gRPC server on 127.0.0.1:0 serving grpc.health.v1 and
// counting calls; fail makes it answer Unavailable.
type backend struct {
	addr  string
	calls atomic.Int64
	fail  atomic.Bool
}

func startBackends(t *testing.T, n int) []*backend {
	t.Helper()
	bs := make([]*backend, n)
	for i := range bs {
		b := &backend{}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		b.addr = lis.Addr().String()
		srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			b.calls.Add(1)
			if b.fail.Load() {
				return nil, status.Error(codes.Unavailable, "backend failing")
			}
			return h(ctx, req)
		}))
		healthpb.RegisterHealthServer(srv, health.NewServer())
		served := make(chan struct{})
		go func() {
			defer close(served)
			_ = srv.Serve(lis)
		}()
		t.Cleanup(func() {
			srv.Stop()
			<-served
		})
		bs[i] = b
	}
	return bs
}

var schemes atomic.Int64

func dial(t *testing.T, bs []*backend, balancerName string) healthpb.HealthClient {
	t.Helper()
	r := manual.NewBuilderWithScheme(fmt.Sprintf("sbtest%d", schemes.Add(1)))
	var addrs []resolver.Address
	for _, b := range bs {
		addrs = append(addrs, resolver.Address{Addr: b.addr})
	}
	r.InitialState(resolver.State{Addresses: addrs})
	cc, err := grpc.NewClient(r.Scheme()+":///backends",
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, balancerName)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return healthpb.NewHealthClient(cc)
}

func call(ctx context.Context, c healthpb.HealthClient) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// warm calls until every backend has answered once (bounded), then zeroes
// the counts, so the measured calls see the full set.
func warm(t *testing.T, c healthpb.HealthClient, bs []*backend) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		all := true
		for _, b := range bs {
			all = all && b.calls.Load() > 0
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not every backend became ready")
		}
		if err := call(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range bs {
		b.calls.Store(0)
	}
}

func TestRoundRobinOverRealServers(t *testing.T) {
	bs := startBackends(t, 3)
	c := dial(t, bs, Name(balance.RoundRobinName))
	warm(t, c, bs)
	for range 300 {
		if err := call(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range bs {
		if got := b.calls.Load(); got != 100 {
			t.Errorf("backend %d got %d of 300 calls, want 100", i, got)
		}
	}
}

func TestOutlierEjectionOverRealServers(t *testing.T) {
	bs := startBackends(t, 3)
	// Round robin, not p2c: p2c may rightly avoid the failing backend once
	// one slow failure has raised its latency estimate, so it would see
	// fewer than five calls (a flake under load).
	c := dial(t, bs, Name(balance.RoundRobinName))
	warm(t, c, bs)
	bs[1].fail.Store(true)
	failures := 0
	for range 300 {
		if err := call(context.Background(), c); err != nil {
			failures++
		}
	}
	// Calls are sequential: five consecutive failures eject it for 30s.
	if failures != 5 {
		t.Fatalf("%d calls failed, want 5 (ejected after 5)", failures)
	}
	if got := bs[1].calls.Load(); got != 5 {
		t.Fatalf("failing backend got %d calls, want 5", got)
	}
}

const hashedName = "switchboard_test_hash_by_user"

func init() {
	cfg := balance.DefaultConfig()
	cfg.Policy = balance.ConsistentHashName
	cfg.HashOn = "header:X-User"
	if err := Register(hashedName, cfg); err != nil {
		panic(err)
	}
}

func TestConsistentHashByMetadata(t *testing.T) {
	bs := startBackends(t, 3)
	c := dial(t, bs, hashedName)
	warm(t, c, bs)
	for u := range 20 {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-user", fmt.Sprint("user-", u))
		before := make([]int64, len(bs))
		for i, b := range bs {
			before[i] = b.calls.Load()
		}
		for range 10 {
			if err := call(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		hit := 0
		for i, b := range bs {
			if b.calls.Load() != before[i] {
				hit++
			}
		}
		if hit != 1 {
			t.Fatalf("user-%d's calls went to %d backends, want 1", u, hit)
		}
	}
}

func TestRegisterRejectsBadConfig(t *testing.T) {
	cfg := balance.DefaultConfig()
	cfg.PanicThresholdPercent = 200
	var ce *balance.ConfigError
	if err := Register("switchboard_bad", cfg); !errors.As(err, &ce) || ce.Field != "PanicThresholdPercent" {
		t.Fatalf("Register: %v, want a PanicThresholdPercent ConfigError", err)
	}
}

func TestOutcome(t *testing.T) {
	tests := []struct {
		err  error
		want balance.Outcome
	}{
		{nil, balance.Success},
		{status.Error(codes.NotFound, "x"), balance.Success},
		{status.Error(codes.Unavailable, "x"), balance.Failure},
		{status.Error(codes.DeadlineExceeded, "x"), balance.Failure},
		{status.Error(codes.Canceled, "x"), balance.Ignore},
	}
	for _, tc := range tests {
		if got := Outcome(tc.err); got != tc.want {
			t.Errorf("Outcome(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestConcurrentCalls drives many calls at once for the race detector.
func TestConcurrentCalls(t *testing.T) {
	bs := startBackends(t, 3)
	c := dial(t, bs, Name(balance.LeastConnName))
	warm(t, c, bs)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if err := call(context.Background(), c); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	var total int64
	for _, b := range bs {
		total += b.calls.Load()
	}
	if total != 400 {
		t.Fatalf("%d calls served, want 400", total)
	}
}
