package tests

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/balancer"
	"github.com/switchboard-net/switchboard/services/edge"
	"github.com/switchboard-net/switchboard/services/registry"
)

// TestEdgeWithRealClients drives a running edge with the tools an operator
// would use: curl through the proxy, socat on the runtime socket, grpcurl
// on the Edge gRPC API.
func TestEdgeWithRealClients(t *testing.T) {
	curl := servicetest.Tool(t, "curl")
	socat := servicetest.Tool(t, "socat")
	grpcurl := servicetest.Tool(t, "grpcurl")

	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app saw %s%s from %s", r.Host, r.URL.Path, r.Header.Get("X-Forwarded-For"))
	}))
	defer app.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "edge.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`
services:
  app: [%q]
routes:
  - {name: app, host: app.test, path_prefix: /, service: app}
`, strings.TrimPrefix(app.URL, "http://"))), 0o644)
	sock := filepath.Join(dir, "rt.sock")
	inst := servicetest.Start(t, edge.Spec(), "--http-addr=127.0.0.1:0", "--wire-addr=127.0.0.1:0",
		"--balancer-addr=", "--config="+conf, "--runtime-socket="+sock)

	_, port, _ := net.SplitHostPort(inst.Addrs["http"])
	out := edgeRun(t, curl, "-sS", "--resolve", "app.test:"+port+":127.0.0.1", "http://app.test:"+port+"/hello")
	if out != "app saw app.test:"+port+"/hello from 127.0.0.1" {
		t.Fatalf("curl: %q", out)
	}
	out = edgeRun(t, curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: nowhere.test", "http://"+inst.Addrs["http"]+"/")
	if out != "404" {
		t.Fatalf("curl no route: %q", out)
	}

	runtime := func(cmd string) string {
		c := exec.Command(socat, "-t2", "-", "UNIX-CONNECT:"+sock)
		c.Stdin = strings.NewReader(cmd + "\n")
		b, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("socat %q: %v: %s", cmd, err, b)
		}
		return string(b)
	}
	if out := runtime("show backends app"); !strings.Contains(out, strings.TrimPrefix(app.URL, "http://")) {
		t.Fatalf("show backends: %q", out)
	}
	if out := runtime("bogus"); !strings.HasPrefix(out, `error: unknown command "bogus"`) {
		t.Fatalf("bogus: %q", out)
	}

	out = edgeRun(t, grpcurl, "-plaintext", inst.Addrs["grpc"], "switchboard.edge.v1.Edge/ListRoutes")
	if !strings.Contains(out, `"host": "app.test"`) || !strings.Contains(out, `"service": "app"`) {
		t.Fatalf("grpcurl ListRoutes: %s", out)
	}
	c := exec.Command(grpcurl, "-plaintext", "-d", `{"service":"app"}`, inst.Addrs["grpc"], "switchboard.edge.v1.Edge/SetBackend")
	b, _ := c.CombinedOutput()
	if !strings.Contains(string(b), "InvalidArgument") || !strings.Contains(string(b), "id") {
		t.Fatalf("grpcurl SetBackend without id: %s", b)
	}
}

func edgeRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	c := exec.Command(name, args...)
	c.Stderr = io.Discard
	b, err := c.Output()
	if err != nil {
		t.Fatalf("%s %v: %v (%s)", filepath.Base(name), args, err, b)
	}
	return strings.TrimSpace(string(b))
}

// TestEdgeRoutesFromTheRegistry runs registry, balancer and edge together:
// an instance registered with the tag edge.route=/it becomes a route on the
// edge, live, through the balancer's endpoint stream.
func TestEdgeRoutesFromTheRegistry(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "registered app at %s", r.URL.Path)
	}))
	defer app.Close()
	reg := servicetest.Start(t, registry.Spec(), "--data-dir="+t.TempDir())
	bal := servicetest.Start(t, balancer.Spec(), "--registry-addr="+reg.Addrs["grpc"], "--data-dir="+t.TempDir())
	ed := servicetest.Start(t, edge.Spec(), "--http-addr=127.0.0.1:0", "--wire-addr=127.0.0.1:0",
		"--balancer-addr="+bal.Addrs["grpc"], "--allow-loopback", "--runtime-socket="+filepath.Join(t.TempDir(), "rt.sock"))

	host, port, _ := net.SplitHostPort(strings.TrimPrefix(app.URL, "http://"))
	p, _ := strconv.Atoi(port)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := registryv1.NewRegistryClient(reg.Conn(t)).Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
		Service: "itapp", Id: "itapp-1", Address: host, Port: uint32(p), Tags: []string{"edge.route=/it"}}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + ed.Addrs["http"] + "/it/x")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && string(b) == "registered app at /it/x" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("through the edge: %d %q", resp.StatusCode, b)
			}
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
