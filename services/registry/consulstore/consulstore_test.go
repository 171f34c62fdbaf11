package consulstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
	"github.com/switchboard-net/switchboard/services/registry/consulstore"
	"github.com/switchboard-net/switchboard/services/registry/storetest"
)

func TestConformance(t *testing.T) {
	c := storetest.StartConsul(t)
	storetest.Run(t, storetest.Backend{
		Open: func(t testing.TB) registry.Store {
			return open(t, c.Addr, "test/"+t.Name())
		},
		Shared: true,
		Stop:   c.Stop,
		Start:  c.Start,
	})
}

// open opens a store on Consul at addr with the suite's settings; edit
// changes them. The caller closes it (storetest.Serve does).
func open(t testing.TB, addr, prefix string, edit ...func(*consulstore.Options)) *consulstore.Store {
	t.Helper()
	o := consulstore.Options{Address: addr, Prefix: prefix, Wait: 2 * time.Second, Timeout: time.Second, Logger: testLogger(t)}
	for _, e := range edit {
		e(&o)
	}
	s, err := consulstore.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testLogger sends a store's reports to the test log (shown with -v or on
// failure) until the test ends.
func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, nil))
}

type testWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// direct is a Consul client for checking what Consul itself holds.
func direct(t testing.TB, addr string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = addr
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// agentIDs returns the instance ids of svc the agent holds, sorted, or an
// error message.
func agentIDs(c *api.Client, svc string) ([]string, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := c.Agent().ServicesWithFilterOpts(fmt.Sprintf("Service == %q", svc), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err.Error()
	}
	var ids []string
	for _, s := range m {
		ids = append(ids, s.Meta["switchboard-id"])
	}
	slices.Sort(ids)
	return ids, ""
}

// catalogIDs returns the instance ids of svc in Consul's catalog, sorted.
func catalogIDs(c *api.Client, svc string) ([]string, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	entries, _, err := c.Health().Service(svc, "", false, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err.Error()
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Service.Meta["switchboard-id"])
	}
	slices.Sort(ids)
	return ids, ""
}

// shown returns the ids GetService returns for svc (healthy or not).
func shown(t testing.TB, c registryv1.RegistryClient, svc string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), storetest.Wait)
	defer cancel()
	resp, err := c.GetService(ctx, &registryv1.GetServiceRequest{Service: svc, IncludeUnhealthy: true})
	if err != nil {
		t.Fatalf("GetService(%s): %v", svc, err)
	}
	var ids []string
	for _, in := range resp.Instances {
		ids = append(ids, in.Id)
	}
	return ids
}

// diff says how got differs from want, or "" when they are equal.
func diff(what string, got, want []string) string {
	if slices.Equal(got, want) {
		return ""
	}
	var missing, extra []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			missing = append(missing, w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			extra = append(extra, g)
		}
	}
	return fmt.Sprintf("%s: %d of %d, missing %d %.80v, extra %v", what, len(got), len(want), len(missing), missing, extra)
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%04d", prefix, i)
	}
	return out
}

func instance(svc, id string) *registryv1.Instance {
	return &registryv1.Instance{Service: svc, Id: id, Address: "127.0.0.1", Port: 8080}
}

// registerAll registers the ids of svc, 8 at a time. A busy machine may
// time a call out: it is tried again, backing off, for up to a minute.
func registerAll(t testing.TB, c registryv1.RegistryClient, svc string, ids []string) {
	t.Helper()
	err := catalog.Parallel(context.Background(), 8, ids, func(ctx context.Context, id string) error {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		for delay := 50 * time.Millisecond; ; delay = min(2*delay, time.Second) {
			_, err := c.Register(ctx, &registryv1.RegisterRequest{Instance: instance(svc, id)})
			if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return err
			case <-time.After(delay):
			}
		}
	})
	if err != nil {
		t.Fatalf("register %d instances of %s: %v", len(ids), svc, err)
	}
}

func deregister(t testing.TB, c registryv1.RegistryClient, svc, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), storetest.Wait)
	defer cancel()
	if _, err := c.Deregister(ctx, &registryv1.DeregisterRequest{Service: svc, Id: id}); err != nil {
		t.Fatalf("Deregister(%s/%s): %v", svc, id, err)
	}
}

func without(list []string, drop ...string) []string {
	return slices.DeleteFunc(slices.Clone(list), func(s string) bool { return slices.Contains(drop, s) })
}

func sorted(list ...[]string) []string {
	return slices.Sorted(slices.Values(slices.Concat(list...)))
}

// TestNodeChangeThenRestart is the fault that lost 365 of 443
// registrations: Consul is recreated (a new agent with a new node name and
// none of the old one's state), the busy service keeps changing on the new
// node, then Consul is killed and restarted. Every accepted instance must
// come back, in Consul and through the registry, and no deregistered one.
// The compose stack's dev agent keeps everything in memory, so the restart
// loses every registration again; an agent with a data directory reloads
// its own, and the restore has nothing to do.
func TestNodeChangeThenRestart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		dataDir bool
	}{
		{"InMemory", false},
		{"DataDir", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := ""
			if tc.dataDir {
				dir = t.TempDir()
			}
			testNodeChangeThenRestart(t, dir)
		})
	}
}

func testNodeChangeThenRestart(t *testing.T, dataDir string) {
	c := storetest.StartConsul(t)
	consul := direct(t, c.Addr)
	store := open(t, c.Addr, "test/"+t.Name())
	cl := storetest.Serve(t, store)

	const busy, quiet = "busy", "quiet"
	busyIDs := ids("b-", 120)
	quietIDs := ids("q-", 5)
	registerAll(t, cl, busy, busyIDs)
	registerAll(t, cl, quiet, quietIDs)
	deregister(t, cl, busy, busyIDs[0]) // gone before the node change
	wantBusy := busyIDs[1:]
	storetest.Eventually(t, "registrations in consul's catalog", func() string {
		got, msg := catalogIDs(consul, busy)
		if msg != "" {
			return msg
		}
		return diff("catalog", got, wantBusy)
	})

	c.Replace(t, "test-recreated", dataDir)
	back := func(what string, wantBusy []string) {
		t.Helper()
		storetest.Eventually(t, what, func() string {
			for svc, want := range map[string][]string{busy: wantBusy, quiet: quietIDs} {
				got, msg := agentIDs(consul, svc)
				if msg != "" {
					return msg
				}
				if d := diff("agent "+svc, got, want); d != "" {
					return d
				}
				if d := diff("registry "+svc, shown(t, cl, svc), want); d != "" {
					return d
				}
			}
			if store.Snapshot().Stale() {
				return "registry stale"
			}
			return ""
		})
	}
	back("instances restored on the new node", wantBusy)

	// The busy service keeps changing on the new node: the registry's view
	// of it is refreshed from the catalog several times.
	registerAll(t, cl, busy, []string{"b-new-1", "b-new-2"})
	deregister(t, cl, busy, busyIDs[1]) // gone after the node change
	wantBusy = sorted(without(wantBusy, busyIDs[1]), []string{"b-new-1", "b-new-2"})
	storetest.Eventually(t, "changes in consul's catalog", func() string {
		got, msg := catalogIDs(consul, busy)
		if msg != "" {
			return msg
		}
		return diff("catalog", got, wantBusy)
	})
	// A change only the catalog can tell the registry: when it shows, the
	// registry has followed the catalog past every change above.
	ctx, cancel := context.WithTimeout(context.Background(), storetest.Wait)
	defer cancel()
	if err := consul.Agent().UpdateTTLOpts("service:busy:"+busyIDs[2], "barrier", api.HealthWarning, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	storetest.Eventually(t, "the registry following the catalog", func() string {
		resp, err := cl.GetService(ctx, &registryv1.GetServiceRequest{Service: busy, IncludeUnhealthy: true})
		if err != nil {
			return err.Error()
		}
		for _, in := range resp.Instances {
			if in.Id == busyIDs[2] && in.Health == registryv1.HealthStatus_HEALTH_STATUS_WARNING {
				return ""
			}
		}
		return "no warning on " + busyIDs[2]
	})

	// Killed and restarted, as the fault did: the dev agent forgets every
	// registration, the node name stays.
	c.Stop(t)
	storetest.Eventually(t, "registry stale", func() string {
		if !store.Snapshot().Stale() {
			return "fresh"
		}
		return ""
	})
	c.Start(t)
	back("every accepted instance back after the restart", wantBusy)
	resp, err := cl.GetService(ctx, &registryv1.GetServiceRequest{Service: busy, IncludeUnhealthy: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range resp.Instances {
		if in.Id == busyIDs[2] && in.Health != registryv1.HealthStatus_HEALTH_STATUS_WARNING {
			t.Errorf("%s restored as %v, want its last health (WARNING)", in.Id, in.Health)
		}
	}
	// A registry started now sees them: they are in Consul's catalog.
	fresh := storetest.Serve(t, open(t, c.Addr, "test/"+t.Name()))
	storetest.Eventually(t, "restored instances seen by a new registry", func() string {
		if d := diff("new registry "+busy, shown(t, fresh, busy), wantBusy); d != "" {
			return d
		}
		return diff("new registry "+quiet, shown(t, fresh, quiet), quietIDs)
	})
}

// gate is a reverse proxy in front of Consul that can hold or refuse the
// agent registrations of chosen service IDs: a slow restore, or one Consul
// turns down.
type gate struct {
	Addr string

	mu      sync.Mutex
	hold    func(serviceID string) bool
	refuse  func(serviceID string) bool
	release chan struct{}
	held    atomic.Int64 // registrations held so far
}

func newGate(t testing.TB, consulAddr string) *gate {
	t.Helper()
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: consulAddr})
	rp.ErrorLog = log.New(io.Discard, "", 0) // Consul down: 502, as a load balancer would say
	g := &gate{release: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.URL.Path == "/v1/agent/service/register" {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			var reg struct{ ID string }
			_ = json.Unmarshal(body, &reg)
			g.mu.Lock()
			hold, refuse, release := g.hold, g.refuse, g.release
			g.mu.Unlock()
			if refuse != nil && refuse(reg.ID) {
				http.Error(w, "refused by the test", http.StatusBadRequest)
				return
			}
			if hold != nil && hold(reg.ID) {
				g.held.Add(1)
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
			}
		}
		rp.ServeHTTP(w, r)
	}))
	g.Addr = srv.Listener.Addr().String()
	t.Cleanup(func() { g.Release(); srv.Close() })
	return g
}

// Hold holds the registrations hold picks until Release.
func (g *gate) Hold(hold func(serviceID string) bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hold = hold
}

// Refuse answers 400 to the registrations refuse picks (nil: none).
func (g *gate) Refuse(refuse func(serviceID string) bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refuse = refuse
}

// Release lets held registrations through and stops holding.
func (g *gate) Release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hold != nil {
		close(g.release)
		g.release = make(chan struct{})
		g.hold = nil
	}
}

// TestReadYourWritesDuringRestore: while a restore of many instances is
// under way (held at the gate), a Register that returns OK shows at once in
// GetService and Watch, and the accepted instances stay in view.
func TestReadYourWritesDuringRestore(t *testing.T) {
	c := storetest.StartConsul(t)
	consul := direct(t, c.Addr)
	g := newGate(t, c.Addr)
	store := open(t, g.Addr, "test/"+t.Name())
	cl := storetest.Serve(t, store)

	const svc = "busy"
	old := ids("old-", 200)
	registerAll(t, cl, svc, old)
	storetest.Eventually(t, "registrations on the agent", func() string {
		got, msg := agentIDs(consul, svc)
		if msg != "" {
			return msg
		}
		return diff("agent", got, old)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*storetest.Wait)
	defer cancel()
	w, err := cl.Watch(ctx, &registryv1.WatchRequest{Service: svc, IncludeUnhealthy: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}

	g.Hold(func(id string) bool { return strings.HasPrefix(id, svc+":old-") })
	c.Stop(t)
	storetest.Eventually(t, "registry stale", func() string {
		if !store.Snapshot().Stale() {
			return "fresh"
		}
		return ""
	})
	c.Start(t)
	storetest.Eventually(t, "a restore under way", func() string {
		if g.held.Load() == 0 {
			return "no re-registration yet"
		}
		return ""
	})

	if _, err := cl.Register(ctx, &registryv1.RegisterRequest{Instance: instance(svc, "fresh")}); err != nil {
		t.Fatalf("Register during the restore: %v", err)
	}
	returned := time.Now()
	want := sorted(old, []string{"fresh"})
	if d := diff("GetService right after Register returned", shown(t, cl, svc), want); d != "" {
		t.Fatal(d)
	}
	for {
		m, err := w.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		var got []string
		for _, in := range m.Instances {
			got = append(got, in.Id)
		}
		if slices.Contains(got, "fresh") {
			if d := diff("watch", got, want); d != "" {
				t.Fatal(d)
			}
			t.Logf("the watch showed the write %v after Register returned", time.Since(returned))
			break
		}
		if time.Since(returned) > time.Second {
			t.Fatalf("the watch did not show the write within 1s of Register returning (last: %d instances, stale %v)", len(got), m.Stale)
		}
	}
	if !store.Snapshot().Stale() {
		t.Fatal("the restore finished while the gate held it: the test did not write during a restore")
	}

	g.Release()
	storetest.Eventually(t, "restore finished", func() string {
		got, msg := agentIDs(consul, svc)
		if msg != "" {
			return msg
		}
		if d := diff("agent", got, want); d != "" {
			return d
		}
		if store.Snapshot().Stale() {
			return "registry stale"
		}
		return diff("registry", shown(t, cl, svc), want)
	})
}

// observer records what a store reports.
type observer struct {
	mu       sync.Mutex
	ups      []bool
	restores []catalog.Restore
}

func (o *observer) BackendUp(up bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ups = append(o.ups, up)
}

func (o *observer) Restored(r catalog.Restore) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.restores = append(o.restores, r)
}

func (o *observer) get() ([]bool, []catalog.Restore) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.ups), slices.Clone(o.restores)
}

// syncBuffer is a log sink tests read while the store writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestRestoreReports: the store logs Consul's loss, the restore's start and
// end with counts and each instance Consul refused, and tells its observer;
// a refused instance stays accepted and the next restore puts it back.
func TestRestoreReports(t *testing.T) {
	c := storetest.StartConsul(t)
	consul := direct(t, c.Addr)
	g := newGate(t, c.Addr)
	logs := &syncBuffer{}
	obs := &observer{}
	store := open(t, g.Addr, "test/"+t.Name(), func(o *consulstore.Options) {
		o.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(logs, &testWriter{t: t}), nil))
		o.Observer = obs
	})
	cl := storetest.Serve(t, store)

	const svc = "reported"
	all := sorted(ids("r-", 20), []string{"refused"})
	registerAll(t, cl, svc, all)
	ctx, cancel := context.WithTimeout(context.Background(), storetest.Wait)
	defer cancel()
	if _, err := cl.PutRecord(ctx, &registryv1.PutRecordRequest{Record: &registryv1.Record{Name: "reported.test.", Type: "A", Data: "192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	outage := func(n int) catalog.Restore {
		t.Helper()
		c.Stop(t)
		storetest.Eventually(t, "registry stale", func() string {
			if !store.Snapshot().Stale() {
				return "fresh"
			}
			return ""
		})
		c.Start(t)
		var r catalog.Restore
		storetest.Eventually(t, "a finished restore", func() string {
			_, rs := obs.get()
			if len(rs) < n {
				return fmt.Sprintf("%d restores", len(rs))
			}
			r = rs[n-1]
			return ""
		})
		return r
	}

	g.Refuse(func(id string) bool { return id == svc+":refused" })
	r := outage(1)
	if r.Instances != 20 || r.Records != 1 || r.Failed != 1 || r.Took <= 0 {
		t.Errorf("first restore %+v, want 20 instances, 1 record, 1 failed", r)
	}
	if ups, _ := obs.get(); !slices.Equal(ups, []bool{true, false, true}) {
		t.Errorf("backend up reports %v, want [true false true]", ups)
	}
	text := logs.String()
	for _, want := range []string{
		`level=WARN msg="consul lost: reads answer from the last catalog (stale), writes fail until it is back"`,
		`level=INFO msg="consul answers again: restoring what it lost"`,
		`accepted_instances=21 missing_instances=21 accepted_records=1 missing_records=1`,
		`level=WARN msg="instance not restored: consul refused it; the next restore tries again" service=reported id=refused`,
		`level=WARN msg="restore finished"`,
		`restored_instances=20 restored_records=1 failed=1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("log lacks %s", want)
		}
	}

	// Still accepted: once Consul takes it, the next restore puts it back.
	g.Refuse(nil)
	if r := outage(2); r.Instances != 21 || r.Failed != 0 {
		t.Errorf("second restore %+v, want 21 instances, 0 failed", r)
	}
	storetest.Eventually(t, "every instance on the agent", func() string {
		got, msg := agentIDs(consul, svc)
		if msg != "" {
			return msg
		}
		return diff("agent", got, all)
	})
	if !strings.Contains(logs.String(), `level=INFO msg="restore finished"`) {
		t.Errorf("log lacks an INFO restore finished")
	}
}

// BenchmarkRestore measures the window after Consul comes back empty with
// n accepted instances: until the restore has put every instance back
// (snapshot fresh, every instance on the agent), and how long a Register
// made at once stays invisible in the snapshot. Run it with
//
//	go test -run '^$' -bench Restore -benchtime 3x ./consulstore/
func BenchmarkRestore(b *testing.B) {
	const benchWait = 2 * time.Minute // bounds each wait: a slow restore is measured, not failed
	for _, n := range []int{500, 2000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			c := storetest.StartConsul(b)
			consul := direct(b, c.Addr)
			store := open(b, c.Addr, "bench/")
			cl := storetest.Serve(b, store)
			registerAll(b, cl, "bench", ids("i-", n))
			var restore, invisible time.Duration
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				c.Stop(b)
				storetest.Eventually(b, "registry stale", func() string {
					if !store.Snapshot().Stale() {
						return "fresh"
					}
					return ""
				})
				c.Start(b)
				b.StartTimer()
				back := time.Now()
				probe := instance("probe", fmt.Sprint("p-", i))
				var ok time.Time
				storetest.Eventually(b, "a Register taken", func() string {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					if _, err := cl.Register(ctx, &registryv1.RegisterRequest{Instance: probe}); err != nil {
						return err.Error()
					}
					ok = time.Now()
					return ""
				})
				for snap := store.Snapshot(); snap.Instance(probe.Service, probe.Id) == nil; snap = store.Snapshot() {
					select {
					case <-snap.Changed():
					case <-time.After(benchWait):
						b.Fatalf("the probe did not show within %v", benchWait)
					}
				}
				inv := time.Since(ok)
				invisible += inv
				for snap := store.Snapshot(); snap.Stale(); snap = store.Snapshot() {
					select {
					case <-snap.Changed():
					case <-time.After(benchWait):
						b.Fatalf("still stale after %v", benchWait)
					}
				}
				fresh := time.Since(back)
				for deadline := time.Now().Add(benchWait); ; time.Sleep(20 * time.Millisecond) {
					got, msg := agentIDs(consul, "bench")
					if msg == "" && len(got) == n {
						break
					}
					if time.Now().After(deadline) {
						b.Fatalf("not every instance on the agent after %v: %d of %d %s", benchWait, len(got), n, msg)
					}
				}
				took := time.Since(back)
				b.Logf("n=%d: fresh after %v, all %d on the agent after %v, a write invisible for %v", n, fresh.Round(time.Millisecond), n, took.Round(time.Millisecond), inv.Round(time.Millisecond))
				restore += took
			}
			b.ReportMetric(restore.Seconds()/float64(b.N), "restore-s")
			b.ReportMetric(invisible.Seconds()/float64(b.N), "write-invisible-s")
		})
	}
}

// TestAcceptedWritesNeverHidden: once Register returns, every read holds
// the instance, however far Consul's catalog lags the agent that took it
// — here the pending window is 1 ms, so the catalog always lags it, as it
// does for seconds on a busy or just-restarted Consul — and across a kill
// and restart of Consul (an agent with a data directory, which reloads its
// registrations but whose catalog starts empty and fills as it syncs).
func TestAcceptedWritesNeverHidden(t *testing.T) {
	c := storetest.StartConsul(t)
	dir := t.TempDir()
	c.Replace(t, "test", dir)
	store := open(t, c.Addr, "test/"+t.Name(), func(o *consulstore.Options) { o.PendingTTL = time.Millisecond })
	cl := storetest.Serve(t, store)
	const svc = "steady"

	var (
		mu       sync.Mutex
		accepted []string
		hidden   = map[string]int{} // id -> reads that lacked it
		reads    int
	)
	// check reads svc and counts every accepted instance it lacks; want is
	// what had been accepted before the read began.
	check := func() {
		mu.Lock()
		want := slices.Clone(accepted)
		mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), storetest.Wait)
		defer cancel()
		resp, err := cl.GetService(ctx, &registryv1.GetServiceRequest{Service: svc, IncludeUnhealthy: true})
		if status.Code(err) == codes.NotFound && len(want) == 0 {
			return
		}
		if err != nil {
			t.Errorf("GetService: %v", err)
			return
		}
		got := map[string]bool{}
		for _, in := range resp.Instances {
			got[in.Id] = true
		}
		mu.Lock()
		defer mu.Unlock()
		reads++
		for _, id := range want {
			if !got[id] {
				hidden[id]++
			}
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the reader
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
				check()
			}
		}
	}()
	register := func(from, n int) {
		for i := from; i < from+n; i++ {
			id := fmt.Sprintf("i-%04d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := cl.Register(ctx, &registryv1.RegisterRequest{Instance: instance(svc, id)})
			cancel()
			if err != nil {
				continue // not accepted: nothing to hold the store to
			}
			mu.Lock()
			accepted = append(accepted, id)
			mu.Unlock()
			check()
		}
	}
	register(0, 40)
	c.Stop(t)
	storetest.Eventually(t, "registry stale", func() string {
		if !store.Snapshot().Stale() {
			return "fresh"
		}
		return ""
	})
	c.Start(t)
	register(40, 40)
	storetest.Eventually(t, "registry fresh again", func() string {
		if store.Snapshot().Stale() {
			return "stale"
		}
		return ""
	})
	register(80, 20)
	close(stop)
	wg.Wait()
	check()
	mu.Lock()
	defer mu.Unlock()
	if len(hidden) > 0 {
		t.Fatalf("%d of %d accepted instances were missing from reads after they were accepted (%d reads): %v", len(hidden), len(accepted), reads, hidden)
	}
	if len(accepted) < 60 {
		t.Fatalf("only %d of 100 registrations accepted", len(accepted))
	}
}
