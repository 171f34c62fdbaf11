package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/balancer"
	"github.com/switchboard-net/switchboard/services/registry"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
	"github.com/switchboard-net/switchboard/services/resolver"
)

// TestLargeCatalogReachesClients: with a catalog over the gRPC message
// limit (300 instances carrying as many tags and as much metadata as the
// registry allows: over 10 MiB), the balancer and the resolver still
// follow the registry: a service registered afterwards is picked and
// answered in DNS, and its removal is followed too.
func TestLargeCatalogReachesClients(t *testing.T) {
	servicetest.Tool(t, "dig")
	reg := servicetest.Start(t, registry.Spec(), "--store=embedded", "--data-dir="+t.TempDir())
	r := registryv1.NewRegistryClient(reg.Conn(t))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 300 {
		in := &registryv1.Instance{Service: fmt.Sprintf("big%d", i%3), Id: fmt.Sprintf("i%03d", i), Address: "10.1.0.1", Port: uint32(1000 + i), Metadata: map[string]string{}}
		for k := range catalog.MaxTags {
			in.Tags = append(in.Tags, fmt.Sprintf("tag%03d-%s", k, strings.Repeat("t", catalog.MaxTagLen-7)))
		}
		for k := range catalog.MaxMetadata {
			in.Metadata[fmt.Sprintf("key%03d-%s", k, strings.Repeat("k", catalog.MaxMetaKeyLen-7))] = strings.Repeat("v", catalog.MaxMetaValueLen)
		}
		if _, err := r.Register(ctx, &registryv1.RegisterRequest{Instance: in}); err != nil {
			t.Fatal(err)
		}
	}
	bal := servicetest.Start(t, balancer.Spec(), "--registry-addr="+reg.Addrs["grpc"], "--data-dir="+t.TempDir(), "--refresh-interval=50ms")
	res := servicetest.Start(t, resolver.Spec(), "--dns-addr=127.0.0.1:0", "--registry-addr="+reg.Addrs["grpc"])
	b := balancerv1.NewBalancerClient(bal.Conn(t))

	register(t, r, "late", "late-1", 8080, 1)
	until(t, "the balancer picks the service registered after the large catalog", func() error {
		resp, err := b.Pick(ctx, &balancerv1.PickRequest{Service: "late"})
		if err != nil {
			return err
		}
		if resp.Endpoint.Id != "late-1" {
			return fmt.Errorf("picked %s", resp.Endpoint.Id)
		}
		return nil
	})
	resolverUntil(t, res.Addrs["dns"], "127.0.0.1", "late.service.switchboard.", "A", "+short")
	if out := resolverDig(t, res.Addrs["dns"], "big1.service.switchboard.", "A", "+short"); !strings.Contains(out, "10.1.0.1") {
		t.Fatalf("a service of the large catalog is not answered: %q", out)
	}

	if _, err := r.Deregister(ctx, &registryv1.DeregisterRequest{Service: "late", Id: "late-1"}); err != nil {
		t.Fatal(err)
	}
	until(t, "the balancer drops the removed service", func() error {
		if _, err := b.Pick(ctx, &balancerv1.PickRequest{Service: "late"}); err == nil {
			return fmt.Errorf("late still picked")
		}
		return nil
	})
	resolverUntil(t, res.Addrs["dns"], "NXDOMAIN", "late.service.switchboard.", "A")
}
