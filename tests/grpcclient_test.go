package tests

import (
	"context"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/switchboard-net/switchboard/pkg/balance/grpcbalance"
	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/balancer"
	"github.com/switchboard-net/switchboard/services/registry"
)

// TestGoClientBalancesThroughSwitchboard: a Go program dials
// "switchboard:///orders" and its calls spread over the instances the real
// registry holds, following deregistration.
func TestGoClientBalancesThroughSwitchboard(t *testing.T) {
	reg := servicetest.Start(t, registry.Spec(), "--store=embedded", "--data-dir="+t.TempDir())
	bal := servicetest.Start(t, balancer.Spec(), "--registry-addr="+reg.Addrs["grpc"], "--data-dir="+t.TempDir())
	rc := registryv1.NewRegistryClient(reg.Conn(t))

	var counts [3]atomic.Int64
	for i := range counts {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			counts[i].Add(1)
			return h(ctx, req)
		}))
		healthpb.RegisterHealthServer(srv, health.NewServer())
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(srv.Stop)
		register(t, rc, "orders", "orders-"+strconv.Itoa(i), uint32(ln.Addr().(*net.TCPAddr).Port), 1)
	}

	cc, err := grpc.NewClient("switchboard:///orders",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(grpcbalance.NewResolverBuilder(grpcbalance.ResolverOptions{BalancerAddr: bal.Addrs["grpc"]})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)
	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	reset := func() {
		for i := range counts {
			counts[i].Store(0)
		}
	}
	until(t, "all three instances serve", func() error {
		if err := call(); err != nil {
			return err
		}
		for i := range counts {
			if counts[i].Load() == 0 {
				return errorf("orders-%d has served nothing yet", i)
			}
		}
		return nil
	})
	reset()
	for i := 0; i < 300; i++ {
		if err := call(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range counts {
		if n := counts[i].Load(); n != 100 {
			t.Errorf("orders-%d served %d of 300 round-robin calls", i, n)
		}
	}
	if _, err := rc.Deregister(context.Background(), &registryv1.DeregisterRequest{Service: "orders", Id: "orders-1"}); err != nil {
		t.Fatal(err)
	}
	until(t, "orders-1 leaves the client's rotation", func() error {
		reset()
		for i := 0; i < 20; i++ {
			if err := call(); err != nil {
				return err
			}
		}
		if n := counts[1].Load(); n != 0 {
			return errorf("orders-1 still served %d calls", n)
		}
		return nil
	})
}
