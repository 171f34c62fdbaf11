// Package storetest is the conformance suite every registry Store passes:
// Run drives a store through the registry's gRPC API on a real loopback
// socket and checks the behaviour a client sees, including a backend outage
// when the backend can be stopped and started.
package storetest

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pkgwatch "github.com/switchboard-net/switchboard/pkg/watch"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry"
)

// Backend is what the suite needs of a backend.
type Backend struct {
	// Open returns a new store on the backend: a new registry instance,
	// seeing the same data as earlier ones. The suite closes it.
	Open func(t testing.TB) registry.Store
	// Shared reports that two stores may be open at once (two registries on
	// one Consul or etcd).
	Shared bool
	// Stop kills the backend and Start brings it back on the same address
	// and data. When nil the outage test is skipped.
	Stop, Start func(t testing.TB)
}

// Wait bounds every wait for something that should happen.
const Wait = 15 * time.Second

var seq atomic.Int64

// name returns a service name unique to this run.
func name(prefix string) string { return fmt.Sprintf("%s-%d", prefix, seq.Add(1)) }

// Run runs the conformance suite against b.
func Run(t *testing.T, b Backend) {
	t.Run("catalog", func(t *testing.T) {
		c := Serve(t, b.Open(t))
		for _, tc := range []struct {
			name string
			fn   func(*testing.T, registryv1.RegistryClient)
		}{
			{"RegisterGet", testRegisterGet},
			{"Reregister", testReregister},
			{"Deregister", testDeregister},
			{"ListServices", testListServices},
			{"BadInput", testBadInput},
			{"SetHealth", testSetHealth},
			{"TTL", testTTL},
			{"Watch", testWatch},
			{"WatchAll", testWatchAll},
			{"WatchIncremental", testWatchIncremental},
			{"WatchAllIncremental", testWatchAllIncremental},
			{"Records", testRecords},
			{"Config", testConfig},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				tc.fn(t, c)
			})
		}
	})
	t.Run("Restart", func(t *testing.T) { testRestart(t, b) })
	if b.Shared {
		t.Run("TwoRegistries", func(t *testing.T) { testTwoRegistries(t, b) })
		t.Run("ConfigTwoRegistries", func(t *testing.T) { testConfigTwoRegistries(t, b) })
	}
	if b.Stop != nil && b.Start != nil {
		t.Run("Outage", func(t *testing.T) { testOutage(t, b) })
		t.Run("RestartThenOutage", func(t *testing.T) { testRestartThenOutage(t, b) })
	}
}

// Serve runs a registry server over store on 127.0.0.1:0, waits for the
// store's first load and returns a client; both stop, and the store
// closes, at test cleanup.
func Serve(t testing.TB, store registry.Store) registryv1.RegistryClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	registryv1.RegisterRegistryServer(srv, registry.NewServer(store, nil))
	go func() { _ = srv.Serve(ln) }()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		srv.Stop()
		if err := store.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	// A store starts stale until its first full read of the backend.
	Eventually(t, "store's first load", func() string {
		if store.Snapshot().Stale() {
			return "stale"
		}
		return ""
	})
	return registryv1.NewRegistryClient(cc)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	t.Cleanup(cancel)
	return ctx
}

func inst(service, id string, port uint32) *registryv1.Instance {
	return &registryv1.Instance{Service: service, Id: id, Address: "127.0.0.1", Port: port}
}

func register(t testing.TB, c registryv1.RegistryClient, in *registryv1.Instance) *registryv1.Instance {
	t.Helper()
	resp, err := c.Register(ctxT(t), &registryv1.RegisterRequest{Instance: in})
	if err != nil {
		t.Fatalf("Register(%s/%s): %v", in.Service, in.Id, err)
	}
	return resp.Instance
}

func get(t testing.TB, c registryv1.RegistryClient, service string, all bool) *registryv1.GetServiceResponse {
	t.Helper()
	resp, err := c.GetService(ctxT(t), &registryv1.GetServiceRequest{Service: service, IncludeUnhealthy: all})
	if err != nil {
		t.Fatalf("GetService(%s): %v", service, err)
	}
	return resp
}

func ids(insts []*registryv1.Instance) string {
	var s []string
	for _, in := range insts {
		s = append(s, in.Id)
	}
	return strings.Join(s, ",")
}

func wantCode(t testing.TB, err error, code codes.Code, what string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: got %v, want %v", what, err, code)
	}
}

// Eventually polls fn until it returns "" and fails the test when Wait
// passes first; fn says what it is still waiting for.
func Eventually(t testing.TB, what string, fn func() string) {
	t.Helper()
	deadline := time.Now().Add(Wait)
	delay := 10 * time.Millisecond
	for {
		msg := fn()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after %v", what, msg, Wait)
		}
		time.Sleep(delay)
		delay = min(delay*2, 250*time.Millisecond)
	}
}

func testRegisterGet(t *testing.T, c registryv1.RegistryClient) {
	svc := name("web")
	a := inst(svc, "b-2", 8081)
	a.Tags = []string{"primary", "edge.route=example.com/api"}
	a.Metadata = map[string]string{"version": "1.2.3", "owner": "team-a"}
	a.Zone = "zone-1"
	a.Check = &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_HTTP}
	got := register(t, c, a)
	if got.Weight != 1 || got.Check.HttpPath != "/" || got.Check.Interval.AsDuration() != 10*time.Second ||
		got.Check.Timeout.AsDuration() != 2*time.Second || got.Health != registryv1.HealthStatus_HEALTH_STATUS_PASSING || got.UpdatedAt == nil {
		t.Fatalf("Register returned %v: want defaults filled and PASSING", got)
	}
	register(t, c, &registryv1.Instance{Service: svc, Id: "a-1", Address: "::1", Port: 8080, Weight: 5})
	resp := get(t, c, svc, false)
	if ids(resp.Instances) != "a-1,b-2" || resp.Index == 0 {
		t.Fatalf("GetService = %s at %d, want a-1,b-2 sorted by id", ids(resp.Instances), resp.Index)
	}
	b := resp.Instances[1]
	if !slices.Equal(b.Tags, a.Tags) || b.Metadata["version"] != "1.2.3" || b.Metadata["owner"] != "team-a" || len(b.Metadata) != 2 ||
		b.Zone != "zone-1" || b.Address != "127.0.0.1" || b.Port != 8081 || b.Check.GetKind() != registryv1.CheckKind_CHECK_KIND_HTTP {
		t.Fatalf("stored instance %v lost fields of %v", b, a)
	}
	if resp.Instances[0].Weight != 5 || resp.Instances[0].Address != "::1" {
		t.Fatalf("stored instance %v, want weight 5 address ::1", resp.Instances[0])
	}
	if n := len(get(t, c, name("nobody"), true).Instances); n != 0 {
		t.Fatalf("unknown service has %d instances", n)
	}
}

func testReregister(t *testing.T, c registryv1.RegistryClient) {
	svc := name("api")
	register(t, c, inst(svc, "x", 1000))
	before := get(t, c, svc, true).Index
	register(t, c, inst(svc, "x", 2000))
	resp := get(t, c, svc, true)
	if len(resp.Instances) != 1 || resp.Instances[0].Port != 2000 {
		t.Fatalf("after re-register: %v, want one instance on port 2000", resp.Instances)
	}
	if resp.Index <= before {
		t.Fatalf("index did not increase on re-register: %d -> %d", before, resp.Index)
	}
}

func testDeregister(t *testing.T, c registryv1.RegistryClient) {
	svc := name("db")
	register(t, c, inst(svc, "one", 5432))
	register(t, c, inst(svc, "two", 5433))
	if _, err := c.Deregister(ctxT(t), &registryv1.DeregisterRequest{Service: svc, Id: "one"}); err != nil {
		t.Fatal(err)
	}
	if got := ids(get(t, c, svc, true).Instances); got != "two" {
		t.Fatalf("after deregister: %s, want two", got)
	}
	_, err := c.Deregister(ctxT(t), &registryv1.DeregisterRequest{Service: svc, Id: "one"})
	wantCode(t, err, codes.NotFound, "deregistering twice")
	_, err = c.Deregister(ctxT(t), &registryv1.DeregisterRequest{Service: svc, Id: "bad id!"})
	wantCode(t, err, codes.InvalidArgument, "deregister with a bad id")
}

func testListServices(t *testing.T, c registryv1.RegistryClient) {
	svc := name("list")
	a := inst(svc, "a", 1)
	a.Tags = []string{"z", "x"}
	b := inst(svc, "b", 2)
	b.Tags = []string{"x", "y"}
	register(t, c, a)
	register(t, c, b)
	if _, err := c.SetHealth(ctxT(t), &registryv1.SetHealthRequest{Service: svc, Id: "b", Status: registryv1.HealthStatus_HEALTH_STATUS_CRITICAL}); err != nil {
		t.Fatal(err)
	}
	resp, err := c.ListServices(ctxT(t), &registryv1.ListServicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(resp.Services, func(a, b *registryv1.ServiceSummary) int { return strings.Compare(a.Name, b.Name) }) {
		t.Fatal("ListServices not sorted by name")
	}
	for _, s := range resp.Services {
		if s.Name == svc {
			if s.Instances != 2 || s.Passing != 1 || strings.Join(s.Tags, ",") != "x,y,z" {
				t.Fatalf("summary %v, want 2 instances, 1 passing, tags x,y,z", s)
			}
			return
		}
	}
	t.Fatalf("ListServices lacks %s", svc)
}

func testBadInput(t *testing.T, c registryv1.RegistryClient) {
	svc := name("bad")
	many := func(n int) []string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf("t%d", i)
		}
		return s
	}
	bigMeta := map[string]string{}
	for i := range 100 {
		bigMeta[fmt.Sprintf("k%d", i)] = "v"
	}
	ok := func() *registryv1.Instance { return inst(svc, "i1", 80) }
	for _, tc := range []struct {
		field string
		edit  func(*registryv1.Instance)
	}{
		{"instance.service", func(in *registryv1.Instance) { in.Service = "" }},
		{"instance.service", func(in *registryv1.Instance) { in.Service = "Web_Server" }},
		{"instance.service", func(in *registryv1.Instance) { in.Service = "-web" }},
		{"instance.service", func(in *registryv1.Instance) { in.Service = strings.Repeat("a", 64) }},
		{"instance.id", func(in *registryv1.Instance) { in.Id = "" }},
		{"instance.id", func(in *registryv1.Instance) { in.Id = "a/b" }},
		{"instance.address", func(in *registryv1.Instance) { in.Address = "" }},
		{"instance.address", func(in *registryv1.Instance) { in.Address = "not an address" }},
		{"instance.address", func(in *registryv1.Instance) { in.Address = "1.2.3.4.5" }},
		{"instance.port", func(in *registryv1.Instance) { in.Port = 0 }},
		{"instance.port", func(in *registryv1.Instance) { in.Port = 70000 }},
		{"instance.tags", func(in *registryv1.Instance) { in.Tags = many(1000) }},
		{"instance.tags", func(in *registryv1.Instance) { in.Tags = []string{strings.Repeat("t", 5000)} }},
		{"instance.metadata", func(in *registryv1.Instance) { in.Metadata = bigMeta }},
		{"instance.metadata", func(in *registryv1.Instance) { in.Metadata = map[string]string{"k": strings.Repeat("v", 100000)} }},
		{"instance.metadata", func(in *registryv1.Instance) { in.Metadata = map[string]string{"bad key": "v"} }},
		{"instance.metadata", func(in *registryv1.Instance) { in.Metadata = map[string]string{"switchboard-zone": "v"} }},
		{"instance.weight", func(in *registryv1.Instance) { in.Weight = 1 << 20 }},
		{"instance.check.interval", func(in *registryv1.Instance) {
			in.Check = &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_TTL, Interval: durationpb.New(time.Millisecond)}
		}},
		{"instance.check.kind", func(in *registryv1.Instance) { in.Check = &registryv1.HealthCheck{Kind: 99} }},
		{"instance.check.http_path", func(in *registryv1.Instance) {
			in.Check = &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_HTTP, HttpPath: "no-slash"}
		}},
	} {
		in := ok()
		tc.edit(in)
		_, err := c.Register(ctxT(t), &registryv1.RegisterRequest{Instance: in})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.field) {
			t.Errorf("Register(%s) = %v, want InvalidArgument naming %s", tc.field, err, tc.field)
		}
	}
	_, err := c.Register(ctxT(t), &registryv1.RegisterRequest{})
	wantCode(t, err, codes.InvalidArgument, "Register without an instance")
	if n := len(get(t, c, svc, true).Instances); n != 0 {
		t.Fatalf("bad registrations wrote %d instances", n)
	}
	_, err = c.GetService(ctxT(t), &registryv1.GetServiceRequest{Service: "UPPER"})
	wantCode(t, err, codes.InvalidArgument, "GetService of a bad name")
	_, err = c.SetHealth(ctxT(t), &registryv1.SetHealthRequest{Service: svc, Id: "i1"})
	wantCode(t, err, codes.InvalidArgument, "SetHealth without a status")
}

func setHealth(t testing.TB, c registryv1.RegistryClient, svc, id string, st registryv1.HealthStatus, out string) {
	t.Helper()
	if _, err := c.SetHealth(ctxT(t), &registryv1.SetHealthRequest{Service: svc, Id: id, Status: st, Output: out}); err != nil {
		t.Fatalf("SetHealth(%s/%s, %v): %v", svc, id, st, err)
	}
}

func testSetHealth(t *testing.T, c registryv1.RegistryClient) {
	svc := name("health")
	a := inst(svc, "a", 1)
	a.Check = &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_TCP, Interval: durationpb.New(5 * time.Second)}
	register(t, c, a)
	register(t, c, inst(svc, "b", 2))
	setHealth(t, c, svc, "a", registryv1.HealthStatus_HEALTH_STATUS_CRITICAL, "connection refused")
	if got := ids(get(t, c, svc, false).Instances); got != "b" {
		t.Fatalf("healthy instances %s, want b (a is critical)", got)
	}
	all := get(t, c, svc, true).Instances
	if ids(all) != "a,b" || all[0].Health != registryv1.HealthStatus_HEALTH_STATUS_CRITICAL || all[0].HealthOutput != "connection refused" {
		t.Fatalf("all instances %v, want a CRITICAL with its output", all)
	}
	setHealth(t, c, svc, "a", registryv1.HealthStatus_HEALTH_STATUS_WARNING, "slow")
	if got := ids(get(t, c, svc, false).Instances); got != "a,b" {
		t.Fatalf("healthy instances %s, want a,b (warning receives traffic)", got)
	}
	setHealth(t, c, svc, "b", registryv1.HealthStatus_HEALTH_STATUS_CRITICAL, "down")
	setHealth(t, c, svc, "b", registryv1.HealthStatus_HEALTH_STATUS_PASSING, "")
	if got := get(t, c, svc, true).Instances[1]; got.Health != registryv1.HealthStatus_HEALTH_STATUS_PASSING {
		t.Fatalf("b after PASSING: %v", got)
	}
	_, err := c.SetHealth(ctxT(t), &registryv1.SetHealthRequest{Service: svc, Id: "nope", Status: registryv1.HealthStatus_HEALTH_STATUS_PASSING})
	wantCode(t, err, codes.NotFound, "SetHealth of an unknown instance")
}

func testTTL(t *testing.T, c registryv1.RegistryClient) {
	svc := name("ttl")
	a := inst(svc, "a", 1)
	a.Check = &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_TTL, Interval: durationpb.New(time.Second)}
	if got := register(t, c, a); got.Health != registryv1.HealthStatus_HEALTH_STATUS_PASSING {
		t.Fatalf("a TTL instance starts %v, want PASSING", got.Health)
	}
	register(t, c, inst(svc, "nocheck", 2))
	if _, err := c.Heartbeat(ctxT(t), &registryv1.HeartbeatRequest{Service: svc, Id: "a"}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Heartbeat(ctxT(t), &registryv1.HeartbeatRequest{Service: svc, Id: "nocheck"})
	wantCode(t, err, codes.FailedPrecondition, "Heartbeat of an instance without a TTL check")
	_, err = c.Heartbeat(ctxT(t), &registryv1.HeartbeatRequest{Service: svc, Id: "ghost"})
	wantCode(t, err, codes.NotFound, "Heartbeat of an unknown instance")
	// No more heartbeats: a turns critical, the instance without a check stays.
	Eventually(t, "TTL expiry", func() string {
		all := get(t, c, svc, true).Instances
		if len(all) != 2 || all[0].Health != registryv1.HealthStatus_HEALTH_STATUS_CRITICAL {
			return fmt.Sprintf("%v", all)
		}
		return ""
	})
	if got := ids(get(t, c, svc, false).Instances); got != "nocheck" {
		t.Fatalf("healthy after expiry: %s, want nocheck", got)
	}
	if _, err := c.Heartbeat(ctxT(t), &registryv1.HeartbeatRequest{Service: svc, Id: "a"}); err != nil {
		t.Fatal(err)
	}
	if got := ids(get(t, c, svc, false).Instances); got != "a,nocheck" {
		t.Fatalf("healthy after a heartbeat: %s, want a,nocheck", got)
	}
}

// watcher collects a Watch stream's messages.
type watcher struct {
	ch     chan *registryv1.WatchResponse
	errc   chan error
	cancel context.CancelFunc
}

func watch(t testing.TB, c registryv1.RegistryClient, req *registryv1.WatchRequest) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := c.Watch(ctx, req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	w := &watcher{ch: make(chan *registryv1.WatchResponse, 256), errc: make(chan error, 1), cancel: cancel}
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				w.errc <- err
				return
			}
			w.ch <- m
		}
	}()
	t.Cleanup(cancel)
	return w
}

// next returns the first message for which ok holds, failing after Wait.
func (w *watcher) next(t testing.TB, what string, ok func(*registryv1.WatchResponse) bool) *registryv1.WatchResponse {
	t.Helper()
	timer := time.NewTimer(Wait)
	defer timer.Stop()
	var last *registryv1.WatchResponse
	for {
		select {
		case m := <-w.ch:
			if ok(m) {
				return m
			}
			last = m
		case err := <-w.errc:
			t.Fatalf("watch (%s) ended: %v", what, err)
		case <-timer.C:
			t.Fatalf("watch: no snapshot with %s within %v (last: %v)", what, Wait, last)
		}
	}
}

func testWatch(t *testing.T, c registryv1.RegistryClient) {
	svc := name("watch")
	w := watch(t, c, &registryv1.WatchRequest{Service: svc})
	first := w.next(t, "the current (empty) snapshot", func(m *registryv1.WatchResponse) bool { return true })
	if len(first.Instances) != 0 || first.Stale {
		t.Fatalf("first snapshot %v, want empty and fresh", first)
	}
	register(t, c, inst(svc, "a", 1))
	m := w.next(t, "a", func(m *registryv1.WatchResponse) bool { return ids(m.Instances) == "a" })
	if m.Index <= first.Index {
		t.Fatalf("index went %d -> %d", first.Index, m.Index)
	}
	// Healthy-only watchers stop seeing a critical instance; others see it.
	wAll := watch(t, c, &registryv1.WatchRequest{Service: svc, IncludeUnhealthy: true})
	wAll.next(t, "a", func(m *registryv1.WatchResponse) bool { return ids(m.Instances) == "a" })
	setHealth(t, c, svc, "a", registryv1.HealthStatus_HEALTH_STATUS_CRITICAL, "down")
	w.next(t, "no healthy instance", func(m *registryv1.WatchResponse) bool { return len(m.Instances) == 0 })
	crit := wAll.next(t, "a critical", func(m *registryv1.WatchResponse) bool {
		return len(m.Instances) == 1 && m.Instances[0].Health == registryv1.HealthStatus_HEALTH_STATUS_CRITICAL
	})

	// Resume from the last index: the first message is the next change.
	w.cancel()
	resumed := watch(t, c, &registryv1.WatchRequest{Service: svc, AfterIndex: crit.Index, IncludeUnhealthy: true})
	register(t, c, inst(svc, "b", 2))
	m = resumed.next(t, "a,b", func(*registryv1.WatchResponse) bool { return true })
	if ids(m.Instances) != "a,b" || m.Index <= crit.Index {
		t.Fatalf("resumed watch sent %s at %d, want a,b after %d", ids(m.Instances), m.Index, crit.Index)
	}
	_, err := c.Deregister(ctxT(t), &registryv1.DeregisterRequest{Service: svc, Id: "a"})
	if err != nil {
		t.Fatal(err)
	}
	resumed.next(t, "b", func(m *registryv1.WatchResponse) bool { return ids(m.Instances) == "b" })

	// Changes of other services do not wake this service's watch with a new index.
	register(t, c, inst(name("other"), "x", 1))
	register(t, c, inst(svc, "c", 3))
	m = resumed.next(t, "b,c", func(*registryv1.WatchResponse) bool { return true })
	if ids(m.Instances) != "b,c" {
		t.Fatalf("after another service changed, watch sent %s, want b,c next", ids(m.Instances))
	}
}

func testWatchAll(t *testing.T, c registryv1.RegistryClient) {
	s1, s2 := name("all"), name("all")
	w := watch(t, c, &registryv1.WatchRequest{})
	w.next(t, "the current snapshot", func(*registryv1.WatchResponse) bool { return true })
	register(t, c, inst(s1, "a", 1))
	register(t, c, inst(s2, "b", 2))
	w.next(t, "both services", func(m *registryv1.WatchResponse) bool {
		var n int
		for _, in := range m.Instances {
			if in.Service == s1 || in.Service == s2 {
				n++
			}
		}
		return n == 2
	})
}

// update is one assembled snapshot or update of an incremental watch: its
// messages' instances and removals, and the whole set after it.
type update struct {
	index    uint64
	snapshot bool
	upserted string // ids, in the order sent
	removed  string
	all      string            // ids of every instance held after the update
	keys     map[string]string // "service/id" -> "up" or "rm", of every service
}

// incremental reads an incremental watch's messages into a
// pkgwatch.Catalog, as clients do.
type incremental struct {
	w   *watcher
	cat pkgwatch.Catalog
}

// next returns the next complete update.
func (in *incremental) next(t testing.TB, what string) update {
	t.Helper()
	u := update{keys: map[string]string{}}
	var up, rm []string
	first := true
	in.w.next(t, what, func(m *registryv1.WatchResponse) bool {
		if first {
			u.snapshot, first = m.Snapshot, false
		}
		for _, i := range m.Instances {
			up = append(up, i.Id)
			u.keys[i.Service+"/"+i.Id] = "up"
		}
		for _, r := range m.Removed {
			rm = append(rm, r.Id)
			u.keys[r.Service+"/"+r.Id] = "rm"
		}
		done, err := in.cat.Apply(m)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return done
	})
	u.index, u.upserted, u.removed, u.all = in.cat.Index(), strings.Join(up, ","), strings.Join(rm, ","), ids(in.cat.Instances())
	return u
}

func testWatchIncremental(t *testing.T, c registryv1.RegistryClient) {
	svc := name("incr")
	w := &incremental{w: watch(t, c, &registryv1.WatchRequest{Service: svc, Incremental: true})}
	first := w.next(t, "the current (empty) snapshot")
	if !first.snapshot || first.all != "" {
		t.Fatalf("first message %+v, want an empty snapshot", first)
	}
	register(t, c, inst(svc, "a", 1))
	u := w.next(t, "a added")
	if u.snapshot || u.upserted != "a" || u.removed != "" || u.all != "a" || u.index <= first.index {
		t.Fatalf("after registering a: %+v, want an update adding a after index %d", u, first.index)
	}
	register(t, c, inst(svc, "b", 2))
	if u = w.next(t, "b added"); u.snapshot || u.upserted != "b" || u.all != "a,b" {
		t.Fatalf("after registering b: %+v, want an update with b only", u)
	}
	register(t, c, inst(svc, "a", 11))
	if u = w.next(t, "a changed"); u.upserted != "a" || u.all != "a,b" {
		t.Fatalf("after changing a's port: %+v, want an update with a only", u)
	}
	if p := w.cat.Instances()[0].Port; p != 11 {
		t.Fatalf("a's port after the update is %d, want 11", p)
	}
	// A healthy-only watch sees an instance that stops passing as removed.
	setHealth(t, c, svc, "a", registryv1.HealthStatus_HEALTH_STATUS_CRITICAL, "down")
	if u = w.next(t, "a critical"); u.upserted != "" || u.removed != "a" || u.all != "b" {
		t.Fatalf("after a failed its check: %+v, want a removed", u)
	}
	if _, err := c.Deregister(ctxT(t), &registryv1.DeregisterRequest{Service: svc, Id: "b"}); err != nil {
		t.Fatal(err)
	}
	// Removing the last instance names more instances than remain: the
	// update is the (empty) snapshot instead.
	if u = w.next(t, "b removed"); !u.snapshot || u.all != "" {
		t.Fatalf("after deregistering b: %+v, want an empty snapshot", u)
	}
	// Resuming from an index starts with a snapshot of what changed since.
	w.w.cancel()
	resumed := &incremental{w: watch(t, c, &registryv1.WatchRequest{Service: svc, AfterIndex: u.index, IncludeUnhealthy: true, Incremental: true})}
	register(t, c, inst(svc, "c", 3))
	if r := resumed.next(t, "a,c"); !r.snapshot || r.all != "a,c" || r.index <= u.index {
		t.Fatalf("resumed watch began with %+v, want a snapshot of a,c after index %d", r, u.index)
	}
}

func testWatchAllIncremental(t *testing.T, c registryv1.RegistryClient) {
	s1, s2 := name("incrall"), name("incrall")
	register(t, c, inst(s1, "a", 1))
	w := &incremental{w: watch(t, c, &registryv1.WatchRequest{Incremental: true, IncludeUnhealthy: true})}
	if first := w.next(t, "the current snapshot"); !first.snapshot || first.keys[s1+"/a"] != "up" {
		t.Fatalf("first message %+v, want a snapshot holding a", first)
	}
	// Other tests change other services meanwhile: wait for the update
	// that carries this one.
	register(t, c, inst(s2, "b", 2))
	var u update
	for u.keys[s2+"/b"] != "up" {
		u = w.next(t, s2+"/b added")
		if u.snapshot {
			t.Fatalf("update %+v is a whole snapshot, want the changes only", u)
		}
	}
	if _, ok := u.keys[s1+"/a"]; ok {
		t.Fatalf("update adding %s/b also sent %s/a, which did not change: %+v", s2, s1, u)
	}
	_, err := c.Deregister(ctxT(t), &registryv1.DeregisterRequest{Service: s1, Id: "a"})
	if err != nil {
		t.Fatal(err)
	}
	for u.keys[s1+"/a"] != "rm" {
		u = w.next(t, s1+"/a removed")
	}
	for _, in := range w.cat.Instances() {
		if in.Service == s1 {
			t.Fatalf("%s/%s still held after its removal", in.Service, in.Id)
		}
	}
}

func testRecords(t *testing.T, c registryv1.RegistryClient) {
	zone := name("zone") + ".test."
	ctx := ctxT(t)
	ws, err := c.WatchRecords(ctx, &registryv1.WatchRecordsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := ws.Recv()
	if err != nil {
		t.Fatal(err)
	}
	put := func(r *registryv1.Record) *registryv1.Record {
		t.Helper()
		resp, err := c.PutRecord(ctx, &registryv1.PutRecordRequest{Record: r})
		if err != nil {
			t.Fatalf("PutRecord(%v): %v", r, err)
		}
		return resp.Record
	}
	got := put(&registryv1.Record{Name: "WWW." + strings.TrimSuffix(zone, "."), Type: "a", Data: "192.0.2.10"})
	if got.Name != "www."+zone || got.Type != "A" || got.Ttl != 300 {
		t.Fatalf("stored record %v, want a canonical name, type A and TTL 300", got)
	}
	put(&registryv1.Record{Name: "www." + zone, Type: "A", Data: "192.0.2.11", Ttl: 60})
	put(&registryv1.Record{Name: zone, Type: "MX", Data: "10 mail." + zone})
	put(&registryv1.Record{Name: zone, Type: "TXT", Data: `"v=spf1 -all"`})
	for _, bad := range []struct {
		field string
		rec   *registryv1.Record
	}{
		{"record.name", &registryv1.Record{Name: "", Type: "A", Data: "192.0.2.1"}},
		{"record.name", &registryv1.Record{Name: "bad name.", Type: "A", Data: "192.0.2.1"}},
		{"record.type", &registryv1.Record{Name: zone, Type: "HINFO", Data: "x"}},
		{"record.data", &registryv1.Record{Name: zone, Type: "A", Data: "2001:db8::1"}},
		{"record.data", &registryv1.Record{Name: zone, Type: "MX", Data: "mail." + zone}},
		{"record.data", &registryv1.Record{Name: zone, Type: "TXT", Data: strings.Repeat("x", 10000)}},
	} {
		_, err := c.PutRecord(ctx, &registryv1.PutRecordRequest{Record: bad.rec})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), bad.field) {
			t.Errorf("PutRecord(%v) = %v, want InvalidArgument naming %s", bad.rec, err, bad.field)
		}
	}
	list, err := c.ListRecords(ctx, &registryv1.ListRecordsRequest{Suffix: zone})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range list.Records {
		names = append(names, r.Name+" "+r.Type+" "+r.Data)
	}
	want := []string{"www." + zone + " A 192.0.2.10", "www." + zone + " A 192.0.2.11", zone + " MX 10 mail." + zone, zone + ` TXT "v=spf1 -all"`}
	if !slices.Equal(names, want) {
		t.Fatalf("ListRecords = %q, want %q", names, want)
	}
	del, err := c.DeleteRecord(ctx, &registryv1.DeleteRecordRequest{Name: "www." + zone, Type: "A", Data: "192.0.2.10"})
	if err != nil || del.Deleted != 1 {
		t.Fatalf("DeleteRecord one = %v, %v; want 1", del, err)
	}
	del, err = c.DeleteRecord(ctx, &registryv1.DeleteRecordRequest{Name: zone, Type: "MX"})
	if err != nil || del.Deleted != 1 {
		t.Fatalf("DeleteRecord all MX = %v, %v; want 1", del, err)
	}
	_, err = c.DeleteRecord(ctx, &registryv1.DeleteRecordRequest{Name: zone, Type: "BOGUS"})
	wantCode(t, err, codes.InvalidArgument, "DeleteRecord of a bad type")
	// The record watch converges on the remaining two records of the zone.
	for {
		m, err := ws.Recv()
		if err != nil {
			t.Fatalf("record watch: %v", err)
		}
		if m.Index < first.Index {
			t.Fatalf("record watch index went back from %d to %d", first.Index, m.Index)
		}
		var mine []string
		for _, r := range m.Records {
			if strings.HasSuffix(r.Name, zone) {
				mine = append(mine, r.Name+" "+r.Type+" "+r.Data)
			}
		}
		if slices.Equal(mine, []string{"www." + zone + " A 192.0.2.11", zone + ` TXT "v=spf1 -all"`}) {
			if m.Index <= first.Index {
				t.Fatalf("record watch index %d not after %d", m.Index, first.Index)
			}
			return
		}
	}
}

func testRestart(t *testing.T, b Backend) {
	svc := name("restart")
	s1 := b.Open(t)
	c1 := Serve(t, s1)
	register(t, c1, inst(svc, "keep", 1))
	if _, err := c1.PutRecord(ctxT(t), &registryv1.PutRecordRequest{Record: &registryv1.Record{Name: svc + ".test.", Type: "A", Data: "192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	putConfig(t, c1, "policy", svc, "kept")
	idx := get(t, c1, svc, true).Index
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	c2 := Serve(t, b.Open(t))
	configEventually(t, c2, "policy after a registry restart", "policy", svc, "kept")
	Eventually(t, "registration after a registry restart", func() string {
		resp := get(t, c2, svc, true)
		if ids(resp.Instances) != "keep" {
			return "instances " + ids(resp.Instances)
		}
		if resp.Index < idx {
			return fmt.Sprintf("index %d went back from %d", resp.Index, idx)
		}
		return ""
	})
	recs, err := c2.ListRecords(ctxT(t), &registryv1.ListRecordsRequest{Suffix: svc + ".test."})
	if err != nil || len(recs.Records) != 1 {
		t.Fatalf("records after restart: %v, %v", recs, err)
	}
}

func testTwoRegistries(t *testing.T, b Backend) {
	svc := name("shared")
	c1 := Serve(t, b.Open(t))
	c2 := Serve(t, b.Open(t))
	w := watch(t, c2, &registryv1.WatchRequest{Service: svc})
	register(t, c1, inst(svc, "from-1", 1))
	w.next(t, "the instance registered through the other registry", func(m *registryv1.WatchResponse) bool { return ids(m.Instances) == "from-1" })
	setHealth(t, c2, svc, "from-1", registryv1.HealthStatus_HEALTH_STATUS_CRITICAL, "seen by 2")
	Eventually(t, "health set through the other registry", func() string {
		all := get(t, c1, svc, true).Instances
		if len(all) != 1 || all[0].Health != registryv1.HealthStatus_HEALTH_STATUS_CRITICAL {
			return fmt.Sprint(all)
		}
		return ""
	})
}

func testOutage(t *testing.T, b Backend) {
	svc := name("outage")
	c := Serve(t, b.Open(t))
	register(t, c, inst(svc, "owned", 1))
	putConfig(t, c, "policy", svc, "before")
	w := watch(t, c, &registryv1.WatchRequest{Service: svc, IncludeUnhealthy: true})
	w.next(t, "owned", func(m *registryv1.WatchResponse) bool { return ids(m.Instances) == "owned" && !m.Stale })

	b.Stop(t)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Register(ctx, &registryv1.RegisterRequest{Instance: inst(svc, "during", 2)})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Register with the backend down = %v, want Unavailable", err)
	}
	// "Within a second" per call; allow scheduling slack on busy machines.
	if took := time.Since(start); took > 2500*time.Millisecond {
		t.Fatalf("Register with the backend down took %v, want about a second", took)
	}
	stale := w.next(t, "a stale snapshot", func(m *registryv1.WatchResponse) bool { return m.Stale })
	if ids(stale.Instances) != "owned" {
		t.Fatalf("stale snapshot %v, want the last known one (owned)", stale.Instances)
	}
	if got := ids(get(t, c, svc, true).Instances); got != "owned" {
		t.Fatalf("GetService during the outage = %s, want the last known owned", got)
	}
	if v := configValue(t, c, "policy", svc); v != "before" {
		t.Fatalf("policy during the outage = %q, want the last known one", v)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	_, err = c.PutConfig(ctx2, &registryv1.PutConfigRequest{Entry: &registryv1.ConfigEntry{Kind: "policy", Key: svc, Value: []byte("during")}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("PutConfig with the backend down = %v, want Unavailable", err)
	}

	b.Start(t)
	w.next(t, "a fresh snapshot with owned", func(m *registryv1.WatchResponse) bool { return !m.Stale && ids(m.Instances) == "owned" })
	Eventually(t, "registering after the backend returned", func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := c.Register(ctx, &registryv1.RegisterRequest{Instance: inst(svc, "after", 3)}); err != nil {
			return err.Error()
		}
		return ""
	})
	w.next(t, "owned and after", func(m *registryv1.WatchResponse) bool { return !m.Stale && ids(m.Instances) == "after,owned" })
	if b.Shared {
		// The backend itself has the instance again, not just this
		// registry's memory: a registry started now sees it.
		fresh := Serve(t, b.Open(t))
		Eventually(t, "re-registered instance seen by a new registry", func() string {
			if got := ids(get(t, fresh, svc, true).Instances); got != "after,owned" {
				return got
			}
			return ""
		})
		configEventually(t, fresh, "restored policy seen by a new registry", "policy", svc, "before")
	}
}

// testRestartThenOutage: a registry restarts, then the backend loses its
// data (a dev Consul agent forgets every registration). The new registry
// restores what the one before it registered — but not an instance that
// another registry deregistered meanwhile.
func testRestartThenOutage(t *testing.T, b Backend) {
	svc := name("handover")
	rec := &registryv1.Record{Name: svc + ".test.", Type: "A", Data: "192.0.2.7"}
	s1 := b.Open(t)
	c1 := Serve(t, s1)
	register(t, c1, inst(svc, "kept", 1))
	register(t, c1, inst(svc, "dropped", 2))
	if _, err := c1.PutRecord(ctxT(t), &registryv1.PutRecordRequest{Record: rec}); err != nil {
		t.Fatal(err)
	}
	putConfig(t, c1, "job", svc, "handed-over")
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	c2 := Serve(t, b.Open(t))
	configEventually(t, c2, "job seen by the next registry", "job", svc, "handed-over")
	w := watch(t, c2, &registryv1.WatchRequest{Service: svc, IncludeUnhealthy: true})
	w.next(t, "both instances seen by the next registry", func(m *registryv1.WatchResponse) bool {
		return ids(m.Instances) == "dropped,kept" && !m.Stale
	})
	if b.Shared {
		// Deregistered through another registry: the next one must not
		// bring it back after the outage.
		c3 := Serve(t, b.Open(t))
		Eventually(t, "both instances seen by a third registry", func() string {
			if got := ids(get(t, c3, svc, true).Instances); got != "dropped,kept" {
				return got
			}
			return ""
		})
		if _, err := c3.Deregister(ctxT(t), &registryv1.DeregisterRequest{Service: svc, Id: "dropped"}); err != nil {
			t.Fatal(err)
		}
	} else if _, err := c2.Deregister(ctxT(t), &registryv1.DeregisterRequest{Service: svc, Id: "dropped"}); err != nil {
		t.Fatal(err)
	}
	w.next(t, "kept alone", func(m *registryv1.WatchResponse) bool { return ids(m.Instances) == "kept" && !m.Stale })

	b.Stop(t)
	w.next(t, "a stale snapshot", func(m *registryv1.WatchResponse) bool { return m.Stale })
	b.Start(t)
	w.next(t, "a fresh snapshot with kept", func(m *registryv1.WatchResponse) bool { return !m.Stale && ids(m.Instances) == "kept" })

	if !b.Shared {
		return
	}
	// The backend itself has them again: a registry started now sees the
	// instance and the record, and not the deregistered one.
	fresh := Serve(t, b.Open(t))
	Eventually(t, "restored instance and record seen by a new registry", func() string {
		if got := ids(get(t, fresh, svc, true).Instances); got != "kept" {
			return "instances " + got
		}
		recs, err := fresh.ListRecords(ctxT(t), &registryv1.ListRecordsRequest{Suffix: svc + ".test."})
		if err != nil {
			return err.Error()
		}
		if len(recs.Records) != 1 || recs.Records[0].Data != rec.Data {
			return fmt.Sprint("records ", recs.Records)
		}
		if v := configValue(t, fresh, "job", svc); v != "handed-over" {
			return fmt.Sprintf("job %q", v)
		}
		return ""
	})
}
