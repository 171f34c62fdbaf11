package prober_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/access"
	"github.com/switchboard-net/switchboard/pkg/config"
	"github.com/switchboard-net/switchboard/pkg/service"
	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/prober"
)

// waitFor polls cond every few milliseconds until it holds, failing the
// test after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
	}
}

// metricValue reads one series from a prober's /metrics (0 when absent).
func metricValue(t *testing.T, admin, series string) float64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(get(t, "http://"+admin+"/metrics")))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}

// TestDoorsNeedTheirPermission runs a prober with an ACL file: running
// and (un)scheduling jobs need operator, listing jobs and reading results
// need read on every service (the operator rule alone does not grant it),
// and a caller without a token is told to authenticate.
func TestDoorsNeedTheirPermission(t *testing.T) {
	acl := filepath.Join(t.TempDir(), "acl.yaml")
	if err := os.WriteFile(acl, []byte(fmt.Sprintf(`
default: deny
tokens:
  - name: ops
    sha256: %s
    rules: [{operator: true}, {service: "*", access: read}]
  - name: runner
    sha256: %s
    rules: [{operator: true}]
  - name: viewer
    sha256: %s
    rules: [{service: "*", access: read}]
  - name: web-writer
    sha256: %s
    rules: [{service: "web", access: write}]
`, access.HashToken("ops-token"), access.HashToken("runner-token"), access.HashToken("viewer-token"), access.HashToken("web-token"))), 0o600); err != nil {
		t.Fatal(err)
	}
	_, c := start(t, "--acl-file="+acl)
	as := func(token string) context.Context {
		if token == "" {
			return context.Background()
		}
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
	}
	interfaces := &proberv1.JobSpec{Kind: &proberv1.JobSpec_Interfaces{Interfaces: &proberv1.InterfacesSpec{}}}
	calls := map[string]func(ctx context.Context) error{
		"Run": func(ctx context.Context) error {
			stream, err := c.Run(ctx, &proberv1.RunRequest{Spec: interfaces})
			if err != nil {
				return err
			}
			for {
				if _, err := stream.Recv(); err != nil {
					if err == io.EOF {
						return nil
					}
					return err
				}
			}
		},
		"Schedule": func(ctx context.Context) error {
			_, err := c.Schedule(ctx, &proberv1.ScheduleRequest{Job: &proberv1.Job{Id: "ifaces", Interval: durationpb.New(time.Hour), Spec: interfaces}})
			return err
		},
		"ListJobs": func(ctx context.Context) error { _, err := c.ListJobs(ctx, &proberv1.ListJobsRequest{}); return err },
		"Results": func(ctx context.Context) error {
			_, err := c.Results(ctx, &proberv1.ResultsRequest{Id: "ifaces"})
			return err
		},
		"Unschedule": func(ctx context.Context) error {
			_, err := c.Unschedule(ctx, &proberv1.UnscheduleRequest{Id: "ifaces"})
			return err
		},
	}
	// In order: the job exists for Results and Unschedule when ops calls.
	tests := []struct {
		method, token string
		want          codes.Code
	}{
		{"Run", "", codes.Unauthenticated},
		{"Run", "viewer-token", codes.PermissionDenied},
		{"Run", "web-token", codes.PermissionDenied},
		{"Run", "no-such-token", codes.Unauthenticated},
		{"Run", "ops-token", codes.OK},
		{"Run", "runner-token", codes.OK},
		{"Schedule", "viewer-token", codes.PermissionDenied},
		{"Schedule", "ops-token", codes.OK},
		{"ListJobs", "", codes.Unauthenticated},
		{"ListJobs", "web-token", codes.PermissionDenied},
		{"ListJobs", "viewer-token", codes.OK},
		{"ListJobs", "ops-token", codes.OK},
		{"ListJobs", "runner-token", codes.PermissionDenied},
		{"Results", "web-token", codes.PermissionDenied},
		{"Results", "viewer-token", codes.OK},
		{"Unschedule", "viewer-token", codes.PermissionDenied},
		{"Unschedule", "ops-token", codes.OK},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(as(tt.token), 20*time.Second)
		err := calls[tt.method](ctx)
		cancel()
		if status.Code(err) != tt.want {
			t.Errorf("%s with %q: %v, want %v", tt.method, tt.token, err, tt.want)
		}
	}
}

// TestBadTrustFlagsRefusedAtStart: an allowlist entry that is neither a
// network, an address, a keyword nor a resolvable name, and discovery
// without a (long enough) key, stop the prober at start with an error
// naming the problem.
func TestBadTrustFlagsRefusedAtStart(t *testing.T) {
	short := filepath.Join(t.TempDir(), "short.key")
	if err := os.WriteFile(short, []byte("tooshort\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--allow=loopbak"}, `"loopbak"`},
		{[]string{"--allow=loopback,registerd"}, `"registerd"`},
		{[]string{"--allow=10.0.0.0/33"}, "10.0.0.0/33"},
		{[]string{"--discovery"}, "--discovery needs a shared key"},
		{[]string{"--discovery", "--discovery-key=short"}, "at least 16"},
		{[]string{"--discovery", "--discovery-key-file=" + short}, "at least 16"},
		{[]string{"--discovery", "--discovery-key-file=" + filepath.Join(t.TempDir(), "missing")}, "--discovery-key-file"},
		{[]string{"--discovery-key=0123456789abcdef0123"}, "pass --discovery"},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		args := append([]string{"--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--registry-addr=", "--bandwidth-addr="}, tt.args...)
		err := service.Run(ctx, prober.Spec(), args, service.WithEnv(config.NoEnv), service.WithLogOutput(io.Discard),
			service.WithReady(func(map[string]string) { cancel() }))
		cancel()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: start = %v, want an error containing %s", tt.args, err, tt.want)
		}
	}
}

// countingListener accepts and closes connections on 127.0.0.1, counting
// them.
func countingListener(t *testing.T) (port int, accepts *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepts = new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, accepts
}

// TestHealthLoopGoesThroughTheAllowlist registers an instance whose check
// points at a listener on this host and runs the health loop under several
// allowlists. A refused instance is never dialled (the listener counts no
// connection while the loop skips several checks), keeps the status the
// registry gave it, and gets one check output saying why; `registered`
// does not vouch for loopback or unspecified addresses, nor for a name
// resolving to loopback. The same instance under an allowlist that names
// loopback is checked.
func TestHealthLoopGoesThroughTheAllowlist(t *testing.T) {
	const (
		tcp  = registryv1.CheckKind_CHECK_KIND_TCP
		http = registryv1.CheckKind_CHECK_KIND_HTTP
	)
	tests := []struct {
		name, allow, address string
		kind                 registryv1.CheckKind
		permitted            bool
	}{
		{"loopback address, registered only", "registered", "127.0.0.1", tcp, false},
		{"loopback http, registered only", "registered,peers", "127.0.0.1", http, false},
		{"name resolving to loopback", "registered", "localhost", tcp, false},
		{"unspecified address", "registered", "0.0.0.0", http, false},
		{"mapped loopback", "registered", "::ffff:127.0.0.1", tcp, false},
		{"no registered keyword", "192.0.2.0/24", "127.0.0.1", tcp, false},
		{"loopback named", "loopback,registered", "127.0.0.1", tcp, true},
		{"address named, no registered keyword", "127.0.0.1", "127.0.0.1", http, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port, accepts := countingListener(t)
			reg, addr := startFakeRegistry(t)
			every := durationpb.New(100 * time.Millisecond)
			reg.put(&registryv1.Instance{Service: "web", Id: "w1", Address: tt.address, Port: uint32(port),
				Health: registryv1.HealthStatus_HEALTH_STATUS_PASSING, Check: &registryv1.HealthCheck{Kind: tt.kind, Interval: every, Timeout: every}})
			inst, _ := start(t, "--registry-addr="+addr, "--allow="+tt.allow)
			refused := func() float64 {
				return metricValue(t, inst.Addrs["admin"], `switchboard_prober_health_checks_refused_total{service="web"}`)
			}
			if tt.permitted {
				waitFor(t, 15*time.Second, "the permitted instance to be dialled", func() bool { return accepts.Load() > 0 })
				if n := refused(); n != 0 {
					t.Fatalf("%v checks refused", n)
				}
				for _, c := range reg.setCalls() {
					if strings.Contains(c.GetOutput(), "not permitted") {
						t.Fatalf("SetHealth %v", c)
					}
				}
				return
			}
			waitFor(t, 15*time.Second, "three refused checks", func() bool { return refused() >= 3 || accepts.Load() > 0 })
			if n := accepts.Load(); n != 0 {
				t.Fatalf("the refused instance was dialled %d times", n)
			}
			calls := reg.setCalls()
			if len(calls) != 1 || calls[0].GetStatus() != registryv1.HealthStatus_HEALTH_STATUS_PASSING ||
				!strings.Contains(calls[0].GetOutput(), "not permitted by the prober's allowlist") {
				t.Fatalf("SetHealth calls %v, want one keeping PASSING and saying the target is not permitted", calls)
			}
			if h := reg.health("web", "w1"); h != registryv1.HealthStatus_HEALTH_STATUS_PASSING {
				t.Fatalf("instance is %v", h)
			}
		})
	}
}
