package registry_test

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry"
)

func grpcurl(t *testing.T, bin, addr, method, data string) string {
	t.Helper()
	args := []string{"-plaintext", "-max-time", "10"}
	if data != "" {
		args = append(args, "-d", data)
	}
	out, err := exec.Command(bin, append(args, addr, method)...).CombinedOutput()
	if err != nil {
		t.Fatalf("grpcurl %s %s: %v\n%s", method, data, err, out)
	}
	return string(out)
}

// TestGrpcurl registers, lists, gets and watches with the real grpcurl
// against the registry service (the commands docs/registry.md shows).
func TestGrpcurl(t *testing.T) {
	bin := servicetest.Tool(t, "grpcurl")
	inst := servicetest.Start(t, registry.Spec(), "--data-dir", t.TempDir())
	addr := inst.Addrs["grpc"]
	const svc = "switchboard.registry.v1.Registry/"

	if out := grpcurl(t, bin, addr, "list", ""); !strings.Contains(out, "switchboard.registry.v1.Registry") {
		t.Fatalf("grpcurl list lacks the registry:\n%s", out)
	}

	// A watch started first sees the registration arrive.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watch := exec.CommandContext(ctx, bin, "-plaintext", "-d", `{"service":"web"}`, addr, svc+"Watch")
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = watch.Wait() }()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitLine := func(what string) {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("watch ended before %s", what)
				}
				if strings.Contains(l, what) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("watch did not show %s", what)
			}
		}
	}
	waitLine(`"index"`) // the current (empty) snapshot

	out := grpcurl(t, bin, addr, svc+"Register",
		`{"instance":{"service":"web","id":"web-1","address":"127.0.0.1","port":8080,"tags":["primary"],"check":{"kind":"CHECK_KIND_TTL","interval":"30s"}}}`)
	if !strings.Contains(out, `"HEALTH_STATUS_PASSING"`) || !strings.Contains(out, `"weight": 1`) {
		t.Fatalf("Register output:\n%s", out)
	}
	waitLine(`"web-1"`)

	out = grpcurl(t, bin, addr, svc+"ListServices", "")
	if !strings.Contains(out, `"name": "web"`) || !strings.Contains(out, `"passing": 1`) {
		t.Fatalf("ListServices output:\n%s", out)
	}
	grpcurl(t, bin, addr, svc+"Heartbeat", `{"service":"web","id":"web-1"}`)
	out = grpcurl(t, bin, addr, svc+"GetService", `{"service":"web"}`)
	if !strings.Contains(out, `"id": "web-1"`) || !strings.Contains(out, `"port": 8080`) {
		t.Fatalf("GetService output:\n%s", out)
	}

	// Bad input: InvalidArgument naming the field.
	bad, err := exec.Command(bin, "-plaintext", "-max-time", "10", "-d",
		`{"instance":{"service":"web","id":"web-2","address":"127.0.0.1","port":70000}}`, addr, svc+"Register").CombinedOutput()
	if err == nil || !strings.Contains(string(bad), "InvalidArgument") || !strings.Contains(string(bad), "instance.port") {
		t.Fatalf("Register with port 70000: %v\n%s", err, bad)
	}
}

func TestAdmin(t *testing.T) {
	inst := servicetest.Start(t, registry.Spec(), "--data-dir", t.TempDir())
	c := registryv1.NewRegistryClient(inst.Conn(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: "api", Id: "a", Address: "10.0.0.1", Port: 80}}); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]string{
		"/readyz":  {"ready"},
		"/metrics": {`switchboard_registry_operations_total{op="register"} 1`, `switchboard_registry_instances{store="embedded"} 1`, "switchboard_registry_watch_streams", "switchboard_registry_backend_errors_total"},
	} {
		resp, err := http.Get("http://" + inst.Addrs["admin"] + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, w := range want {
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), w) {
				t.Errorf("GET %s = %d, want %q in:\n%.2000s", path, resp.StatusCode, w, body)
			}
		}
	}
}

func TestReadyzFailsWithoutBackend(t *testing.T) {
	// Nothing listens on this etcd endpoint: the registry starts, is not ready.
	inst := servicetest.Start(t, registry.Spec(), "--store=etcd", "--etcd-endpoints=127.0.0.1:1")
	resp, err := http.Get("http://" + inst.Addrs["admin"] + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "store") {
		t.Fatalf("GET /readyz = %d %q, want 503 naming the store", resp.StatusCode, body)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--store=zookeeper"}, {"--backend-timeout=0s"}, {"--store=etcd", "--etcd-endpoints= "}} {
		err := service.Run(context.Background(), registry.Spec(), append([]string{"--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0"}, args...),
			service.WithLogOutput(io.Discard))
		var fe *service.FlagError
		if !errors.As(err, &fe) && !errors.Is(err, flag.ErrHelp) {
			t.Errorf("Run(%v) = %v, want a flag error", args, err)
		}
	}
}

// TestWatchFanOut: many watchers of one registry all get a change, and a
// watcher resuming from an index of an earlier run gets the current
// snapshot at once.
func TestWatchFanOut(t *testing.T) {
	inst := servicetest.Start(t, registry.Spec(), "--data-dir", t.TempDir())
	c := registryv1.NewRegistryClient(inst.Conn(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const watchers = 200
	streams := make([]registryv1.Registry_WatchClient, watchers)
	for i := range streams {
		st, err := c.Watch(ctx, &registryv1.WatchRequest{Service: "fan"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
		streams[i] = st
	}
	if _, err := c.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: "fan", Id: "one", Address: "10.0.0.1", Port: 1}}); err != nil {
		t.Fatal(err)
	}
	for i, st := range streams {
		m, err := st.Recv()
		if err != nil || len(m.Instances) != 1 || m.Instances[0].Id != "one" {
			t.Fatalf("watcher %d got %v, %v", i, m, err)
		}
	}
	old, err := c.Watch(ctx, &registryv1.WatchRequest{Service: "fan", AfterIndex: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := old.Recv(); err != nil || len(m.Instances) != 1 {
		t.Fatalf("watch resuming from a future index got %v, %v; want the current snapshot", m, err)
	}
}
