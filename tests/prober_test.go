package tests

import (
	"context"
	"net"
	"net/http"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/balancer"
	"github.com/switchboard-net/switchboard/services/prober"
	"github.com/switchboard-net/switchboard/services/registry"
	"github.com/switchboard-net/switchboard/services/resolver"
)

// proberBackend is an HTTP server whose /healthz the test can fail.
type proberBackend struct {
	addr *net.TCPAddr
	fail atomic.Bool
}

func startProberBackend(t *testing.T, ip string) *proberBackend {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Skipf("cannot listen on %s: %v", ip, err)
	}
	b := &proberBackend{addr: ln.Addr().(*net.TCPAddr)}
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.fail.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return b
}

// TestProberHealthLoopDrivesRegistryAndDNS runs the real registry,
// resolver, balancer and prober. Two instances of "web" have HTTP checks;
// when one starts failing its check the prober marks it CRITICAL in the
// registry (after --fall failures), the resolver stops answering with its
// address and the balancer stops picking it; when it recovers (after
// --rise passes) it is back in all three.
func TestProberHealthLoopDrivesRegistryAndDNS(t *testing.T) {
	dig := servicetest.Tool(t, "dig")
	reg := servicetest.Start(t, registry.Spec(), "--store=embedded", "--data-dir="+t.TempDir())
	res := servicetest.Start(t, resolver.Spec(), "--registry-addr="+reg.Addrs["grpc"], "--dns-addr=127.0.0.1:0", "--service-ttl=1s")
	bal := servicetest.Start(t, balancer.Spec(), "--registry-addr="+reg.Addrs["grpc"], "--data-dir="+t.TempDir())
	bc := balancerv1.NewBalancerClient(bal.Conn(t))
	prb := servicetest.Start(t, prober.Spec(), "--registry-addr="+reg.Addrs["grpc"], "--rise=2", "--fall=2",
		"--discovery-group=", "--bandwidth-addr=127.0.0.1:0")
	rc := registryv1.NewRegistryClient(reg.Conn(t))
	ctx := context.Background()

	b1, b2 := startProberBackend(t, "127.0.0.1"), startProberBackend(t, "127.0.0.2")
	for i, b := range []*proberBackend{b1, b2} {
		_, err := rc.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
			Service: "web", Id: []string{"w1", "w2"}[i], Address: b.addr.IP.String(), Port: uint32(b.addr.Port),
			Check: &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_HTTP, HttpPath: "/healthz",
				Interval: durationpb.New(time.Second), Timeout: durationpb.New(500 * time.Millisecond)}}})
		if err != nil {
			t.Fatal(err)
		}
	}

	health := func(id string) registryv1.HealthStatus {
		r, err := rc.GetService(ctx, &registryv1.GetServiceRequest{Service: "web", IncludeUnhealthy: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range r.GetInstances() {
			if in.GetId() == id {
				return in.GetHealth()
			}
		}
		return registryv1.HealthStatus_HEALTH_STATUS_UNSPECIFIED
	}
	answers := func() string {
		host, port, _ := net.SplitHostPort(res.Addrs["dns"])
		out, err := exec.Command(dig, "@"+host, "-p", port, "+short", "+time=2", "+tries=1", "web.service.switchboard.", "A").CombinedOutput()
		if err != nil {
			t.Fatalf("dig: %v\n%s", err, out)
		}
		f := strings.Fields(string(out))
		sort.Strings(f)
		return strings.Join(f, " ")
	}
	// picks returns the set of instance ids 20 Picks return.
	picks := func() string {
		seen := map[string]bool{}
		for i := 0; i < 20; i++ {
			r, err := bc.Pick(ctx, &balancerv1.PickRequest{Service: "web"})
			if err != nil {
				return "error: " + err.Error()
			}
			seen[r.GetEndpoint().GetId()] = true
		}
		ids := make([]string, 0, len(seen))
		for id := range seen {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		return strings.Join(ids, " ")
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (w2 is %v, DNS says %q)", what, health("w2"), answers())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	waitFor("both instances in DNS", func() bool { return answers() == "127.0.0.1 127.0.0.2" })
	waitFor("both instances picked", func() bool { return picks() == "w1 w2" })

	b2.fail.Store(true)
	failedAt := time.Now()
	waitFor("w2 critical", func() bool { return health("w2") == registryv1.HealthStatus_HEALTH_STATUS_CRITICAL })
	// --fall=2 with a 1 s interval: not before the second failing check.
	if took := time.Since(failedAt); took < 900*time.Millisecond {
		t.Errorf("w2 marked critical after %v: one failure flapped it", took)
	}
	waitFor("w2 out of DNS", func() bool { return answers() == "127.0.0.1" })
	waitFor("w2 no longer picked", func() bool { return picks() == "w1" })
	for i := 0; i < 3; i++ {
		if p := picks(); p != "w1" {
			t.Fatalf("balancer picked %q with w2 critical", p)
		}
	}
	if h := health("w1"); h != registryv1.HealthStatus_HEALTH_STATUS_PASSING {
		t.Fatalf("w1 is %v", h)
	}
	r, err := rc.GetService(ctx, &registryv1.GetServiceRequest{Service: "web"})
	if err != nil || len(r.GetInstances()) != 1 || r.GetInstances()[0].GetId() != "w1" {
		t.Fatalf("healthy instances: %v %v", r, err)
	}

	b2.fail.Store(false)
	waitFor("w2 passing", func() bool { return health("w2") == registryv1.HealthStatus_HEALTH_STATUS_PASSING })
	waitFor("w2 back in DNS", func() bool { return answers() == "127.0.0.1 127.0.0.2" })
	waitFor("w2 picked again", func() bool { return picks() == "w1 w2" })

	// The prober's allowlist now includes registered instances: a scan of
	// w2's address is allowed, and finds its port.
	pc := proberv1.NewProberClient(prb.Conn(t))
	stream, err := pc.Run(ctx, &proberv1.RunRequest{Spec: &proberv1.JobSpec{Kind: &proberv1.JobSpec_Scan{Scan: &proberv1.ScanSpec{
		Target: "127.0.0.2", Ports: strconv.Itoa(b2.addr.Port)}}}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("scan of a registered instance: %v", err)
		}
		if r := m.GetResult(); r != nil {
			if r.GetScan().GetOpen() != 1 {
				t.Fatalf("scan: %v", r)
			}
			break
		}
	}
}
