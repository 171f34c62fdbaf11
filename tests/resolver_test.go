package tests

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	resolverv1 "github.com/switchboard-net/switchboard/proto/switchboard/resolver/v1"
	"github.com/switchboard-net/switchboard/services/registry"
	"github.com/switchboard-net/switchboard/services/resolver"
)

// resolverDig runs dig against addr and returns its output.
func resolverDig(t *testing.T, addr string, args ...string) string {
	t.Helper()
	dig := servicetest.Tool(t, "dig")
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command(dig, append([]string{"-p", port, "@" + host, "+time=2", "+tries=1"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// resolverUntil polls dig until its output contains want.
func resolverUntil(t *testing.T, addr, want string, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var out string
	for time.Now().Before(deadline) {
		out = resolverDig(t, addr, args...)
		if strings.Contains(out, want) {
			return out
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("dig %v: no %q within 15s; last:\n%s", args, want, out)
	return ""
}

// TestResolverAnswersRegistrations runs the real registry (embedded store)
// and the resolver: a registration made through the registry is answered
// by DNS (A with AA, SRV with the port), a record stored through the
// resolver's API lands in the registry's store and is served, and a
// deregistration takes the name away.
func TestResolverAnswersRegistrations(t *testing.T) {
	servicetest.Tool(t, "dig")
	reg := servicetest.Start(t, registry.Spec(), "--store=embedded", "--data-dir="+t.TempDir())
	res := servicetest.Start(t, resolver.Spec(), "--dns-addr=127.0.0.1:0", "--registry-addr="+reg.Addrs["grpc"])
	dnsAddr := res.Addrs["dns"]
	rc := registryv1.NewRegistryClient(reg.Conn(t))
	api := resolverv1.NewResolverClient(res.Conn(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := rc.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
		Service: "checkout", Id: "checkout-1", Address: "10.20.0.1", Port: 8443, Tags: []string{"canary"},
	}}); err != nil {
		t.Fatal(err)
	}
	out := resolverUntil(t, dnsAddr, "10.20.0.1", "checkout.service.switchboard.", "A")
	if !strings.Contains(out, "status: NOERROR") || !strings.Contains(out, " aa") {
		t.Fatalf("A answer without NOERROR and aa:\n%s", out)
	}
	out = resolverDig(t, dnsAddr, "_checkout._tcp.service.switchboard.", "SRV", "+noall", "+answer", "+additional")
	if !strings.Contains(out, "8443 checkout-1.checkout.instance.switchboard.") || !strings.Contains(out, "10.20.0.1") {
		t.Fatalf("SRV answer lacks the port, target and its address:\n%s", out)
	}
	out = resolverDig(t, dnsAddr, "canary.checkout.service.switchboard.", "A", "+short")
	if strings.TrimSpace(out) != "10.20.0.1" {
		t.Fatalf("tag name answered %q", out)
	}

	if _, err := api.UpsertRecord(ctx, &resolverv1.UpsertRecordRequest{Record: &resolverv1.Record{
		Name: "www.switchboard.", Type: "CNAME", Ttl: 60, Data: "checkout.service.switchboard.",
	}}); err != nil {
		t.Fatal(err)
	}
	lr, err := rc.ListRecords(ctx, &registryv1.ListRecordsRequest{})
	if err != nil || len(lr.Records) != 1 || lr.Records[0].Type != "CNAME" {
		t.Fatalf("registry ListRecords = %v, %v; want the CNAME stored through the resolver", lr, err)
	}
	out = resolverUntil(t, dnsAddr, "10.20.0.1", "www.switchboard.", "A")
	if !strings.Contains(strings.Join(strings.Fields(out), " "), "www.switchboard. 60 IN CNAME checkout.service.switchboard. checkout.service.switchboard. 5 IN A 10.20.0.1") {
		t.Fatalf("CNAME not chased into the service zone:\n%s", out)
	}

	if _, err := rc.Deregister(ctx, &registryv1.DeregisterRequest{Service: "checkout", Id: "checkout-1"}); err != nil {
		t.Fatal(err)
	}
	resolverUntil(t, dnsAddr, "status: NXDOMAIN", "checkout.service.switchboard.", "A")
}
