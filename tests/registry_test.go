package tests

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry"
	"github.com/switchboard-net/switchboard/services/registry/storetest"
)

// TestRegistryTwoInstancesOneConsul runs two registry services on one real
// Consul: what one registers, the other lists and streams, and a
// deregistration through the second is seen by the first.
func TestRegistryTwoInstancesOneConsul(t *testing.T) {
	consul := storetest.StartConsul(t)
	args := []string{"--store=consul", "--consul-addr=" + consul.Addr, "--consul-wait=2s"}
	a := registryv1.NewRegistryClient(servicetest.Start(t, registry.Spec(), args...).Conn(t))
	b := registryv1.NewRegistryClient(servicetest.Start(t, registry.Spec(), args...).Conn(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	watch, err := b.Watch(ctx, &registryv1.WatchRequest{Service: "checkout"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil { // the current, empty snapshot
		t.Fatal(err)
	}
	if _, err := a.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
		Service: "checkout", Id: "c-1", Address: "10.1.0.1", Port: 8443, Tags: []string{"v2"}, Zone: "z1",
	}}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := watch.Recv()
		if err != nil {
			t.Fatalf("watch through the second registry: %v", err)
		}
		if len(m.Instances) == 1 && m.Instances[0].Id == "c-1" && m.Instances[0].Zone == "z1" && m.Instances[0].Port == 8443 {
			break
		}
	}
	list, err := b.ListServices(ctx, &registryv1.ListServicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range list.Services {
		found = found || s.Name == "checkout" && s.Instances == 1
	}
	if !found {
		t.Fatalf("second registry's ListServices lacks checkout: %v", list.Services)
	}
	if _, err := b.Deregister(ctx, &registryv1.DeregisterRequest{Service: "checkout", Id: "c-1"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := a.GetService(ctx, &registryv1.GetServiceRequest{Service: "checkout", IncludeUnhealthy: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Instances) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("first registry still lists %v after the second deregistered it", resp.Instances)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
