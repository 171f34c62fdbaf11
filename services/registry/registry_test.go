package registry_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchboard-net/switchboard/pkg/config"
	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry"
	"github.com/switchboard-net/switchboard/services/registry/storetest"
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
		"/readyz": {"ready"},
		"/metrics": {`switchboard_registry_operations_total{op="register"} 1`, `switchboard_registry_instances{store="embedded"} 1`, "switchboard_registry_watch_streams", "switchboard_registry_backend_errors_total",
			`switchboard_registry_backend_up{store="embedded"} 1`},
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

// logBuffer collects a service's logs for a test to read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// scrape returns the lines of the admin port's /metrics that start with
// one of the names.
func scrape(t *testing.T, admin string, names ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		for _, n := range names {
			if strings.HasPrefix(sc.Text(), n) {
				out = append(out, sc.Text())
			}
		}
	}
	return out
}

// TestConsulOutageReported runs the registry on a real Consul, kills and
// restarts Consul (a dev agent: it comes back empty) and checks what an
// operator sees: the log lines of the loss and the restore, and the
// backend-up, restore-duration and restored-instances metrics.
func TestConsulOutageReported(t *testing.T) {
	c := storetest.StartConsul(t)
	logs := &logBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan map[string]string, 1)
	go func() {
		done <- service.Run(ctx, registry.Spec(), []string{
			"--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--log-format=text",
			"--store=consul", "--consul-addr=" + c.Addr, "--consul-prefix=test/" + t.Name() + "/", "--consul-wait=2s",
		}, service.WithEnv(config.NoEnv), service.WithLogOutput(logs), service.WithReady(func(a map[string]string) { ready <- a }))
	}()
	t.Cleanup(func() { cancel(); <-done })
	var addrs map[string]string
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("registry did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("registry did not start within 30s")
	}
	admin := addrs["admin"]
	metric := func(want ...string) func() string {
		return func() string {
			got := scrape(t, admin, "switchboard_registry_backend_up", "switchboard_registry_restore", "switchboard_registry_stale")
			for _, w := range want {
				if !slices.Contains(got, w) {
					return fmt.Sprintf("no %q in %q", w, got)
				}
			}
			return ""
		}
	}
	storetest.Eventually(t, "backend up", metric(`switchboard_registry_backend_up{store="consul"} 1`, `switchboard_registry_restored_instances_total{store="consul"} 0`))

	cc, err := grpc.NewClient(addrs["grpc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cl := registryv1.NewRegistryClient(cc)
	rctx, rcancel := context.WithTimeout(context.Background(), storetest.Wait)
	defer rcancel()
	for i := range 3 {
		in := &registryv1.Instance{Service: "reported", Id: fmt.Sprint("r-", i), Address: "127.0.0.1", Port: 80}
		if _, err := cl.Register(rctx, &registryv1.RegisterRequest{Instance: in}); err != nil {
			t.Fatal(err)
		}
	}

	c.Stop(t)
	storetest.Eventually(t, "backend down", metric(`switchboard_registry_backend_up{store="consul"} 0`, `switchboard_registry_stale{store="consul"} 1`))
	c.Start(t)
	storetest.Eventually(t, "restored", metric(
		`switchboard_registry_backend_up{store="consul"} 1`,
		`switchboard_registry_stale{store="consul"} 0`,
		`switchboard_registry_restored_instances_total{store="consul"} 3`,
		`switchboard_registry_restore_failures_total{store="consul"} 0`,
		`switchboard_registry_restore_duration_seconds_count{store="consul"} 1`,
	))
	text := logs.String()
	for _, want := range []string{
		`level=WARN msg="consul lost: reads answer from the last catalog (stale), writes fail until it is back"`,
		`level=INFO msg="consul answers again: restoring what it lost"`,
		`accepted_instances=3 missing_instances=3`,
		`level=INFO msg="restore finished"`,
		`restored_instances=3 restored_records=0 failed=0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("log lacks %s\n%s", want, text)
		}
	}
}
