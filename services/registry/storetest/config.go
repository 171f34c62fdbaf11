package storetest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// putConfig stores an entry and returns it as stored.
func putConfig(t testing.TB, c registryv1.RegistryClient, kind, key, value string) *registryv1.ConfigEntry {
	t.Helper()
	resp, err := c.PutConfig(ctxT(t), &registryv1.PutConfigRequest{Entry: &registryv1.ConfigEntry{Kind: kind, Key: key, Value: []byte(value)}})
	if err != nil {
		t.Fatalf("PutConfig(%s %s): %v", kind, key, err)
	}
	return resp.Entry
}

// configValue returns the value of one entry as a registry lists it ("" when
// absent).
func configValue(t testing.TB, c registryv1.RegistryClient, kind, key string) string {
	t.Helper()
	resp, err := c.ListConfig(ctxT(t), &registryv1.ListConfigRequest{Kind: kind})
	if err != nil {
		t.Fatalf("ListConfig(%s): %v", kind, err)
	}
	for _, e := range resp.Entries {
		if e.Key == key {
			return string(e.Value)
		}
	}
	return ""
}

// testConfig: entries of each kind are stored, listed, watched, replaced
// and deleted; bad input names its field.
func testConfig(t *testing.T, c registryv1.RegistryClient) {
	svc := name("cfg")
	job := name("job")
	ctx := ctxT(t)
	ws, err := c.WatchConfig(ctx, &registryv1.WatchConfigRequest{Kind: "policy"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := ws.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got := putConfig(t, c, "policy", svc, "v1")
	if got.UpdatedAt == nil || got.Kind != "policy" || got.Key != svc || string(got.Value) != "v1" {
		t.Fatalf("stored entry %v, want policy %s = v1 with updated_at", got, svc)
	}
	putConfig(t, c, "job", job, "j1")
	if v := configValue(t, c, "policy", svc); v != "v1" {
		t.Fatalf("ListConfig(policy)[%s] = %q, want v1 (read your write)", svc, v)
	}
	if v := configValue(t, c, "job", job); v != "j1" {
		t.Fatalf("ListConfig(job)[%s] = %q, want j1", job, v)
	}
	if v := configValue(t, c, "policy", job); v != "" {
		t.Fatalf("a job shows among the policies: %q", v)
	}
	putConfig(t, c, "policy", svc, "v2")
	for _, bad := range []struct {
		field string
		e     *registryv1.ConfigEntry
	}{
		{"entry", nil},
		{"entry.kind", &registryv1.ConfigEntry{Key: svc, Value: []byte("x")}},
		{"entry.kind", &registryv1.ConfigEntry{Kind: "bogus", Key: svc, Value: []byte("x")}},
		{"entry.key", &registryv1.ConfigEntry{Kind: "policy", Key: "Not A Service", Value: []byte("x")}},
		{"entry.key", &registryv1.ConfigEntry{Kind: "job", Key: "a/b", Value: []byte("x")}},
		{"entry.value", &registryv1.ConfigEntry{Kind: "job", Key: job}},
		{"entry.value", &registryv1.ConfigEntry{Kind: "job", Key: job, Value: make([]byte, 65<<10)}},
	} {
		_, err := c.PutConfig(ctx, &registryv1.PutConfigRequest{Entry: bad.e})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), bad.field) {
			t.Errorf("PutConfig(%v) = %v, want InvalidArgument naming %s", bad.e, err, bad.field)
		}
	}
	_, err = c.ListConfig(ctx, &registryv1.ListConfigRequest{Kind: "nope"})
	wantCode(t, err, codes.InvalidArgument, "ListConfig of an unknown kind")
	if _, err := c.DeleteConfig(ctx, &registryv1.DeleteConfigRequest{Kind: "job", Key: job}); err != nil {
		t.Fatalf("DeleteConfig: %v", err)
	}
	_, err = c.DeleteConfig(ctx, &registryv1.DeleteConfigRequest{Kind: "job", Key: job})
	wantCode(t, err, codes.NotFound, "DeleteConfig of a deleted entry")
	if v := configValue(t, c, "job", job); v != "" {
		t.Fatalf("deleted job still listed: %q", v)
	}
	// The policy watch converges on v2, at a higher index.
	for {
		m, err := ws.Recv()
		if err != nil {
			t.Fatalf("config watch: %v", err)
		}
		if m.Index < first.Index {
			t.Fatalf("config watch index went back from %d to %d", first.Index, m.Index)
		}
		for _, e := range m.Entries {
			if e.Kind != "policy" {
				t.Fatalf("policy watch sent a %s entry", e.Kind)
			}
			if e.Key == svc && string(e.Value) == "v2" {
				if m.Index <= first.Index {
					t.Fatalf("config watch index %d not after %d", m.Index, first.Index)
				}
				return
			}
		}
	}
}

// testConfigTwoRegistries: an entry written through one registry reaches a
// watcher of another on the same backend, and so does its deletion.
func testConfigTwoRegistries(t *testing.T, b Backend) {
	svc := name("shared-policy")
	c1 := Serve(t, b.Open(t))
	c2 := Serve(t, b.Open(t))
	ws, err := c2.WatchConfig(ctxT(t), &registryv1.WatchConfigRequest{Kind: "policy"})
	if err != nil {
		t.Fatal(err)
	}
	next := func(what string, ok func(map[string]string) bool) {
		t.Helper()
		for {
			m, err := ws.Recv()
			if err != nil {
				t.Fatalf("waiting for %s: %v", what, err)
			}
			vals := map[string]string{}
			for _, e := range m.Entries {
				vals[e.Key] = string(e.Value)
			}
			if ok(vals) {
				return
			}
		}
	}
	putConfig(t, c1, "policy", svc, "from-1")
	next("the policy written through the other registry", func(v map[string]string) bool { return v[svc] == "from-1" })
	if _, err := c1.DeleteConfig(ctxT(t), &registryv1.DeleteConfigRequest{Kind: "policy", Key: svc}); err != nil {
		t.Fatal(err)
	}
	next("the deletion through the other registry", func(v map[string]string) bool { _, ok := v[svc]; return !ok })
	// Quick writes through both: each registry ends on the last one, and
	// soon (a watch round-trip: milliseconds; 4s allows for a loaded
	// machine) — a writer's own earlier write must not hold its view.
	putConfig(t, c1, "policy", svc, "a")
	putConfig(t, c2, "policy", svc, "b")
	putConfig(t, c1, "policy", svc, "c")
	putConfig(t, c2, "policy", svc, "d")
	start := time.Now()
	for _, c := range []registryv1.RegistryClient{c1, c2} {
		for configValue(t, c, "policy", svc) != "d" {
			if time.Since(start) > 4*time.Second {
				t.Fatalf("a registry still lists %q 4s after the last write (d)", configValue(t, c, "policy", svc))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// configEventually waits until a registry lists key of kind with value.
func configEventually(t testing.TB, c registryv1.RegistryClient, what, kind, key, value string) {
	t.Helper()
	Eventually(t, what, func() string {
		if v := configValue(t, c, kind, key); v != value {
			return fmt.Sprintf("%s %s = %q, want %q", kind, key, v, value)
		}
		return ""
	})
}
