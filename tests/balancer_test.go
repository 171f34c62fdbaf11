package tests

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/balancer"
	"github.com/switchboard-net/switchboard/services/registry"
)

// catalogAndBalancer starts a real registry (embedded store) and a real
// balancer following it.
func catalogAndBalancer(t *testing.T) (registryv1.RegistryClient, balancerv1.BalancerClient) {
	t.Helper()
	reg := servicetest.Start(t, registry.Spec(), "--store=embedded", "--data-dir="+t.TempDir())
	bal := servicetest.Start(t, balancer.Spec(), "--registry-addr="+reg.Addrs["grpc"], "--data-dir="+t.TempDir(), "--refresh-interval=50ms")
	return registryv1.NewRegistryClient(reg.Conn(t)), balancerv1.NewBalancerClient(bal.Conn(t))
}

func register(t *testing.T, r registryv1.RegistryClient, svc, id string, port, weight uint32) {
	t.Helper()
	_, err := r.Register(context.Background(), &registryv1.RegisterRequest{Instance: &registryv1.Instance{
		Service: svc, Id: id, Address: "127.0.0.1", Port: port, Weight: weight,
	}})
	if err != nil {
		t.Fatalf("register %s/%s: %v", svc, id, err)
	}
}

func picks(t *testing.T, b balancerv1.BalancerClient, svc string, n int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for i := 0; i < n; i++ {
		resp, err := b.Pick(context.Background(), &balancerv1.PickRequest{Service: svc})
		if err != nil {
			t.Fatalf("pick %s: %v", svc, err)
		}
		out[resp.Endpoint.Id]++
	}
	return out
}

// until polls fn for up to 10s.
func until(t *testing.T, what string, fn func() error) {
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
		time.Sleep(25 * time.Millisecond)
	}
}

// TestBalancerOverRealRegistry: weights honoured, health from the registry
// followed, deregistration followed, unknown and failing services refused.
func TestBalancerOverRealRegistry(t *testing.T) {
	r, b := catalogAndBalancer(t)
	register(t, r, "web", "web-1", 9001, 1)
	register(t, r, "web", "web-2", 9002, 2)
	register(t, r, "web", "web-3", 9003, 1)
	if _, err := b.SetPolicy(context.Background(), &balancerv1.SetPolicyRequest{Service: "web", Policy: &balancerv1.Policy{Name: "weighted_round_robin"}}); err != nil {
		t.Fatal(err)
	}
	until(t, "three endpoints", func() error {
		if got := picks(t, b, "web", 8); len(got) != 3 {
			return fmt.Errorf("picked %v", got)
		}
		return nil
	})
	// Smooth weighted round robin is exact per period of 4: 1:2:1.
	got := picks(t, b, "web", 400)
	for id, want := range map[string]int{"web-1": 100, "web-2": 200, "web-3": 100} {
		if d := got[id] - want; d < -2 || d > 2 {
			t.Errorf("%s got %d of 400 picks, want %d±2 (weights 1:2:1): %v", id, got[id], want, got)
		}
	}

	// The prober's path: a failing check takes web-2 out of rotation.
	if _, err := r.SetHealth(context.Background(), &registryv1.SetHealthRequest{Service: "web", Id: "web-2", Status: registryv1.HealthStatus_HEALTH_STATUS_CRITICAL, Output: "test"}); err != nil {
		t.Fatal(err)
	}
	until(t, "web-2 out", func() error {
		if got := picks(t, b, "web", 20); got["web-2"] != 0 {
			return fmt.Errorf("picked %v", got)
		}
		return nil
	})
	// And back.
	if _, err := r.SetHealth(context.Background(), &registryv1.SetHealthRequest{Service: "web", Id: "web-2", Status: registryv1.HealthStatus_HEALTH_STATUS_PASSING}); err != nil {
		t.Fatal(err)
	}
	until(t, "web-2 back", func() error {
		if got := picks(t, b, "web", 20); got["web-2"] == 0 {
			return fmt.Errorf("picked %v", got)
		}
		return nil
	})
	if _, err := r.Deregister(context.Background(), &registryv1.DeregisterRequest{Service: "web", Id: "web-1"}); err != nil {
		t.Fatal(err)
	}
	until(t, "web-1 gone", func() error {
		if got := picks(t, b, "web", 20); got["web-1"] != 0 {
			return fmt.Errorf("picked %v", got)
		}
		return nil
	})

	_, err := b.Pick(context.Background(), &balancerv1.PickRequest{Service: "nosuch"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("unknown service: %v, want NotFound", err)
	}
	register(t, r, "dead", "dead-1", 9100, 1)
	if _, err := r.SetHealth(context.Background(), &registryv1.SetHealthRequest{Service: "dead", Id: "dead-1", Status: registryv1.HealthStatus_HEALTH_STATUS_CRITICAL}); err != nil {
		t.Fatal(err)
	}
	until(t, "dead unavailable", func() error {
		_, err := b.Pick(context.Background(), &balancerv1.PickRequest{Service: "dead"})
		if status.Code(err) != codes.Unavailable {
			return fmt.Errorf("pick dead: %v, want Unavailable", err)
		}
		return nil
	})
}

// TestConsistentHashOverRealRegistry: removing one of ten endpoints moves
// only the keys it owned (plus Maglev's small disruption).
func TestConsistentHashOverRealRegistry(t *testing.T) {
	r, b := catalogAndBalancer(t)
	for i := 0; i < 10; i++ {
		register(t, r, "kv", fmt.Sprintf("kv-%d", i), uint32(9200+i), 1)
	}
	if _, err := b.SetPolicy(context.Background(), &balancerv1.SetPolicyRequest{Service: "kv", Policy: &balancerv1.Policy{Name: "consistent_hash"}}); err != nil {
		t.Fatal(err)
	}
	owner := func(key string) string {
		resp, err := b.Pick(context.Background(), &balancerv1.PickRequest{Service: "kv", HashKey: key})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Endpoint.Id
	}
	until(t, "ten endpoints", func() error {
		seen := map[string]bool{}
		for i := 0; i < 200; i++ {
			seen[owner(fmt.Sprint(i))] = true
		}
		if len(seen) != 10 {
			return fmt.Errorf("keys land on %d endpoints", len(seen))
		}
		return nil
	})
	const keys = 500
	before := make([]string, keys)
	for i := range before {
		before[i] = owner(fmt.Sprintf("session-%d", i))
	}
	if _, err := r.Deregister(context.Background(), &registryv1.DeregisterRequest{Service: "kv", Id: "kv-3"}); err != nil {
		t.Fatal(err)
	}
	until(t, "kv-3 gone", func() error {
		for i := range before {
			if before[i] == "kv-3" && owner(fmt.Sprintf("session-%d", i)) == "kv-3" {
				return fmt.Errorf("session-%d still on kv-3", i)
			}
		}
		return nil
	})
	moved, owned := 0, 0
	for i := range before {
		now := owner(fmt.Sprintf("session-%d", i))
		if before[i] == "kv-3" {
			owned++
		} else if now != before[i] {
			moved++
		}
	}
	// About 1/10 of keys lived on kv-3; of the rest, Maglev moves a few %.
	if owned < keys/20 || moved > keys/20 {
		t.Fatalf("kv-3 owned %d of %d keys; %d other keys moved", owned, keys, moved)
	}
	t.Logf("removing 1 of 10 endpoints: %d of %d keys were on it, %d others moved", owned, keys, moved)
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
