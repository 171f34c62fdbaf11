package registry_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	"github.com/switchboard-net/switchboard/pkg/watch"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
)

// largeInstance is an instance carrying as many tags and as much metadata
// as the registry allows (about 36 KiB).
func largeInstance(service, id string, port uint32) *registryv1.Instance {
	in := &registryv1.Instance{Service: service, Id: id, Address: "10.1.0.1", Port: port, Metadata: map[string]string{}}
	for i := range catalog.MaxTags {
		in.Tags = append(in.Tags, fmt.Sprintf("tag%03d-%s", i, strings.Repeat("t", catalog.MaxTagLen-7)))
	}
	for i := range catalog.MaxMetadata {
		in.Metadata[fmt.Sprintf("key%03d-%s", i, strings.Repeat("k", catalog.MaxMetaKeyLen-7))] = strings.Repeat("v", catalog.MaxMetaValueLen)
	}
	return in
}

// TestWatchLargeCatalog: a catalog larger than the message limit (300
// instances of about 36 KiB: over 10 MiB) reaches an incremental watcher
// in parts of at most about 256 KiB, which fit even gRPC's default 4 MiB receive limit, and the
// changes after it arrive as small updates; a whole-snapshot watcher is
// told why it cannot have it.
func TestWatchLargeCatalog(t *testing.T) {
	inst := servicetest.Start(t, registry.Spec(), "--data-dir", t.TempDir())
	c := registryv1.NewRegistryClient(inst.Conn(t)) // gRPC's default limits: 4 MiB received
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 300
	total := 0
	for i := range n {
		in := largeInstance(fmt.Sprintf("big%d", i%3), fmt.Sprintf("i%03d", i), uint32(1000+i))
		total += proto.Size(in)
		if _, err := c.Register(ctx, &registryv1.RegisterRequest{Instance: in}); err != nil {
			t.Fatal(err)
		}
	}
	if total <= 8<<20 {
		t.Fatalf("the catalog is %d bytes, want more than 8 MiB for this test", total)
	}

	whole, err := c.Watch(ctx, &registryv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := whole.Recv(); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "incremental") {
		t.Fatalf("whole-snapshot watch of %d bytes: %v, want RESOURCE_EXHAUSTED naming incremental", total, err)
	}

	st, err := c.Watch(ctx, &registryv1.WatchRequest{Incremental: true, IncludeUnhealthy: true})
	if err != nil {
		t.Fatal(err)
	}
	var cat watch.Catalog
	next := func(what string) (parts []*registryv1.WatchResponse) {
		t.Helper()
		for {
			m, err := st.Recv()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if size := proto.Size(m); size > 256<<10+64<<10 {
				t.Fatalf("%s: a message of %d bytes, want at most about 256 KiB", what, size)
			}
			parts = append(parts, m)
			done, err := cat.Apply(m)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if done {
				return parts
			}
		}
	}
	snap := next("the snapshot")
	if !snap[0].Snapshot || len(snap) < 9 || len(cat.Instances()) != n {
		t.Fatalf("snapshot: %d parts (first snapshot=%v) holding %d instances, want at least 9 parts of %d", len(snap), snap[0].Snapshot, len(cat.Instances()), n)
	}

	// A new service: one small update, and the watcher holds it.
	if _, err := c.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: "late", Id: "x", Address: "10.2.0.1", Port: 80}}); err != nil {
		t.Fatal(err)
	}
	up := next("the new service")
	if len(up) != 1 || up[0].Snapshot || len(up[0].Instances) != 1 || up[0].Instances[0].Service != "late" || len(cat.Instances()) != n+1 {
		t.Fatalf("after registering late/x: %v, holding %d; want one update with late/x only", up, len(cat.Instances()))
	}
	// A change of one big instance and a removal.
	if _, err := c.SetHealth(ctx, &registryv1.SetHealthRequest{Service: "big1", Id: "i001", Status: registryv1.HealthStatus_HEALTH_STATUS_CRITICAL}); err != nil {
		t.Fatal(err)
	}
	up = next("the health change")
	if len(up) != 1 || len(up[0].Instances) != 1 || up[0].Instances[0].Id != "i001" {
		t.Fatalf("after i001 turned critical: %v, want one update with i001", up)
	}
	if _, err := c.Deregister(ctx, &registryv1.DeregisterRequest{Service: "big2", Id: "i002"}); err != nil {
		t.Fatal(err)
	}
	up = next("the removal")
	if len(up) != 1 || len(up[0].Removed) != 1 || up[0].Removed[0].Id != "i002" || len(up[0].Instances) != 0 {
		t.Fatalf("after deregistering i002: %v, want one update removing it", up)
	}
	got := map[string]registryv1.HealthStatus{}
	for _, in := range cat.Instances() {
		got[in.Service+"/"+in.Id] = in.Health
	}
	if _, ok := got["big2/i002"]; ok || len(got) != n || got["big1/i001"] != registryv1.HealthStatus_HEALTH_STATUS_CRITICAL {
		t.Fatalf("the watcher holds %d instances (i002 present: %v, i001: %v), want %d without i002 and i001 critical", len(got), ok, got["big1/i001"], n)
	}
}
