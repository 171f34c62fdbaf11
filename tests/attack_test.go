package tests

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/netnstest"
	"github.com/switchboard-net/switchboard/pkg/wire"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	resolverv1 "github.com/switchboard-net/switchboard/proto/switchboard/resolver/v1"
)

// TestAttack is the security issue's attacker suite. The five real
// binaries listen on the host end of a veth pair with mutual TLS and an ACL
// file (default deny), calling each other with their own tokens and
// certificates; the attacker sits in the namespace at the other end and
// uses gRPC clients, the real grpcurl, a wire client, DNS and raw UDP. Each
// attack must be refused with the documented status, and the operator
// reads the state back to see that nothing changed.
func TestAttack(t *testing.T) {
	l := newAttackLab(t)
	l.registerShop(t)
	t.Run("HijackInstance", l.hijackInstance)
	t.Run("ForgeRecord", l.forgeRecord)
	t.Run("ForgeLoadReports", l.forgeLoadReports)
	t.Run("TunnelToLoopback", l.tunnelToLoopback)
	t.Run("RouteToLoopback", l.routeToLoopback)
	t.Run("RegistryAsConfusedDeputy", l.registryAsConfusedDeputy)
	t.Run("ReadPageThroughExpectBody", l.readPageThroughExpectBody)
	t.Run("SpoofedDiscovery", l.spoofedDiscovery)
	t.Run("MismatchedUpstreamReply", l.mismatchedUpstreamReply)
}

// routeToLoopback: a deployer (service write on shop*, no more) registers
// an instance on the edge host's loopback with an edge.route tag, to read a
// loopback-only page through the edge's public HTTP listener. The edge
// leaves registry endpoints on loopback out of every route, while a
// control route to an instance beyond loopback serves.
func (l *attackLab) routeToLoopback(t *testing.T) {
	secret := httpTarget(t, "127.0.0.1", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "loopback secret") })
	control := httpTarget(t, l.host, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "control") })
	reg := l.registry(t, l.rogueDeployer())
	for _, in := range []*registryv1.Instance{
		{Service: "shop-ssrf", Id: "ssrf-1", Address: "127.0.0.1", Port: secret.port(), Tags: []string{"edge.route=/ssrf"}},
		{Service: "shop-ctl", Id: "ctl-1", Address: l.host, Port: control.port(), Tags: []string{"edge.route=/ctl"}},
	} {
		if _, err := reg.Register(callCtx(t), &registryv1.RegisterRequest{Instance: in}); err != nil {
			t.Fatalf("the deployer's token registers %s (allowed: shop* write): %v", in.Id, err)
		}
	}
	edgeURL := "http://" + l.procs["edge"].addr(t, "http")
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return netnstest.DialContext(ctx, l.ns, network, addr)
		}}}
	get := func(path string) (int, string) {
		resp, err := client.Get(edgeURL + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	pollFor(t, 10*time.Second, "the control route through the edge (positive control)", func() (bool, string) {
		code, body := get("/ctl")
		return code == 200 && body == "control", fmt.Sprintf("%d %q", code, body)
	})
	code, body := get("/ssrf")
	if code == 200 || strings.Contains(body, "loopback secret") || secret.accepts.Load() != 0 {
		t.Fatalf("GET /ssrf from the attacker: %d %q, loopback target saw %d connections; want no route and 0", code, body, secret.accepts.Load())
	}
	t.Logf("GET /ssrf through the edge: %d (loopback target: 0 connections)", code)
}

// httpCheck is the registry check of the lab's instances: fast, so the
// prober's verdicts come within the test's time.
func httpCheck() *registryv1.HealthCheck {
	return &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_HTTP, HttpPath: "/healthz",
		Interval: durationpb.New(time.Second), Timeout: durationpb.New(time.Second)}
}

// registerShop registers shop-1 and shop-2, real local backends on the
// host's address, as the legitimate deployer does, and waits for the
// prober's second check of each: by then its first verdict, if it had to
// write one, is in the registry, so later reads see a settled instance.
func (l *attackLab) registerShop(t *testing.T) {
	t.Helper()
	var backends []*countingListener
	for _, id := range []string{"shop-1", "shop-2"} {
		ln := httpTarget(t, l.host, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, id) })
		backends = append(backends, ln)
		_, err := l.registry(t, l.deployer()).Register(callCtx(t), &registryv1.RegisterRequest{Instance: &registryv1.Instance{
			Service: "shop", Id: id, Address: l.host, Port: ln.port(), Check: httpCheck()}})
		if err != nil {
			t.Fatalf("register %s as the deployer: %v", id, err)
		}
	}
	pollFor(t, 10*time.Second, "the prober checks shop-1 and shop-2 twice", func() (bool, string) {
		a, b := backends[0].accepts.Load(), backends[1].accepts.Load()
		return a >= 2 && b >= 2, fmt.Sprintf("checks: %d, %d", a, b)
	})
}

// wantUnchanged fails unless the operator reads the instance back exactly
// as it was.
func (l *attackLab) wantUnchanged(t *testing.T, after string, before *registryv1.Instance) {
	t.Helper()
	now := l.instance(t, before.GetService(), before.GetId())
	switch {
	case now == nil:
		t.Errorf("after %s: %s/%s is gone", after, before.GetService(), before.GetId())
	case !proto.Equal(now, before):
		t.Errorf("after %s: %s/%s changed:\nbefore %v\nnow    %v", after, before.GetService(), before.GetId(), before, now)
	}
}

// 1. Hijack an instance: re-register shop-1 to the attacker's address,
// deregister it, set it critical — with every credential an attacker may
// hold short of write on shop.
func (l *attackLab) hijackInstance(t *testing.T) {
	before := l.instance(t, "shop", "shop-1")
	if before == nil || before.GetAddress() != l.host {
		t.Fatalf("shop-1 before the attack: %v", before)
	}
	attacks := []struct {
		name string
		call func(context.Context, registryv1.RegistryClient) error
	}{
		{"re-register shop-1 at the attacker's address", func(ctx context.Context, c registryv1.RegistryClient) error {
			_, err := c.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
				Service: "shop", Id: "shop-1", Address: l.attacker, Port: 8080}})
			return err
		}},
		{"deregister shop-1", func(ctx context.Context, c registryv1.RegistryClient) error {
			_, err := c.Deregister(ctx, &registryv1.DeregisterRequest{Service: "shop", Id: "shop-1"})
			return err
		}},
		{"set shop-1 critical", func(ctx context.Context, c registryv1.RegistryClient) error {
			_, err := c.SetHealth(ctx, &registryv1.SetHealthRequest{Service: "shop", Id: "shop-1",
				Status: registryv1.HealthStatus_HEALTH_STATUS_CRITICAL, Output: "hijacked"})
			return err
		}},
	}
	callers := []struct {
		id   principal
		code codes.Code
		msg  []string
	}{
		{l.noCert(), codes.Unavailable, nil},   // the TLS handshake needs a client certificate
		{l.outsider(), codes.Unavailable, nil}, // ... signed by the services' CA
		{l.insider(), codes.PermissionDenied, []string{`cert "insider" lacks service "shop" write`}},
		{l.forged(), codes.Unauthenticated, []string{"unknown token"}},
		{l.viewer(), codes.PermissionDenied, []string{`token "viewer" lacks service "shop" write`}},
	}
	for _, c := range callers {
		for _, a := range attacks {
			what := c.id.name + ": " + a.name
			wantRefused(t, what, a.call(callCtx(t), l.registry(t, c.id)), c.code, c.msg...)
			l.wantUnchanged(t, what, before)
		}
	}

	// The same with the real grpcurl, run inside the attacker's namespace.
	out := l.grpcurlIn(t, l.ns, "-cacert", l.caFile,
		"-cert", filepath.Join(l.dir, "insider.crt"), "-key", filepath.Join(l.dir, "insider.key"),
		"-H", "authorization: Bearer "+l.tokens["viewer"],
		"-d", `{"service": "shop", "id": "shop-1", "status": "HEALTH_STATUS_CRITICAL"}`,
		l.procs["registry"].addr(t, "grpc"), "switchboard.registry.v1.Registry/SetHealth")
	if !strings.Contains(out, "PermissionDenied") || !strings.Contains(out, `token "viewer" lacks service "shop" write`) {
		t.Errorf("grpcurl SetHealth as the viewer from the attacker's namespace: want PermissionDenied naming the permission, got:\n%s", out)
	}
	t.Logf("grpcurl SetHealth as the viewer:\n%s", out)
	l.wantUnchanged(t, "grpcurl SetHealth", before)
}

// 2. Forge a DNS record: as the viewer in the deployer's zone, and as the
// deployer in another zone, through the registry and the resolver.
func (l *attackLab) forgeRecord(t *testing.T) {
	const legit = "192.0.2.10"
	// The legitimate record, through the resolver, which relays it to the
	// registry with its own token.
	if _, err := l.resolver(t, l.deployer()).UpsertRecord(callCtx(t), &resolverv1.UpsertRecordRequest{
		Record: &resolverv1.Record{Name: "www.example.test.", Type: "A", Data: legit}}); err != nil {
		t.Fatalf("UpsertRecord as the deployer: %v", err)
	}
	put := func(id principal, name string) error {
		_, err := l.registry(t, id).PutRecord(callCtx(t), &registryv1.PutRecordRequest{
			Record: &registryv1.Record{Name: name, Type: "A", Ttl: 60, Data: forgedAddr}})
		return err
	}
	upsert := func(id principal, name string) error {
		_, err := l.resolver(t, id).UpsertRecord(callCtx(t), &resolverv1.UpsertRecordRequest{
			Record: &resolverv1.Record{Name: name, Type: "A", Data: forgedAddr}})
		return err
	}
	want := []string{"www.example.test. A " + legit}
	pollFor(t, 10*time.Second, "the resolver serves the legitimate record", func() (bool, string) {
		got := l.resolverRecords(t)
		return slices.Equal(got, want), fmt.Sprint(got)
	})
	attacks := []struct {
		name string
		call func() error
		msg  string
	}{
		{"viewer PutRecord www.example.test. (registry)", func() error { return put(l.viewer(), "www.example.test.") },
			`token "viewer" lacks records "www.example.test." write`},
		{"viewer UpsertRecord www.example.test. (resolver)", func() error { return upsert(l.viewer(), "www.example.test.") },
			`token "viewer" lacks records "www.example.test." write`},
		{"viewer DeleteRecord www.example.test. (registry)", func() error {
			_, err := l.registry(t, l.viewer()).DeleteRecord(callCtx(t), &registryv1.DeleteRecordRequest{Name: "www.example.test.", Type: "A"})
			return err
		}, `token "viewer" lacks records "www.example.test." write`},
		{"deployer PutRecord www.other.test. (registry)", func() error { return put(l.rogueDeployer(), "www.other.test.") },
			`token "deployer" lacks records "www.other.test." write`},
		{"deployer UpsertRecord www.other.test. (resolver)", func() error { return upsert(l.rogueDeployer(), "www.other.test.") },
			`token "deployer" lacks records "www.other.test." write`},
	}
	for _, a := range attacks {
		wantRefused(t, a.name, a.call(), codes.PermissionDenied, a.msg)
		// The operator reads the records back from the registry.
		if got := l.registryRecords(t); !slices.Equal(got, want) {
			t.Errorf("after %s: registry records %q, want %q", a.name, got, want)
		}
	}
	if got := l.resolverRecords(t); !slices.Equal(got, want) {
		t.Errorf("the resolver's managed records: %q, want %q", got, want)
	}

	// DNS is public: the attacker asks from its namespace and gets the
	// legitimate answer only.
	dnsAddr := l.procs["resolver"].addr(t, "dns")
	for name, wantAddrs := range map[string][]string{"www.example.test.": {legit}, "www.other.test.": nil} {
		r, err := dnsQuery(l.ns, dnsAddr, name, dns.TypeA, true)
		if err != nil {
			t.Fatalf("DNS %s from the attacker's namespace: %v", name, err)
		}
		if got := answerAddrs(r); !slices.Equal(got, wantAddrs) {
			t.Errorf("DNS %s: %v (%s), want %v", name, got, dns.RcodeToString[r.Rcode], wantAddrs)
		}
	}
}

// registryRecords lists the registry's records as the operator, as
// "name type data".
func (l *attackLab) registryRecords(t *testing.T) []string {
	t.Helper()
	resp, err := l.registry(t, l.ops()).ListRecords(callCtx(t), &registryv1.ListRecordsRequest{})
	if err != nil {
		t.Fatalf("registry ListRecords as ops: %v", err)
	}
	var out []string
	for _, r := range resp.GetRecords() {
		out = append(out, r.GetName()+" "+r.GetType()+" "+r.GetData())
	}
	return out
}

// resolverRecords lists the resolver's managed records as the operator.
func (l *attackLab) resolverRecords(t *testing.T) []string {
	t.Helper()
	resp, err := l.resolver(t, l.ops()).ListRecords(callCtx(t), &resolverv1.ListRecordsRequest{})
	if err != nil {
		t.Fatalf("resolver ListRecords as ops: %v", err)
	}
	var out []string
	for _, r := range resp.GetRecords() {
		if r.GetSource() == "managed" {
			out = append(out, r.GetName()+" "+r.GetType()+" "+r.GetData())
		}
	}
	return out
}

// endpoints reads a service's endpoint set from the balancer as the
// operator (the first message of WatchEndpoints).
func (l *attackLab) endpoints(t *testing.T, service string) map[string]*balancerv1.Endpoint {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	st, err := l.balancer(t, l.ops()).WatchEndpoints(ctx, &balancerv1.WatchEndpointsRequest{Service: service})
	if err != nil {
		t.Fatalf("WatchEndpoints %s: %v", service, err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatalf("WatchEndpoints %s: %v", service, err)
	}
	eps := map[string]*balancerv1.Endpoint{}
	for _, e := range resp.GetEndpoints() {
		eps[e.GetId()] = e
	}
	return eps
}

// wantInService fails unless the balancer has the shop instance id in
// its set, healthy and not ejected.
func (l *attackLab) wantInService(t *testing.T, id, after string) {
	t.Helper()
	e := l.endpoints(t, "shop")[id]
	if e == nil || !e.GetHealthy() || e.GetEjected() {
		t.Errorf("after %s: %s in the balancer: %v, want healthy and not ejected", after, id, e)
	}
}

// failureReports are n load reports of failures and timeouts of one endpoint.
func failureReports(service, id string, n int) []*balancerv1.LoadReport {
	var out []*balancerv1.LoadReport
	for i := range n {
		o := balancerv1.Outcome_OUTCOME_FAILURE
		if i%2 == 1 {
			o = balancerv1.Outcome_OUTCOME_TIMEOUT
		}
		out = append(out, &balancerv1.LoadReport{Service: service, EndpointId: id, Outcome: o, Latency: durationpb.New(time.Second)})
	}
	return out
}

// 3. Forge load reports to have shop-1 ejected.
func (l *attackLab) forgeLoadReports(t *testing.T) {
	for _, id := range []principal{l.viewer(), l.insider()} {
		refused := 0
		for _, r := range failureReports("shop", "shop-1", 20) {
			_, err := l.balancer(t, id).Report(callCtx(t), &balancerv1.ReportRequest{Reports: []*balancerv1.LoadReport{r}})
			if err == nil {
				t.Errorf("%s: a forged report of shop-1 was accepted", id.name)
				continue
			}
			refused++
			if refused == 1 {
				wantRefused(t, id.name+": Report shop-1 "+r.GetOutcome().String(), err, codes.PermissionDenied, `lacks service "shop" write`)
			}
		}
		t.Logf("%s: %d/20 forged reports refused", id.name, refused)
		l.wantInService(t, "shop-1", "the forged reports of "+id.name)
	}

	// Positive control: the same reports from the operator, about canary-1,
	// do eject it.
	for i := 1; i <= 3; i++ {
		_, err := l.registry(t, l.ops()).Register(callCtx(t), &registryv1.RegisterRequest{Instance: &registryv1.Instance{
			Service: "canary", Id: "canary-" + strconv.Itoa(i), Address: l.host, Port: listenCounting(t, l.host).port()}})
		if err != nil {
			t.Fatal(err)
		}
	}
	pollFor(t, 10*time.Second, "the balancer has canary's 3 endpoints", func() (bool, string) {
		eps := l.endpoints(t, "canary")
		return len(eps) == 3, fmt.Sprint(eps)
	})
	for _, r := range failureReports("canary", "canary-1", 20) {
		if _, err := l.balancer(t, l.ops()).Report(callCtx(t), &balancerv1.ReportRequest{Reports: []*balancerv1.LoadReport{r}}); err != nil {
			t.Fatalf("Report as ops: %v", err)
		}
	}
	pollFor(t, 5*time.Second, "canary-1 ejected by the operator's reports", func() (bool, string) {
		e := l.endpoints(t, "canary")["canary-1"]
		return e.GetEjected(), fmt.Sprint(e)
	})

	// shop-1 is still in the set, healthy and not ejected, and picked.
	l.wantInService(t, "shop-1", "the operator's reports of canary-1")
	picked := map[string]int{}
	for range 20 {
		resp, err := l.balancer(t, l.ops()).Pick(callCtx(t), &balancerv1.PickRequest{Service: "shop"})
		if err != nil {
			t.Fatalf("Pick shop: %v", err)
		}
		picked[resp.GetEndpoint().GetId()]++
	}
	if picked["shop-1"] == 0 {
		t.Errorf("20 picks of shop: %v, shop-1 never picked", picked)
	}
	t.Logf("20 picks of shop after the forged reports: %v", picked)
}

// 4. Tunnel to the edge host's loopback over the wire protocol.
func (l *attackLab) tunnelToLoopback(t *testing.T) {
	internal := listenCounting(t, "127.0.0.1") // counts connections; nothing may arrive
	if _, err := l.registry(t, l.ops()).Register(callCtx(t), &registryv1.RegisterRequest{Instance: &registryv1.Instance{
		Service: "internal", Id: "internal-1", Address: "127.0.0.1", Port: internal.port()}}); err != nil {
		t.Fatal(err)
	}

	// No token and no client certificate: no session beyond loopback.
	if _, err := l.wireSession(t, principal{name: "anonymous", ns: l.ns}); err == nil {
		t.Error("a wire session without a token or client certificate was admitted")
	} else {
		t.Logf("wire session without credentials: %v (code %v)", err, wire.CodeOf(err))
	}

	// The viewer's token: a session, and streams to services beyond
	// loopback (the positive control), but not to internal.
	s, err := l.wireSession(t, principal{name: "viewer over wire", ns: l.ns, token: l.tokens["viewer"]})
	if err != nil {
		t.Fatalf("wire session with the viewer token: %v", err)
	}
	if out, err := wireRequest(s, "shop", "GET / HTTP/1.0\r\nHost: shop\r\n\r\n"); err != nil || !strings.Contains(out, "200 OK") {
		t.Fatalf("positive control: a wire stream to shop: %v\n%s", err, out)
	}
	// The edge has the balancer's set for internal once the service is
	// known (its only endpoint is left out of it: loopback).
	pollFor(t, 10*time.Second, "the edge knows internal", func() (bool, string) {
		_, err = wireRequest(s, "internal", "GET / HTTP/1.0\r\nHost: internal\r\n\r\n")
		return wire.CodeOf(err) != wire.CodeNoSuchService, fmt.Sprint(err)
	})
	if wire.CodeOf(err) != wire.CodeUnavailable {
		t.Errorf("viewer's wire stream to internal (127.0.0.1): %v, want RESET UNAVAILABLE (the loopback endpoint is out of the set)", err)
	} else {
		t.Logf("viewer's wire stream to internal: %v", err)
	}

	// An insider certificate without a token: a session (a verified
	// certificate), but it may read no service.
	s, err = l.wireSession(t, l.insider())
	if err != nil {
		t.Fatalf("wire session with the insider certificate: %v", err)
	}
	_, err = wireRequest(s, "internal", "x")
	if wire.CodeOf(err) != wire.CodeUnauthorized {
		t.Errorf("insider's wire stream to internal: %v, want RESET UNAUTHORIZED", err)
	} else {
		t.Logf("insider's wire stream to internal: %v", err)
	}

	if n := internal.accepts.Load(); n != 0 {
		t.Errorf("the loopback service accepted %d connections", n)
	}
}

// 5. The registry as a confused deputy: a deployer registers an instance
// on the prober's loopback, hoping its health check reaches it.
func (l *attackLab) registryAsConfusedDeputy(t *testing.T) {
	secret := httpTarget(t, "127.0.0.1", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "internal admin") })
	control := httpTarget(t, l.host, func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusInternalServerError) })
	dep := l.registry(t, l.rogueDeployer())
	for _, in := range []*registryv1.Instance{
		{Service: "shop-secret", Id: "secret-1", Address: "127.0.0.1", Port: secret.port(), Check: httpCheck()},
		{Service: "shop-control", Id: "control-1", Address: l.host, Port: control.port(), Check: httpCheck()},
	} {
		// The deployer may write shop*: these writes succeed.
		if _, err := dep.Register(callCtx(t), &registryv1.RegisterRequest{Instance: in}); err != nil {
			t.Fatalf("register %s/%s as the deployer: %v", in.GetService(), in.GetId(), err)
		}
	}
	refused := `switchboard_prober_health_checks_refused_total{service="shop-secret"}`
	pollFor(t, 10*time.Second, "the prober checks control-1 (critical) and refuses secret-1", func() (bool, string) {
		c := l.instance(t, "shop-control", "control-1")
		n := l.metric(t, "prober", refused)
		return c.GetHealth() == registryv1.HealthStatus_HEALTH_STATUS_CRITICAL && n >= 1,
			fmt.Sprintf("control-1 %v (%q), %s %v", c.GetHealth(), c.GetHealthOutput(), refused, n)
	})
	if control.accepts.Load() == 0 {
		t.Error("positive control: the prober never connected to control-1")
	}
	// The registry starts every instance PASSING (catalog.Prepare); what
	// the prober must not do is judge this one: its output is the refusal,
	// not a verdict of a check.
	s := l.instance(t, "shop-secret", "secret-1")
	if !strings.Contains(s.GetHealthOutput(), "not permitted by the prober's allowlist") {
		t.Errorf("secret-1's check output: %q, want the allowlist refusal", s.GetHealthOutput())
	}
	if by := s.GetMetadata()["registered-by"]; by != `token "deployer"` {
		t.Errorf("secret-1 registered-by %q, want the deployer's token", by)
	}
	t.Logf("secret-1 after the health loop: %v, output %q", s.GetHealth(), s.GetHealthOutput())

	// Direct jobs against loopback: the viewer may not run jobs; the
	// operator may, but not against a target outside the allowlist.
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(secret.port())))
	specs := map[string]*proberv1.JobSpec{
		"scan 127.0.0.1":  {Kind: &proberv1.JobSpec_Scan{Scan: &proberv1.ScanSpec{Target: "127.0.0.1", Ports: strconv.Itoa(int(secret.port()))}}},
		"check 127.0.0.1": {Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{Kind: "http", Target: "http://" + target + "/"}}},
	}
	for name, spec := range specs {
		_, err := runProberJob(t, l.prober(t, l.viewer()), spec)
		wantRefused(t, "viewer: "+name, err, codes.PermissionDenied, `token "viewer" lacks operator`)
		_, err = runProberJob(t, l.prober(t, l.ops()), spec)
		wantRefused(t, "ops: "+name, err, codes.PermissionDenied, "127.0.0.1", "not in the allowlist")
	}
	if n := secret.accepts.Load(); n != 0 {
		t.Errorf("the loopback target accepted %d connections", n)
	}
}

// 6. Read a page through expect_body: a check's pass/fail and detail tell
// what the target's body holds.
func (l *attackLab) readPageThroughExpectBody(t *testing.T) {
	probe := httpTarget(t, l.host, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "private page") })
	_, err := runProberJob(t, l.prober(t, l.viewer()), &proberv1.JobSpec{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{
		Kind: "http", Target: fmt.Sprintf("http://%s:%d/", l.host, probe.port()), ExpectBody: "^private"}}})
	wantRefused(t, "viewer: Run a check with expect_body", err, codes.PermissionDenied, `token "viewer" lacks operator`)
	if n := probe.accepts.Load(); n != 0 {
		t.Errorf("the viewer's check reached its target (%d connections)", n)
	}

	// The operator schedules a check of a target that answers with a
	// secret (not HTTP, so the check's detail quotes it).
	secret := "SECRET-" + randomToken(t)
	page := rawTarget(t, l.host, secret+"\r\n\r\n")
	job := &proberv1.Job{Id: "page-check", Interval: durationpb.New(time.Second), Spec: &proberv1.JobSpec{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{
		Kind: "http", Target: fmt.Sprintf("http://%s:%d/", l.host, page.port()), ExpectBody: secret}}}}
	if _, err := l.prober(t, l.ops()).Schedule(callCtx(t), &proberv1.ScheduleRequest{Job: job}); err != nil {
		t.Fatalf("Schedule as ops: %v", err)
	}
	t.Cleanup(func() {
		_, _ = l.prober(t, l.ops()).Unschedule(callCtx(t), &proberv1.UnscheduleRequest{Id: job.GetId()})
	})
	pollFor(t, 10*time.Second, "the operator sees the target's bytes in the results", func() (bool, string) {
		resp, err := l.prober(t, l.ops()).Results(callCtx(t), &proberv1.ResultsRequest{Id: job.GetId()})
		if err != nil {
			return false, err.Error()
		}
		text := prototext.Format(resp)
		return len(resp.GetResults()) > 0 && strings.Contains(text, secret), text
	})

	// The viewer sees that the job ran, but no byte of the secret.
	results, err := l.prober(t, l.viewer()).Results(callCtx(t), &proberv1.ResultsRequest{Id: job.GetId()})
	if err != nil {
		t.Fatalf("Results as the viewer: %v", err)
	}
	jobs, err := l.prober(t, l.viewer()).ListJobs(callCtx(t), &proberv1.ListJobsRequest{})
	if err != nil {
		t.Fatalf("ListJobs as the viewer: %v", err)
	}
	if len(results.GetResults()) == 0 {
		t.Error("the viewer sees no results of page-check")
	}
	var listed *proberv1.Job
	for _, j := range jobs.GetJobs() {
		if j.GetId() == job.GetId() {
			listed = j
		}
	}
	if got := listed.GetSpec().GetCheck().GetExpectBody(); got != "<redacted>" {
		t.Errorf("the viewer's ListJobs shows expect_body %q, want <redacted>", got)
	}
	for what, m := range map[string]proto.Message{"Results": results, "ListJobs": jobs} {
		if text := prototext.Format(m); strings.Contains(text, "SECRET") {
			t.Errorf("the viewer's %s shows the target's body:\n%s", what, text)
		} else {
			t.Logf("the viewer's %s:\n%s", what, text)
		}
	}
}

// announcement is a discovery datagram: the JSON body, sealed with key
// (HMAC-SHA256 over the protocol's domain string and the body) unless key
// is nil.
func announcement(t *testing.T, name string, key []byte) []byte {
	t.Helper()
	body, err := json.Marshal(map[string]any{"v": 2, "t": "announce", "id": randomToken(t), "ts": time.Now().UnixMilli(),
		"name": name, "grpc": ":7400"})
	if err != nil {
		t.Fatal(err)
	}
	if key == nil {
		return body
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("switchboard prober discovery v2\n"))
	mac.Write(body)
	return mac.Sum(body)
}

// peers lists the prober's discovered peers by name, as the operator.
func (l *attackLab) peers(t *testing.T) map[string]*proberv1.Peer {
	t.Helper()
	res, err := runProberJob(t, l.prober(t, l.ops()), &proberv1.JobSpec{Kind: &proberv1.JobSpec_Peers{Peers: &proberv1.PeersSpec{
		Wait: durationpb.New(200 * time.Millisecond)}}})
	if err != nil {
		t.Fatalf("peers job as ops: %v", err)
	}
	out := map[string]*proberv1.Peer{}
	for _, p := range res.GetPeers().GetPeers() {
		out[p.GetName()] = p
	}
	return out
}

// 7. Spoofed discovery announcements from the attacker's host.
func (l *attackLab) spoofedDiscovery(t *testing.T) {
	pc, err := netnstest.ListenPacket(l.ns, "udp4", net.JoinHostPort(l.attacker, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	to := &net.UDPAddr{IP: net.ParseIP(l.host), Port: l.discPort}
	send := func(b []byte) {
		t.Helper()
		if _, err := pc.WriteTo(b, to); err != nil {
			t.Fatal(err)
		}
	}
	dropped := func(reason string) float64 {
		return l.metric(t, "prober", `switchboard_prober_discovery_dropped_total{reason="`+reason+`"}`)
	}

	before := dropped("unauthenticated")
	send(announcement(t, "spoof-no-mac", nil))
	send(announcement(t, "spoof-wrong-key", []byte("not the key of this network!")))
	pollFor(t, 5*time.Second, "two unauthenticated announcements dropped", func() (bool, string) {
		n := dropped("unauthenticated")
		return n >= before+2, fmt.Sprintf("dropped %v, was %v", n, before)
	})
	peers := l.peers(t)
	for name := range peers {
		if strings.HasPrefix(name, "spoof") {
			t.Errorf("a spoofed announcement made %q a peer", name)
		}
	}
	t.Logf("unauthenticated announcements dropped: %v (was %v); peers: %d", dropped("unauthenticated"), before, len(peers))

	// Positive control: an announcement sealed with the key is heard,
	// once; sent again, it is a replay.
	good := announcement(t, "friend", l.discKey)
	send(good)
	pollFor(t, 5*time.Second, "the keyed announcement makes friend a peer", func() (bool, string) {
		p := l.peers(t)["friend"]
		return p.GetAddress() == l.attacker, fmt.Sprint(p)
	})
	replayed := dropped("replayed")
	send(good)
	pollFor(t, 5*time.Second, "the replayed announcement dropped", func() (bool, string) {
		n := dropped("replayed")
		return n >= replayed+1, fmt.Sprintf("dropped as replayed %v, was %v", n, replayed)
	})
}

// 8. A forged reply from the resolver's upstream path: a wrong ID, or the
// right ID for another question, ahead of the real reply.
func (l *attackLab) mismatchedUpstreamReply(t *testing.T) {
	dnsAddr := l.procs["resolver"].addr(t, "dns")
	mismatched := "switchboard_resolver_forward_mismatched_total"
	m0, q0 := l.metric(t, "resolver", mismatched), l.upstream.queries.Load()
	ask := func(ns, name string, rd bool, rcode int, want []string, upstreamQueries int64) {
		t.Helper()
		r, err := dnsQuery(ns, dnsAddr, name, dns.TypeA, rd)
		if err != nil {
			t.Fatalf("DNS %s: %v", name, err)
		}
		got := answerAddrs(r)
		if r.Rcode != rcode || !slices.Equal(got, want) {
			t.Errorf("DNS %s (rd %v, from %q): %s %v, want %s %v", name, rd, ns, dns.RcodeToString[r.Rcode], got, dns.RcodeToString[rcode], want)
		}
		if n := l.upstream.queries.Load() - q0; n != upstreamQueries {
			t.Errorf("after DNS %s: the upstream had %d queries, want %d", name, n, upstreamQueries)
		}
	}
	ask("", "www.attack.test.", true, dns.RcodeSuccess, []string{realAddr}, 1)
	if n := l.metric(t, "resolver", mismatched); n < m0+2 {
		t.Errorf("%s: %v, want at least %v (two forged replies)", mismatched, n, m0+2)
	} else {
		t.Logf("%s: %v (was %v)", mismatched, n, m0)
	}
	// Again: from the cache, which holds the real answer.
	ask("", "www.attack.test.", true, dns.RcodeSuccess, []string{realAddr}, 1)
	// The name the forged reply claimed to answer was not cached: it is
	// asked upstream.
	ask("", "poison.attack.test.", true, dns.RcodeSuccess, []string{realAddr}, 2)
	// RD=0 is neither forwarded nor answered from the cache.
	ask("", "www.attack.test.", false, dns.RcodeRefused, nil, 2)
	// Nor does the attacker's network get recursion.
	ask(l.ns, "www.attack.test.", true, dns.RcodeRefused, nil, 2)
}
