package service_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchboard-net/switchboard/pkg/access"
	"github.com/switchboard-net/switchboard/pkg/certs"
	"github.com/switchboard-net/switchboard/pkg/config"
	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// catalog is a tiny registry server: it answers GetService with the caller
// it saw, and Watch with one snapshot.
type catalog struct {
	registryv1.UnimplementedRegistryServer
}

func (catalog) GetService(ctx context.Context, req *registryv1.GetServiceRequest) (*registryv1.GetServiceResponse, error) {
	c := access.CallerFrom(ctx)
	return &registryv1.GetServiceResponse{Instances: []*registryv1.Instance{{Service: req.GetService(), Id: c.Name}}}, nil
}

func (catalog) Register(_ context.Context, req *registryv1.RegisterRequest) (*registryv1.RegisterResponse, error) {
	return &registryv1.RegisterResponse{Instance: req.GetInstance()}, nil
}

func (catalog) Watch(_ *registryv1.WatchRequest, s registryv1.Registry_WatchServer) error {
	return s.Send(&registryv1.WatchResponse{Index: 1})
}

var catalogMethods = access.Methods{
	registryv1.Registry_GetService_FullMethodName: access.ServiceName((*registryv1.GetServiceRequest).GetService, access.Read),
	registryv1.Registry_Register_FullMethodName: access.For(func(r *registryv1.RegisterRequest) []access.Need {
		return []access.Need{access.Service(r.GetInstance().GetService(), access.Write)}
	}),
	registryv1.Registry_Watch_FullMethodName: access.ServiceName((*registryv1.WatchRequest).GetService, access.Read),
}

// catalogSpec serves catalog with methods; the registry methods the test
// does not map are mapped to Public unless strict.
func catalogSpec(methods access.Methods, extra func(rt *service.Runtime)) service.Spec {
	return catalogSpecOf(methods, extra, false)
}

func catalogSpecOf(methods access.Methods, extra func(rt *service.Runtime), strict bool) service.Spec {
	if !strict {
		all := access.Methods{}
		for _, m := range registryv1.Registry_ServiceDesc.Methods {
			all["/"+registryv1.Registry_ServiceDesc.ServiceName+"/"+m.MethodName] = access.Public
		}
		for _, s := range registryv1.Registry_ServiceDesc.Streams {
			all["/"+registryv1.Registry_ServiceDesc.ServiceName+"/"+s.StreamName] = access.Public
		}
		for k, v := range methods {
			all[k] = v
		}
		methods = all
	}
	return service.Spec{
		Name:    "catalog",
		Methods: methods,
		Start: func(_ context.Context, rt *service.Runtime) error {
			registryv1.RegisterRegistryServer(rt.GRPC, catalog{})
			if extra != nil {
				extra(rt)
			}
			return nil
		},
	}
}

// pki writes a CA and certificates for a server and a client into a
// temporary directory and returns their paths.
type pki struct {
	dir                       string
	ca, srvCert, srvKey       string
	cliCert, cliKey           string
	otherCliCert, otherCliKey string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	p.ca = filepath.Join(p.dir, "ca.pem")
	ca, err := certs.NewCA(certs.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteFiles(p.ca, filepath.Join(p.dir, "ca-key.pem"), false); err != nil {
		t.Fatal(err)
	}
	issue := func(ca *certs.CA, name string) (string, string) {
		c, k, err := ca.Issue(certs.CertOptions{Name: name, DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
		if err != nil {
			t.Fatal(err)
		}
		cf, kf := filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+"-key.pem")
		if err := certs.WritePair(cf, kf, c, k, false); err != nil {
			t.Fatal(err)
		}
		return cf, kf
	}
	p.srvCert, p.srvKey = issue(ca, "server")
	p.cliCert, p.cliKey = issue(ca, "client")
	other, err := certs.NewCA(certs.CAOptions{CommonName: "Other CA"})
	if err != nil {
		t.Fatal(err)
	}
	p.otherCliCert, p.otherCliKey = issue(other, "intruder")
	return p
}

func (p *pki) serverArgs() []string {
	return []string{"--tls-cert=" + p.srvCert, "--tls-key=" + p.srvKey, "--tls-ca=" + p.ca}
}

func (p *pki) clientTLS(t *testing.T, cert, key string) *tls.Config {
	t.Helper()
	r, err := certs.NewReloader(cert, key, p.ca)
	if err != nil {
		t.Fatal(err)
	}
	return r.ClientConfig("127.0.0.1")
}

func writeACL(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "acl.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func runSpec(ctx context.Context, spec service.Spec, args ...string) error {
	return service.Run(ctx, spec, args, service.WithEnv(config.NoEnv), service.WithLogOutput(io.Discard))
}

func TestPlaintextBeyondLoopbackRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := runSpec(ctx, catalogSpec(catalogMethods, nil), "--grpc-addr=0.0.0.0:0", "--admin-addr=127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "refusing to serve gRPC (--grpc-addr) on 0.0.0.0:0 without TLS") ||
		!strings.Contains(err.Error(), "--insecure") {
		t.Fatalf("plaintext gRPC on every interface: %v, want a refusal naming the listener and the fix", err)
	}
	// --insecure says the operator means it; TLS needs no such flag.
	servicetest.Start(t, catalogSpec(catalogMethods, nil), "--grpc-addr=0.0.0.0:0", "--insecure")
	p := newPKI(t)
	servicetest.Start(t, catalogSpec(catalogMethods, nil), append(p.serverArgs(), "--grpc-addr=0.0.0.0:0")...)
}

func TestMethodWithoutEntryRefusesStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	partial := access.Methods{registryv1.Registry_GetService_FullMethodName: access.Public}
	err := runSpec(ctx, catalogSpecOf(partial, nil, true), "--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), registryv1.Registry_Register_FullMethodName) {
		t.Fatalf("start with unmapped methods: %v, want an error naming Register", err)
	}
}

func TestTokens(t *testing.T) {
	acl := writeACL(t, `default: deny
tokens:
  - name: deployer
    sha256: `+access.HashToken("deploy-secret")+`
    rules: [{service: "web*", access: write}]
  - name: viewer
    sha256: `+access.HashToken("view-secret")+`
    rules: [{service: "*", access: read}]
`)
	inst := servicetest.Start(t, catalogSpec(catalogMethods, nil), "--acl-file="+acl)
	client := registryv1.NewRegistryClient(inst.Conn(t))
	call := func(token string, fn func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		}
		return fn(ctx)
	}
	register := func(ctx context.Context) error {
		_, err := client.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: "web", Id: "web-1"}})
		return err
	}
	registerAPI := func(ctx context.Context) error {
		_, err := client.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: "api", Id: "api-1"}})
		return err
	}
	watchAll := func(ctx context.Context) error {
		s, err := client.Watch(ctx, &registryv1.WatchRequest{})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}
	tests := []struct {
		name, token string
		fn          func(context.Context) error
		code        codes.Code
		msg         string
	}{
		{"no token", "", register, codes.Unauthenticated, `needs service "web" write`},
		{"unknown token", "guess", register, codes.Unauthenticated, "unknown token"},
		{"viewer writes", "view-secret", register, codes.PermissionDenied, `token "viewer" lacks service "web" write`},
		{"deployer writes web", "deploy-secret", register, codes.OK, ""},
		{"deployer writes api", "deploy-secret", registerAPI, codes.PermissionDenied, `lacks service "api" write`},
		{"viewer watches all", "view-secret", watchAll, codes.OK, ""},
		{"deployer watches all", "deploy-secret", watchAll, codes.PermissionDenied, `lacks service "*" read`},
		{"anonymous watches all", "", watchAll, codes.Unauthenticated, `needs service "*" read`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := call(tt.token, tt.fn)
			if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tt.code, tt.msg)
			}
		})
	}
	// The handler sees who called.
	var resp *registryv1.GetServiceResponse
	err := call("view-secret", func(ctx context.Context) (err error) {
		resp, err = client.GetService(ctx, &registryv1.GetServiceRequest{Service: "web"})
		return err
	})
	if err != nil || resp.Instances[0].Id != "viewer" {
		t.Fatalf("GetService as viewer: %v %v", resp, err)
	}
	// Health and reflection stay open to anyone.
	if err := call("", func(ctx context.Context) error {
		_, err := healthpb.NewHealthClient(inst.Conn(t)).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}); status.Code(err) == codes.Unauthenticated || status.Code(err) == codes.PermissionDenied {
		t.Fatalf("health check refused: %v", err)
	}
}

func TestACLReloadsWhileServing(t *testing.T) {
	acl := writeACL(t, "default: deny\n")
	inst := servicetest.Start(t, catalogSpec(catalogMethods, nil), "--acl-file="+acl)
	client := registryv1.NewRegistryClient(inst.Conn(t))
	get := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer new-token")
		_, err := client.GetService(ctx, &registryv1.GetServiceRequest{Service: "web"})
		return err
	}
	if status.Code(get()) != codes.Unauthenticated {
		t.Fatal("a token not in the file was accepted")
	}
	body := "default: deny\ntokens:\n  - name: late\n    sha256: " + access.HashToken("new-token") + "\n    rules: [{service: web, access: read}]\n"
	if err := os.WriteFile(acl, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Minute)
	if err := os.Chtimes(acl, future, future); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for get() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the new token was not accepted within 10s of the file changing")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A broken file keeps the rules in force.
	if err := os.WriteFile(acl, []byte("tokens: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	later := future.Add(time.Minute)
	_ = os.Chtimes(acl, later, later)
	for i := 0; i < 30; i++ {
		if err := get(); err != nil {
			t.Fatalf("after a broken ACL file: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	acl := writeACL(t, "default: deny\ntokens:\n  - name: client-cert\n    cert: client\n    rules: [{service: \"*\", access: read}]\n")
	inst := servicetest.Start(t, catalogSpec(catalogMethods, nil), append(p.serverArgs(), "--acl-file="+acl)...)
	addr := inst.Addrs["grpc"]
	get := func(creds credentials.TransportCredentials) (*registryv1.GetServiceResponse, error) {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return registryv1.NewRegistryClient(cc).GetService(ctx, &registryv1.GetServiceRequest{Service: "web"})
	}
	if _, err := get(insecure.NewCredentials()); err == nil {
		t.Fatal("a plaintext client was served")
	}
	noCert := p.clientTLS(t, "", "")
	if _, err := get(credentials.NewTLS(noCert)); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	if _, err := get(credentials.NewTLS(p.clientTLS(t, p.otherCliCert, p.otherCliKey))); err == nil {
		t.Fatal("a client certificate of another CA was accepted")
	}
	resp, err := get(credentials.NewTLS(p.clientTLS(t, p.cliCert, p.cliKey)))
	if err != nil {
		t.Fatalf("client with a certificate of the CA: %v", err)
	}
	if resp.Instances[0].Id != "client-cert" {
		t.Fatalf("caller %q, want the ACL entry of the certificate", resp.Instances[0].Id)
	}
}

// TestDialCarriesTLSAndToken: a service's own client (rt.Dial) presents
// its certificate and --token.
func TestDialCarriesTLSAndToken(t *testing.T) {
	p := newPKI(t)
	acl := writeACL(t, "default: deny\ntokens:\n  - name: peer\n    sha256: "+access.HashToken("peer-token")+"\n    rules: [{service: \"*\", access: read}]\n")
	server := servicetest.Start(t, catalogSpec(catalogMethods, nil), append(p.serverArgs(), "--acl-file="+acl)...)
	got := make(chan *service.Runtime, 1)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("peer-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	servicetest.Start(t, catalogSpec(catalogMethods, func(rt *service.Runtime) { got <- rt }),
		"--tls-cert="+p.cliCert, "--tls-key="+p.cliKey, "--tls-ca="+p.ca, "--token-file="+tokenFile)
	rt := <-got
	cc, err := rt.Dial(server.Addrs["grpc"])
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := registryv1.NewRegistryClient(cc).GetService(ctx, &registryv1.GetServiceRequest{Service: "web"})
	if err != nil || resp.Instances[0].Id != "peer" {
		t.Fatalf("call through rt.Dial: %v %v", resp, err)
	}
}

func TestAdminBeyondLoopback(t *testing.T) {
	extra := func(rt *service.Runtime) {
		rt.Admin.HandleFunc("GET /dashboard", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "private") })
	}
	get := func(client *http.Client, url string) int {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	port := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }

	plain := servicetest.Start(t, catalogSpec(catalogMethods, extra), "--admin-addr=0.0.0.0:0", "--insecure")
	base := "http://127.0.0.1:" + port(plain.Addrs["admin"])
	for path, want := range map[string]int{"/metrics": 200, "/healthz": 200, "/readyz": 200, "/dashboard": 403} {
		if got := get(http.DefaultClient, base+path); got != want {
			t.Errorf("plaintext admin on every interface: %s = %d, want %d", path, got, want)
		}
	}
	loop := servicetest.Start(t, catalogSpec(catalogMethods, extra))
	if got := get(http.DefaultClient, "http://"+loop.Addrs["admin"]+"/dashboard"); got != 200 {
		t.Errorf("loopback admin: /dashboard = %d, want 200", got)
	}

	p := newPKI(t)
	secure := servicetest.Start(t, catalogSpec(catalogMethods, extra), append(p.serverArgs(), "--admin-addr=0.0.0.0:0")...)
	url := "https://127.0.0.1:" + port(secure.Addrs["admin"])
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: p.clientTLS(t, "", "")}}
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: p.clientTLS(t, p.cliCert, p.cliKey)}}
	if got := get(noCert, url+"/metrics"); got != 200 {
		t.Errorf("TLS admin without a client certificate: /metrics = %d, want 200", got)
	}
	if got := get(noCert, url+"/dashboard"); got != 403 {
		t.Errorf("TLS admin without a client certificate: /dashboard = %d, want 403", got)
	}
	if got := get(withCert, url+"/dashboard"); got != 200 {
		t.Errorf("TLS admin with a client certificate: /dashboard = %d, want 200", got)
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7100": true, "127.3.2.1:1": true, "[::1]:7100": true, "localhost:7100": true,
		":7100": false, "0.0.0.0:7100": false, "[::]:7100": false, "192.0.2.1:7100": false, "example.test:7100": false,
	} {
		if got := service.IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
