package balancer

import (
	"context"
	"fmt"
	"testing"

	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// BenchmarkPickRPC measures Pick calls over loopback gRPC against a real
// balancer (fed by a fake registry stream) at 3, 100 and 1000 endpoints, one
// caller and with parallel callers.
func BenchmarkPickRPC(b *testing.B) {
	for _, n := range []int{3, 100, 1000} {
		reg, addr, _ := newFakeRegistry(b)
		var list []*registryv1.Instance
		for i := 0; i < n; i++ {
			list = append(list, inst("web", fmt.Sprintf("web-%d", i), uint32(1000+i), passing, 0))
		}
		reg.set(list...)
		c, inst := startBalancer(b, addr, b.TempDir())
		ctx := context.Background()
		for {
			if _, err := c.Pick(ctx, &balancerv1.PickRequest{Service: "web"}); err == nil {
				break
			}
		}
		b.Run(fmt.Sprintf("endpoints=%d/serial", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := c.Pick(ctx, &balancerv1.PickRequest{Service: "web"}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("endpoints=%d/parallel", n), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Pick(ctx, &balancerv1.PickRequest{Service: "web"}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		_ = inst.Stop()
	}
}
