package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/access"
	"github.com/switchboard-net/switchboard/pkg/config"
	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
	"github.com/switchboard-net/switchboard/services/registry/consulstore"
)

// runBootstrapCmd runs `switchboard bootstrap ARGS` and returns its output.
func runBootstrapCmd(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if c := run(context.Background(), append([]string{"bootstrap"}, args...), &out, &errOut); c != 0 {
		t.Fatalf("bootstrap %v = %d: %s%s", args, c, out.String(), errOut.String())
	}
	return out.String()
}

// readTree returns every file under dir with its contents.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func readToken(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestBootstrapFilesAndModes(t *testing.T) {
	dir, host := t.TempDir(), t.TempDir()
	owner := fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid())
	if os.Geteuid() == 0 {
		owner = "65532:65532" // as in compose: the image's user
	}
	runBootstrapCmd(t, "--dir", dir, "--host", host, "--owner", owner, "--consul-owner", owner)
	want := map[string]fs.FileMode{
		"private/ca.pem": 0o600, "private/ca-key.pem": 0o600,
		"consul/acl.hcl": 0o600, "consul/management.token": 0o600, "consul/agent.token": 0o600, "consul/registry.token": 0o600,
		"demo/ca.pem": 0o644, "demo/cert.pem": 0o644, "demo/key.pem": 0o600, "demo/token": 0o600,
		"registry/consul.token": 0o600,
	}
	for _, svc := range []string{"registry", "balancer", "resolver", "prober", "edge"} {
		want[svc+"/ca.pem"] = 0o644
		want[svc+"/cert.pem"] = 0o644
		want[svc+"/key.pem"] = 0o600
		want[svc+"/token"] = 0o600
		want[svc+"/acl.yaml"] = 0o644
	}
	var uid, gid int
	fmt.Sscanf(owner, "%d:%d", &uid, &gid)
	for rel, mode := range want {
		st, err := os.Stat(filepath.Join(dir, rel))
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", rel, st.Mode().Perm(), mode)
		}
		if sys := st.Sys().(*syscall.Stat_t); !strings.HasPrefix(rel, "private/") && (int(sys.Uid) != uid || int(sys.Gid) != gid) {
			t.Errorf("%s: owner %d:%d, want %s", rel, sys.Uid, sys.Gid, owner)
		}
	}
	// Nothing but the private directory holds the CA's key.
	for rel := range readTree(t, dir) {
		if strings.HasSuffix(rel, "ca-key.pem") && rel != "private/ca-key.pem" {
			t.Errorf("the CA key was copied to %s", rel)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "private")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("private: %v, mode %v; want 0700", err, st.Mode().Perm())
	}
	hostWant := map[string]fs.FileMode{"ca.pem": 0o644, "client.pem": 0o644, "client-key.pem": 0o600, "operator.token": 0o600, "viewer.token": 0o600}
	have := readTree(t, host)
	if len(have) != len(hostWant) {
		t.Errorf("host directory holds %d files, want %d: %v", len(have), len(hostWant), have)
	}
	for name, mode := range hostWant {
		st, err := os.Stat(filepath.Join(host, name))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("host %s: %v, mode %v; want %v", name, err, st.Mode().Perm(), mode)
		}
	}
	// Tokens: 32 random bytes in hex, all different; Consul's are UUIDs.
	seen := map[string]string{}
	for _, id := range stackIdentities {
		tok := readToken(t, filepath.Join(dir, "private/tokens", id.name+".token"))
		if len(tok) != 64 || strings.Trim(tok, "0123456789abcdef") != "" {
			t.Errorf("token %s = %q, want 64 hex digits", id.name, tok)
		}
		if other, dup := seen[tok]; dup {
			t.Errorf("tokens %s and %s are the same", id.name, other)
		}
		seen[tok] = id.name
	}
	for _, name := range consulTokens {
		tok := readToken(t, filepath.Join(dir, "consul", name+".token"))
		if len(tok) != 36 || strings.Count(tok, "-") != 4 || tok[14] != '4' {
			t.Errorf("Consul token %s = %q, want a version 4 UUID", name, tok)
		}
	}
	if got := readToken(t, filepath.Join(dir, "registry/token")); got != readToken(t, filepath.Join(dir, "private/tokens/registry.token")) {
		t.Error("registry/token differs from private/tokens/registry.token")
	}
	if got := readToken(t, filepath.Join(host, "operator.token")); got != readToken(t, filepath.Join(dir, "private/tokens/operator.token")) {
		t.Error("the host's operator.token differs from the ACL's operator token")
	}
	acl, _ := os.ReadFile(filepath.Join(dir, "consul/acl.hcl"))
	for _, s := range []string{`default_policy           = "deny"`, `down_policy              = "extend-cache"`, "enable_token_persistence = true",
		fmt.Sprintf("initial_management = %q", readToken(t, filepath.Join(dir, "consul/management.token"))),
		fmt.Sprintf("agent              = %q", readToken(t, filepath.Join(dir, "consul/agent.token")))} {
		if !strings.Contains(string(acl), s) {
			t.Errorf("consul/acl.hcl lacks %s:\n%s", s, acl)
		}
	}
}

func TestBootstrapIdempotentAndRotate(t *testing.T) {
	dir, host := t.TempDir(), t.TempDir()
	runBootstrapCmd(t, "--dir", dir, "--host", host)
	first, firstHost := readTree(t, dir), readTree(t, host)

	out := runBootstrapCmd(t, "--dir", dir, "--host", host)
	if !strings.Contains(out, "(0 written,") {
		t.Errorf("a second run wrote files:\n%s", out)
	}
	assertSameTree(t, first, readTree(t, dir))
	assertSameTree(t, firstHost, readTree(t, host))

	// A container's copy that was lost or changed is restored from private/.
	os.Remove(filepath.Join(dir, "edge/key.pem"))
	os.WriteFile(filepath.Join(dir, "balancer/token"), []byte("tampered\n"), 0o600)
	os.Remove(filepath.Join(host, "client.pem"))
	runBootstrapCmd(t, "--dir", dir, "--host", host)
	assertSameTree(t, first, readTree(t, dir))
	assertSameTree(t, firstHost, readTree(t, host))

	// A lost CA means new certificates for everyone, and the same tokens.
	os.Remove(filepath.Join(dir, "private/ca.pem"))
	os.Remove(filepath.Join(dir, "private/ca-key.pem"))
	out = runBootstrapCmd(t, "--dir", dir, "--host", host)
	if !strings.Contains(out, "reissuing") {
		t.Errorf("no certificate reissued after a new CA:\n%s", out)
	}
	second := readTree(t, dir)
	for rel, data := range first {
		switch {
		case strings.HasSuffix(rel, ".pem") && second[rel] == data:
			t.Errorf("%s unchanged under a new CA", rel)
		case !strings.HasSuffix(rel, ".pem") && second[rel] != data:
			t.Errorf("%s changed though only the CA was lost", rel)
		}
	}

	// --rotate (or its environment twin) replaces every secret but
	// Consul's management and agent tokens.
	t.Setenv("SWITCHBOARD_BOOTSTRAP_ROTATE", "1")
	runBootstrapCmd(t, "--dir", dir, "--host", host)
	third := readTree(t, dir)
	for rel, data := range second {
		keep := rel == "consul/management.token" || rel == "consul/agent.token" ||
			rel == "private/consul/management.token" || rel == "private/consul/agent.token" || rel == "consul/acl.hcl"
		if keep != (third[rel] == data) {
			t.Errorf("%s: changed %v after --rotate, want %v", rel, third[rel] != data, !keep)
		}
	}
}

func assertSameTree(t *testing.T, want, got map[string]string) {
	t.Helper()
	for rel, data := range want {
		if got[rel] != data {
			t.Errorf("%s changed", rel)
		}
	}
	for rel := range got {
		if _, ok := want[rel]; !ok {
			t.Errorf("%s appeared", rel)
		}
	}
}

func TestBootstrapUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bootstrap", "--owner", "nobody"},
		{"bootstrap", "extra"},
		{"bootstrap", "consul", "--kv-prefix", "/abs"},
	} {
		var out, errOut bytes.Buffer
		if c := run(context.Background(), args, &out, &errOut); c != 2 {
			t.Errorf("%v = %d (%s), want 2", args, c, errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	if c := run(context.Background(), []string{"bootstrap", "consul", "--dir", t.TempDir()}, &out, &errOut); c != 1 ||
		!strings.Contains(errOut.String(), "run 'switchboard bootstrap' first") {
		t.Errorf("bootstrap consul without files = %d: %s", c, errOut.String())
	}
}

// TestBootstrapACL: each token of the ACL file bootstrap writes holds
// exactly the permissions its holder needs.
func TestBootstrapACL(t *testing.T) {
	dir := t.TempDir()
	runBootstrapCmd(t, "--dir", dir)
	data, err := os.ReadFile(filepath.Join(dir, "registry/acl.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	acl, err := access.Parse("acl.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if acl.Default() != access.Deny {
		t.Errorf("default %v, want deny", acl.Default())
	}
	for _, svc := range []string{"balancer", "resolver", "prober", "edge"} {
		if b, _ := os.ReadFile(filepath.Join(dir, svc, "acl.yaml")); !bytes.Equal(b, data) {
			t.Errorf("%s/acl.yaml differs from registry/acl.yaml", svc)
		}
	}
	var (
		svcAllRead   = access.Service("*", access.Read)
		svcAllWrite  = access.Service("*", access.Write)
		demoWrite    = access.Service("demo", access.Write)
		demoRead     = access.Service("demo", access.Read)
		webWrite     = access.Service("web", access.Write)
		recordsRead  = access.RecordsRead("*")
		recordsWrite = access.Records("www.example.test.")
		operator     = access.Operator()
	)
	tests := []struct {
		who   string
		need  access.Need
		allow bool
	}{
		{"registry", svcAllRead, false},
		{"registry", demoRead, false},
		{"registry", operator, false},
		{"balancer", svcAllRead, true},
		{"balancer", demoWrite, true}, // stores the policies its operators set
		{"balancer", recordsRead, false},
		{"balancer", operator, false},
		{"resolver", svcAllRead, true},
		{"resolver", recordsRead, true},
		{"resolver", recordsWrite, true},
		{"resolver", webWrite, false},
		{"resolver", operator, false},
		{"prober", svcAllRead, true},
		{"prober", webWrite, true}, // SetHealth on any service
		{"prober", recordsRead, false},
		{"prober", operator, true}, // the scheduled jobs in the registry
		{"edge", svcAllRead, true},
		{"edge", webWrite, true}, // balancer Report
		{"edge", recordsRead, false},
		{"edge", operator, false},
		{"demo", demoWrite, true},
		{"demo", demoRead, true},
		{"demo", webWrite, false},
		{"demo", svcAllRead, false},
		{"demo", operator, false},
		{"operator", operator, true},
		{"operator", svcAllWrite, true},
		{"operator", recordsWrite, true},
		{"viewer", svcAllRead, true},
		{"viewer", recordsRead, true},
		{"viewer", demoWrite, false},
		{"viewer", recordsWrite, false},
		{"viewer", operator, false},
	}
	for _, tt := range tests {
		tok := readToken(t, filepath.Join(dir, "private/tokens", tt.who+".token"))
		c, err := acl.Identify(tok, nil)
		if err != nil {
			t.Fatalf("%s's token: %v", tt.who, err)
		}
		if c.Name != tt.who {
			t.Errorf("%s's token identifies %q", tt.who, c.Name)
		}
		if got := c.Allows(tt.need); got != tt.allow {
			t.Errorf("%s allowed %s = %v, want %v", tt.who, tt.need, got, tt.allow)
		}
	}
	// The host's client certificate alone grants nothing: the token does.
	c, err := acl.Identify("", []string{hostClientName})
	if err != nil || c.Allows(svcAllRead) {
		t.Errorf("the client certificate alone: %v, allows service read %v", err, c.Allows(svcAllRead))
	}
	if _, err := acl.Identify("not-a-token", nil); err == nil {
		t.Error("an unknown token was accepted")
	}
}

// TestBootstrapCertificates: every certificate chains to the CA, with the
// names each one is dialled by and the usages it needs.
func TestBootstrapCertificates(t *testing.T) {
	dir, host := t.TempDir(), t.TempDir()
	runBootstrapCmd(t, "--dir", dir, "--host", host)
	roots := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(dir, "private/ca.pem"))
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("private/ca.pem holds no certificate")
	}
	load := func(certFile, keyFile string) *x509.Certificate {
		t.Helper()
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			t.Fatalf("%s, %s: %v", certFile, keyFile, err)
		}
		b, _ := os.ReadFile(certFile)
		blk, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, svc := range []string{"registry", "balancer", "resolver", "prober", "edge"} {
		if b, _ := os.ReadFile(filepath.Join(dir, svc, "ca.pem")); !bytes.Equal(b, caPEM) {
			t.Errorf("%s/ca.pem is not the CA", svc)
		}
		c := load(filepath.Join(dir, svc, "cert.pem"), filepath.Join(dir, svc, "key.pem"))
		if c.Subject.CommonName != svc {
			t.Errorf("%s: CN %q", svc, c.Subject.CommonName)
		}
		// Dialled as <service>:port inside compose, and as localhost or
		// 127.0.0.1 on the published ports and by its own healthcheck.
		for _, name := range []string{svc, "localhost", "127.0.0.1"} {
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
					t.Errorf("%s as %s (usage %v): %v", svc, name, usage, err)
				}
			}
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: "edge-not"}); err == nil {
			t.Errorf("%s verifies for a name it does not have", svc)
		}
	}
	for _, cl := range []struct{ name, cert, key string }{
		{"demo", filepath.Join(dir, "demo/cert.pem"), filepath.Join(dir, "demo/key.pem")},
		{hostClientName, filepath.Join(host, "client.pem"), filepath.Join(host, "client-key.pem")},
	} {
		c := load(cl.cert, cl.key)
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s as a client: %v", cl.name, err)
		}
		if slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
			t.Errorf("%s may serve; it is a client only", cl.name)
		}
	}
}

// TestBootstrapLockedRegistry runs a registry the way compose does, with
// bootstrap's files: the demo app registers with its token over mutual
// TLS, the healthcheck reads /readyz over https, and callers without a
// client certificate or with the viewer's token are refused.
func TestBootstrapLockedRegistry(t *testing.T) {
	dir, host := t.TempDir(), t.TempDir()
	runBootstrapCmd(t, "--dir", dir, "--host", host)
	p := func(rel string) string { return filepath.Join(dir, "registry", rel) }
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan map[string]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, registry.Spec(), []string{
			"--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--data-dir=" + t.TempDir(),
			"--tls-cert=" + p("cert.pem"), "--tls-key=" + p("key.pem"), "--tls-ca=" + p("ca.pem"),
			"--acl-file=" + p("acl.yaml"), "--token-file=" + p("token"),
		}, service.WithEnv(config.NoEnv), service.WithLogOutput(io.Discard),
			service.WithReady(func(a map[string]string) { addrs <- a }))
	}()
	t.Cleanup(func() { cancel(); <-done })
	var a map[string]string
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("registry: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("registry not ready within 20s")
	}
	_, grpcPort, _ := net.SplitHostPort(a["grpc"])
	_, adminPort, _ := net.SplitHostPort(a["admin"])
	regAddr := "localhost:" + grpcPort

	// The healthcheck compose runs: https, verified against the CA.
	var out, errOut bytes.Buffer
	readyz := "https://127.0.0.1:" + adminPort + "/readyz"
	if c := run(ctx, []string{"health", "--cacert", p("ca.pem"), readyz}, &out, &errOut); c != 0 {
		t.Errorf("health --cacert %s = %d: %s", readyz, c, errOut.String())
	}
	if c := run(ctx, []string{"health", readyz}, &out, &errOut); c == 0 {
		t.Error("health without the CA trusted a certificate of the stack's own CA")
	}

	// The demo app registers itself as compose runs it.
	demoCtx, stopDemo := context.WithCancel(ctx)
	demoDone := make(chan error, 1)
	go func() {
		d := func(rel string) string { return filepath.Join(dir, "demo", rel) }
		var o, e bytes.Buffer
		if c := run(demoCtx, []string{"demo", "--listen=127.0.0.1:0", "--name=demo-1", "--advertise=127.0.0.1",
			"--register=" + regAddr, "--register-timeout=10s",
			"--tls-ca=" + d("ca.pem"), "--tls-cert=" + d("cert.pem"), "--tls-key=" + d("key.pem"), "--token-file=" + d("token")}, &o, &e); c != 0 {
			demoDone <- fmt.Errorf("demo = %d: %s%s", c, o.String(), e.String())
			return
		}
		demoDone <- nil
	}()

	client := func(t *testing.T, certFile, keyFile, tokenFile string) registryv1.RegistryClient {
		t.Helper()
		opts, err := demoTrust{ca: filepath.Join(host, "ca.pem"), cert: certFile, key: keyFile, tokenFile: tokenFile}.dialOptions(regAddr)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(regAddr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return registryv1.NewRegistryClient(cc)
	}
	hostCert, hostKey := filepath.Join(host, "client.pem"), filepath.Join(host, "client-key.pem")
	op := client(t, hostCert, hostKey, filepath.Join(host, "operator.token"))
	deadline := time.Now().Add(15 * time.Second)
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := op.GetService(cctx, &registryv1.GetServiceRequest{Service: "demo", IncludeUnhealthy: true})
		ccancel()
		if err == nil && len(resp.GetInstances()) == 1 && resp.GetInstances()[0].GetId() == "demo-1" {
			break
		}
		select {
		case err := <-demoDone:
			t.Fatalf("the demo app stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo-1 not registered within 15s (last: %v, %v)", resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	inst := &registryv1.Instance{Service: "web", Id: "web-1", Address: "127.0.0.1", Port: 9000}
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	// The viewer reads but may not register.
	viewer := client(t, hostCert, hostKey, filepath.Join(host, "viewer.token"))
	if _, err := viewer.GetService(cctx, &registryv1.GetServiceRequest{Service: "demo"}); err != nil {
		t.Errorf("viewer GetService: %v", err)
	}
	if _, err := viewer.Register(cctx, &registryv1.RegisterRequest{Instance: inst}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("viewer Register: %v, want PermissionDenied", err)
	}
	// The demo token may register demo, nothing else.
	demo := client(t, filepath.Join(dir, "demo/cert.pem"), filepath.Join(dir, "demo/key.pem"), filepath.Join(dir, "demo/token"))
	if _, err := demo.Register(cctx, &registryv1.RegisterRequest{Instance: inst}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("demo token Register web: %v, want PermissionDenied", err)
	}
	// A client certificate without a token: Unauthenticated (no caller).
	anon := client(t, hostCert, hostKey, "")
	if _, err := anon.GetService(cctx, &registryv1.GetServiceRequest{Service: "demo"}); status.Code(err) != codes.PermissionDenied && status.Code(err) != codes.Unauthenticated {
		t.Errorf("certificate without a token GetService: %v, want refused", err)
	}
	// No client certificate: the handshake fails.
	nocert := client(t, "", "", filepath.Join(host, "operator.token"))
	if _, err := nocert.GetService(cctx, &registryv1.GetServiceRequest{Service: "demo"}); status.Code(err) != codes.Unavailable {
		t.Errorf("no client certificate GetService: %v, want Unavailable (handshake refused)", err)
	}
	if _, err := op.Register(cctx, &registryv1.RegisterRequest{Instance: inst}); err != nil {
		t.Errorf("operator Register: %v", err)
	}

	// The demo app deregisters on exit.
	stopDemo()
	if err := <-demoDone; err != nil {
		t.Fatal(err)
	}
	resp, err := op.GetService(cctx, &registryv1.GetServiceRequest{Service: "demo", IncludeUnhealthy: true})
	if err != nil || len(resp.GetInstances()) != 0 {
		t.Errorf("after the demo app stopped: %v, %v; want no instances", resp, err)
	}
}

// TestBootstrapConsul runs 'bootstrap consul' against a real Consul with
// bootstrap's ACL configuration, then the registry's own Consul store with
// the token it made, as compose does (CONSUL_HTTP_TOKEN_FILE).
func TestBootstrapConsul(t *testing.T) {
	bin := servicetest.Tool(t, "consul")
	dir := t.TempDir()
	runBootstrapCmd(t, "--dir", dir)
	consulDir := filepath.Join(dir, "consul")
	addr := startACLConsul(t, bin, filepath.Join(consulDir, "acl.hcl"))
	base := "http://" + addr

	consulRun := func() string {
		t.Helper()
		var out, errOut bytes.Buffer
		if c := run(context.Background(), []string{"bootstrap", "consul", "--addr", addr, "--dir", consulDir, "--timeout", "30s"}, &out, &errOut); c != 0 {
			t.Fatalf("bootstrap consul = %d: %s%s", c, out.String(), errOut.String())
		}
		return out.String()
	}
	out := consulRun()
	if strings.Count(out, "created") != 4 {
		t.Errorf("first run:\n%s", out)
	}
	if out := consulRun(); strings.Count(out, " kept") != 4 {
		t.Errorf("a second run changed something:\n%s", out)
	}

	// Anonymous writes are refused.
	if code := consulHTTP(t, base, http.MethodPut, "/v1/agent/service/register", "", `{"Name":"evil"}`); code != http.StatusForbidden {
		t.Errorf("anonymous service register: %d, want 403", code)
	}
	regToken := readToken(t, filepath.Join(dir, "registry/consul.token"))
	if code := consulHTTP(t, base, http.MethodPut, "/v1/kv/elsewhere", regToken, "x"); code != http.StatusForbidden {
		t.Errorf("registry token writing KV outside its prefix: %d, want 403", code)
	}
	if code := consulHTTP(t, base, http.MethodPut, "/v1/acl/policy", regToken, `{"Name":"x","Rules":""}`); code != http.StatusForbidden {
		t.Errorf("registry token writing an ACL policy: %d, want 403", code)
	}

	// The registry's store does everything it does with that token.
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", filepath.Join(dir, "registry/consul.token"))
	s, err := consulstore.Open(context.Background(), consulstore.Options{Address: addr, Wait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inst, err := catalog.Prepare(&registryv1.Instance{Service: "web", Id: "web-1", Address: "10.0.0.1", Port: 80,
		Check: &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_HTTP, HttpPath: "/healthz", Interval: durationpb.New(10 * time.Second)}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Register(ctx, inst); err != nil {
		t.Fatalf("Register with the registry's Consul token: %v", err)
	}
	if err := s.SetHealth(ctx, "web", "web-1", registryv1.HealthStatus_HEALTH_STATUS_PASSING, "ok"); err != nil {
		t.Fatalf("SetHealth: %v", err)
	}
	rec, err := catalog.PrepareRecord(&registryv1.Record{Name: "www.example.test.", Type: "A", Ttl: 60, Data: "10.0.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutRecord(ctx, rec); err != nil {
		t.Fatalf("PutRecord: %v", err)
	}
	// A second store, with nothing of its own pending, sees both through
	// Consul's catalog, health and KV reads under the same token.
	s2, err := consulstore.Open(context.Background(), consulstore.Options{Address: addr, Wait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for {
		snap := s2.Snapshot()
		in := snap.Instance("web", "web-1")
		_, recs := snap.Records()
		if in != nil && in.GetHealth() == registryv1.HealthStatus_HEALTH_STATUS_PASSING && len(recs) == 1 && !snap.Stale() {
			break
		}
		select {
		case <-snap.Changed():
		case <-ctx.Done():
			t.Fatalf("the store never showed web-1 passing and the record (instance %v, records %v, stale %v)", in, recs, snap.Stale())
		}
	}
	if err := s.Deregister(ctx, "web", "web-1"); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	// The agent's own token keeps its node in the catalog.
	mgmt := readToken(t, filepath.Join(consulDir, "management.token"))
	if code := consulHTTP(t, base, http.MethodGet, "/v1/catalog/node/test", mgmt, ""); code != http.StatusOK {
		t.Errorf("catalog node test: %d", code)
	}

	// Rotation: a new registry token replaces the old one in Consul.
	t.Setenv("SWITCHBOARD_BOOTSTRAP_ROTATE", "1")
	runBootstrapCmd(t, "--dir", dir)
	os.Unsetenv("SWITCHBOARD_BOOTSTRAP_ROTATE")
	if out := consulRun(); !strings.Contains(out, "replacing 1") {
		t.Errorf("after --rotate:\n%s", out)
	}
	if code := consulHTTP(t, base, http.MethodGet, "/v1/acl/token/self", regToken, ""); code != http.StatusForbidden {
		t.Errorf("the old registry token still resolves: %d", code)
	}
	newToken := readToken(t, filepath.Join(dir, "registry/consul.token"))
	if newToken == regToken {
		t.Fatal("--rotate kept the registry's Consul token")
	}
	if code := consulHTTP(t, base, http.MethodGet, "/v1/agent/self", newToken, ""); code != http.StatusOK {
		t.Errorf("the new registry token: agent/self %d", code)
	}
}

// startACLConsul starts a Consul dev agent with the ACL configuration file
// on free loopback ports and returns its HTTP address.
func startACLConsul(t *testing.T, bin, aclFile string) string {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range 4 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	var out bytes.Buffer
	logs := &lockedBuffer{b: &out}
	cmd := exec.Command(bin, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-node", "test",
		"-http-port", strconv.Itoa(ports[0]), "-serf-lan-port", strconv.Itoa(ports[1]),
		"-serf-wan-port", strconv.Itoa(ports[2]), "-server-port", strconv.Itoa(ports[3]),
		"-dns-port", "-1", "-grpc-port", "-1", "-hcl", "ports { grpc_tls = -1 }",
		"-config-file", aclFile, "-log-level", "error", "-disable-host-node-id")
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v1/status/leader")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Contains(string(b), ":") {
				return addr
			}
		}
		select {
		case <-exited:
			logs.mu.Lock()
			t.Fatalf("consul exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("consul not ready within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// consulHTTP makes one request and returns the status code.
func consulHTTP(t *testing.T, base, method, path, token, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Consul-Token", token)
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// lockedBuffer is a bytes.Buffer two writers share.
type lockedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// TestConsulCallRetries: a busy Consul (429, or 5xx on a read) is asked
// again; a write that got 5xx is not (it may have been applied), nor a
// refusal.
func TestConsulCallRetries(t *testing.T) {
	for _, tc := range []struct {
		name      string
		method    string
		answers   []int // status of each try; the last repeats
		wantTries int
		wantErr   bool
	}{
		{"read after two 429s", http.MethodGet, []int{429, 429, 200}, 3, false},
		{"read after a 500 (no leader yet)", http.MethodGet, []int{500, 200}, 2, false},
		{"read that stays busy", http.MethodGet, []int{503}, 4, true},
		{"write after a 429", http.MethodPut, []int{429, 200}, 2, false},
		{"write after a 500 is not repeated", http.MethodPut, []int{500, 200}, 1, true},
		{"a refusal is not repeated", http.MethodGet, []int{403, 200}, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tries atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := int(tries.Add(1)) - 1
				code := tc.answers[min(n, len(tc.answers)-1)]
				w.WriteHeader(code)
				if code == 200 {
					io.WriteString(w, "{}")
				}
			}))
			defer srv.Close()
			a := &consulAPI{base: srv.URL}
			err := a.call(context.Background(), tc.method, "/v1/x", "", nil, &struct{}{})
			if got := int(tries.Load()); got != tc.wantTries || (err != nil) != tc.wantErr {
				t.Fatalf("%d tries, err %v; want %d tries, error %v", got, err, tc.wantTries, tc.wantErr)
			}
		})
	}
}
