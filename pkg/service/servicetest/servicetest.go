// Package servicetest starts a service.Spec inside a test, on loopback port
// 0, and stops it when the test ends.
package servicetest

import (
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchboard-net/switchboard/pkg/access"
	"github.com/switchboard-net/switchboard/pkg/config"
	"github.com/switchboard-net/switchboard/pkg/service"
)

// Instance is a running service.
type Instance struct {
	// Addrs holds every listener's bound address by name ("grpc", "admin", ...).
	Addrs  map[string]string
	cancel context.CancelFunc
	done   chan error
	log    *testWriter
}

// Start runs spec with args plus --grpc-addr and --admin-addr on
// 127.0.0.1:0, ignoring the environment, and waits until it serves. The
// service stops at test cleanup; Stop stops it earlier.
func Start(t testing.TB, spec service.Spec, args ...string) *Instance {
	t.Helper()
	return StartEnv(t, spec, config.NoEnv, args...)
}

// StartEnv is Start with an environment lookup (for OTEL_* variables).
func StartEnv(t testing.TB, spec service.Spec, env config.LookupFunc, args ...string) *Instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	inst := &Instance{cancel: cancel, done: make(chan error, 1), log: &testWriter{t: t}}
	ready := make(chan map[string]string, 1)
	all := append([]string{"--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--shutdown-grace=5s"}, args...)
	go func() {
		inst.done <- service.Run(ctx, spec, all,
			service.WithEnv(env),
			service.WithLogOutput(inst.log),
			service.WithReady(func(a map[string]string) { ready <- a }))
	}()
	select {
	case inst.Addrs = <-ready:
	case err := <-inst.done:
		cancel()
		t.Fatalf("%s did not start: %v", spec.Name, err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("%s did not start within 30s", spec.Name)
	}
	t.Cleanup(func() { _ = inst.Stop() })
	return inst
}

// Stop cancels the service and returns what Run returned (nil on a clean
// shutdown). Calling it twice is fine.
func (i *Instance) Stop() error {
	i.cancel()
	err, ok := <-i.done
	if ok {
		close(i.done)
	}
	i.log.closed.Store(true)
	return err
}

// Conn returns a plain client connection to the service's gRPC address,
// closed at test cleanup.
func (i *Instance) Conn(t testing.TB) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(i.Addrs["grpc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// testWriter sends a service's logs to the test log (shown on failure or
// -v) until the service has stopped.
type testWriter struct {
	t      testing.TB
	closed atomic.Bool
	mu     sync.Mutex
	all    strings.Builder // every line, for Logs
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.all.Write(p)
	w.mu.Unlock()
	if !w.closed.Load() {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// Logs returns everything the service has logged so far.
func (i *Instance) Logs() string {
	i.log.mu.Lock()
	defer i.log.mu.Unlock()
	return i.log.all.String()
}

var _ io.Writer = (*testWriter)(nil)

// Tool returns the path of an external program a test needs (grpcurl, dig,
// consul, ...). When it is missing the test is skipped, except under CI
// (CI set), where a missing tool is a failure: CI installs every tool.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required under CI but not found: %v (scripts/setup.sh installs it)", name, err)
	}
	t.Skipf("%s not found (run scripts/setup.sh): %v", name, err)
	return ""
}

// CheckMethods fails the test when a method of desc has no entry in m: the
// table beside a service's server code must cover every RPC it serves.
func CheckMethods(t testing.TB, desc *grpc.ServiceDesc, m access.Methods) {
	t.Helper()
	var names []string
	for _, md := range desc.Methods {
		names = append(names, md.MethodName)
	}
	for _, sd := range desc.Streams {
		names = append(names, sd.StreamName)
	}
	for _, n := range names {
		full := "/" + desc.ServiceName + "/" + n
		if _, ok := m.Lookup(full); !ok {
			t.Errorf("%s has no permission entry", full)
		}
	}
	for full := range m {
		if !strings.HasPrefix(full, "/"+desc.ServiceName+"/") {
			t.Errorf("permission entry %s is not a method of %s", full, desc.ServiceName)
		}
	}
}
