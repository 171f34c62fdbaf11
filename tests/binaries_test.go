package tests

import (
	"bufio"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
)

// TestServiceBinaries builds each service's binary and runs it as an
// operator would: it serves grpcurl (its own service and grpc.health.v1),
// and SIGTERM makes it exit 0.
func TestServiceBinaries(t *testing.T) {
	grpcurl := servicetest.Tool(t, "grpcurl")
	dir := t.TempDir()
	bins := map[string]string{
		"registry": "switchboard.registry.v1.Registry",
		"balancer": "switchboard.balancer.v1.Balancer",
		"resolver": "switchboard.resolver.v1.Resolver",
		"prober":   "switchboard.prober.v1.Prober",
		"edge":     "switchboard.edge.v1.Edge",
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for name := range bins {
		args = append(args, "github.com/switchboard-net/switchboard/services/"+name+"/cmd/"+name)
	}
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// Every listener on a free loopback port; nothing reaches the network.
	extra := map[string][]string{
		"registry": {"--store=embedded", "--data-dir=" + t.TempDir()},
		"balancer": {"--data-dir=" + t.TempDir()},
		"resolver": {"--dns-addr=127.0.0.1:0"},
		"prober":   {"--bandwidth-addr=127.0.0.1:0", "--discovery-group=", "--data-dir=" + t.TempDir()},
		"edge":     {"--http-addr=127.0.0.1:0", "--wire-addr=127.0.0.1:0", "--runtime-socket=" + filepath.Join(t.TempDir(), "rt.sock")},
	}
	ready := regexp.MustCompile(`msg=serving .*grpc=(\S+)`)
	for name, svc := range bins {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(filepath.Join(dir, name), append([]string{"--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0"}, extra[name]...)...)
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			addr := make(chan string, 1)
			var (
				mu   sync.Mutex
				logs strings.Builder
			)
			go func() {
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					mu.Lock()
					logs.WriteString(sc.Text() + "\n")
					mu.Unlock()
					if m := ready.FindStringSubmatch(sc.Text()); m != nil {
						addr <- m[1]
					}
				}
				io.Copy(io.Discard, stderr)
			}()
			var grpcAddr string
			select {
			case grpcAddr = <-addr:
			case <-time.After(30 * time.Second):
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("%s did not log ready:\n%s", name, logs.String())
			}
			out, err := exec.Command(grpcurl, "-plaintext", "-max-time", "10", grpcAddr, "list").CombinedOutput()
			if err != nil || !strings.Contains(string(out), svc) || !strings.Contains(string(out), "grpc.health.v1.Health") {
				t.Fatalf("grpcurl list: %v\n%s", err, out)
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("%s exited with %v after SIGTERM", name, err)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("%s did not exit within 20s of SIGTERM", name)
			}
		})
	}
}
