package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/dashboard"
	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	edgev1 "github.com/switchboard-net/switchboard/proto/switchboard/edge/v1"
	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/balancer"
	"github.com/switchboard-net/switchboard/services/edge"
	"github.com/switchboard-net/switchboard/services/prober"
	"github.com/switchboard-net/switchboard/services/registry"
)

// TestDashboardOverRealServices feeds the dashboard from a real registry,
// prober and edge: it shows both apps passing with the traffic the edge
// sent them and a check job's RTT, and an app that dies turns critical on
// the page's API.
func TestDashboardOverRealServices(t *testing.T) {
	reg := servicetest.Start(t, registry.Spec(), "--store=embedded", "--data-dir="+t.TempDir())
	bal := servicetest.Start(t, balancer.Spec(), "--registry-addr="+reg.Addrs["grpc"], "--data-dir="+t.TempDir(), "--refresh-interval=50ms")
	prb := servicetest.Start(t, prober.Spec(), "--registry-addr="+reg.Addrs["grpc"], "--rise=1", "--fall=2",
		"--discovery-group=", "--bandwidth-addr=")
	ed := servicetest.Start(t, edge.Spec(), "--http-addr=127.0.0.1:0", "--wire-addr=127.0.0.1:0",
		"--balancer-addr="+bal.Addrs["grpc"], "--allow-loopback", "--runtime-socket="+filepath.Join(t.TempDir(), "rt.sock"))
	rc := registryv1.NewRegistryClient(reg.Conn(t))
	pc := proberv1.NewProberClient(prb.Conn(t))
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}

	apps := map[string]*httptest.Server{}
	for _, id := range []string{"dash-1", "dash-2"} {
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s", id)
		}))
		t.Cleanup(app.Close)
		apps[id] = app
		host, port, _ := net.SplitHostPort(app.Listener.Addr().String())
		p, _ := strconv.Atoi(port)
		_, err := rc.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
			Service: "dash", Id: id, Address: host, Port: uint32(p), Tags: []string{"edge.route=/"},
			Check: &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_HTTP, HttpPath: "/",
				Interval: durationpb.New(time.Second), Timeout: durationpb.New(500 * time.Millisecond)},
		}})
		if err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
	}
	_, err := pc.Schedule(ctx, &proberv1.ScheduleRequest{Job: &proberv1.Job{
		Id: "check-dash-1", Interval: durationpb.New(time.Second),
		Spec: &proberv1.JobSpec{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{Kind: "http", Target: apps["dash-1"].URL + "/"}}},
	}})
	if err != nil {
		t.Fatalf("schedule: %v", err)
	}

	// The page's API, as the edge's admin port would serve it.
	mux := http.NewServeMux()
	dashboard.Register(mux, dashboard.NewGRPCSource(rc, pc, dashboard.EdgeBackends(edgev1.NewEdgeClient(ed.Conn(t)))))
	page := httptest.NewServer(mux)
	defer page.Close()
	state := func() (*dashboard.State, error) {
		resp, err := client.Get(page.URL + dashboard.StatePath)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: %s", resp.Status, b)
		}
		var st dashboard.State
		return &st, json.Unmarshal(b, &st)
	}
	byID := func(st *dashboard.State) map[string]dashboard.Instance {
		m := map[string]dashboard.Instance{}
		for _, s := range st.Services {
			if s.Name == "dash" {
				for _, in := range s.Instances {
					m[in.ID] = in
				}
			}
		}
		return m
	}

	// Both apps pass, then 40 requests through the edge show up as shares.
	dashWaitFor(t, ctx, "both apps passing on the dashboard", func() error {
		st, err := state()
		if err != nil {
			return err
		}
		m := byID(st)
		if m["dash-1"].Health != dashboard.HealthPassing || m["dash-2"].Health != dashboard.HealthPassing {
			return fmt.Errorf("instances %+v", m)
		}
		return nil
	})
	const n = 40
	seen := map[string]int{}
	dashWaitFor(t, ctx, "the edge routing to both apps", func() error {
		resp, err := client.Get("http://" + ed.Addrs["http"] + "/")
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen[string(b)]++
		if len(seen) < 2 || seen["hello from dash-1"]+seen["hello from dash-2"] < n {
			return fmt.Errorf("answers so far %v", seen)
		}
		return nil
	})
	dashWaitFor(t, ctx, "traffic shares and the check's RTT on the dashboard", func() error {
		st, err := state()
		if err != nil {
			return err
		}
		m := byID(st)
		total := m["dash-1"].Requests + m["dash-2"].Requests
		if total < n || m["dash-1"].Requests == 0 || m["dash-2"].Requests == 0 {
			return fmt.Errorf("requests %+v", m)
		}
		if s := m["dash-1"].Share + m["dash-2"].Share; s < 0.999 || s > 1.001 {
			return fmt.Errorf("shares add up to %v: %+v", s, m)
		}
		for _, p := range st.Probes {
			if p.Name == "check-dash-1" && p.OK && p.RTTms > 0 && !p.At.IsZero() {
				return nil
			}
		}
		return fmt.Errorf("probes %+v", st.Probes)
	})

	// An app that dies turns critical.
	apps["dash-2"].CloseClientConnections()
	apps["dash-2"].Close()
	dashWaitFor(t, ctx, "dash-2 critical on the dashboard", func() error {
		st, err := state()
		if err != nil {
			return err
		}
		if h := byID(st)["dash-2"].Health; h != dashboard.HealthCritical {
			return fmt.Errorf("dash-2 is %q", h)
		}
		return nil
	})
}

// dashWaitFor polls fn until it succeeds or ctx ends.
func dashWaitFor(t *testing.T, ctx context.Context, what string, fn func() error) {
	t.Helper()
	for {
		err := fn()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
