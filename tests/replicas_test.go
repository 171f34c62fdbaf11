package tests

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/balancer"
	"github.com/switchboard-net/switchboard/services/registry"
)

// TestPolicyOnOneBalancerInForceOnTheOther: two balancer replicas follow
// one registry; a SetPolicy on either is in force on the other within a
// second (the time from SetPolicy's call until the other's WatchEndpoints
// stream carries the new policy). Every round is logged; the median must
// be under a second.
func TestPolicyOnOneBalancerInForceOnTheOther(t *testing.T) {
	reg := servicetest.Start(t, registry.Spec(), "--store=embedded", "--data-dir="+t.TempDir())
	r := registryv1.NewRegistryClient(reg.Conn(t))
	register(t, r, "orders", "orders-1", 9001, 1)
	register(t, r, "orders", "orders-2", 9002, 1)
	var bals []balancerv1.BalancerClient
	for range 2 {
		b := servicetest.Start(t, balancer.Spec(), "--registry-addr="+reg.Addrs["grpc"], "--data-dir="+t.TempDir(), "--refresh-interval=50ms")
		bals = append(bals, balancerv1.NewBalancerClient(b.Conn(t)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	streams := make([]balancerv1.Balancer_WatchEndpointsClient, 2)
	for i, b := range bals {
		s, err := b.WatchEndpoints(ctx, &balancerv1.WatchEndpointsRequest{Service: "orders"})
		if err != nil {
			t.Fatal(err)
		}
		streams[i] = s
	}
	policies := []*balancerv1.Policy{
		{Name: "p2c"}, {Name: "consistent_hash", HashOn: "header:x-user"}, {Name: "least_conn"},
		{Name: "weighted_round_robin", SlowStart: durationpb.New(7 * time.Second)}, {Name: "round_robin"},
	}
	var took []time.Duration
	for round, p := range policies {
		from, to := round%2, 1-round%2
		start := time.Now()
		if _, err := bals[from].SetPolicy(ctx, &balancerv1.SetPolicyRequest{Service: "orders", Policy: p}); err != nil {
			t.Fatal(err)
		}
		for {
			resp, err := streams[to].Recv()
			if err != nil {
				t.Fatalf("round %d: balancer %d's stream: %v", round, to, err)
			}
			got := resp.GetPolicy()
			if got.GetName() == p.Name && (p.HashOn == "" || got.GetHashOn() == p.HashOn) && got.GetSlowStart().AsDuration() == p.GetSlowStart().AsDuration() {
				break
			}
		}
		d := time.Since(start)
		took = append(took, d)
		t.Logf("round %d: SetPolicy(%s) on balancer %d in force on balancer %d after %v", round, p.Name, from, to, d)
		got, err := bals[to].GetPolicy(ctx, &balancerv1.GetPolicyRequest{Service: "orders"})
		if err != nil || got.Policy.GetName() != p.Name || got.Stale {
			t.Fatalf("round %d: GetPolicy on the other balancer = %v, %v", round, got, err)
		}
	}
	slices.Sort(took)
	if med := took[len(took)/2]; med > time.Second {
		t.Fatalf("median time for a policy to reach the other balancer %v, want under 1s (rounds %v)", med, took)
	}
}
