//go:build linux

package edge_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReloadOnSIGHUP: the edge program reloads its config file on SIGHUP
// (with file watching off): a refused file logs one line with its file,
// line and field and changes nothing; a good one moves the route, and a
// listener change is logged as needing a restart.
func TestReloadOnSIGHUP(t *testing.T) {
	a, b := backend(t, "a"), backend(t, "b")
	dir := t.TempDir()
	conf := filepath.Join(dir, "edge.yaml")
	sock := filepath.Join(dir, "rt.sock")
	writeConfig(t, conf, fmt.Sprintf("routes:\n  - name: app\n    addresses: [%q]\n", addr(a.URL)), false)
	p := startEdgeProcess(t, "--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--http-addr=127.0.0.1:0",
		"--wire-addr=127.0.0.1:0", "--runtime-socket="+sock, "--config="+conf, "--config-poll=0",
		"--balancer-addr=", "--registry-addr=", "--prober-addr=")
	defer p.cmd.Process.Kill()
	httpAddr := p.await(regexp.MustCompile(`msg=listening .*listener=http addr=(\S+)`), 60*time.Second)
	p.await(regexp.MustCompile(`msg=(ready)`), 30*time.Second)
	hc := &http.Client{Timeout: 5 * time.Second}
	if _, got := body(hc, "http://"+httpAddr+"/"); got != "a" {
		t.Fatalf("before: %q", got)
	}

	writeConfig(t, conf, "routes:\n  - name: app\n    addresses: [\"127.0.0.1:1\"]\n    policy: leastconn\n", true)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line := p.await(regexp.MustCompile(`(msg="config reload refused.*)`), 10*time.Second)
	if want := fmt.Sprintf(`err="%s:4: routes[0].policy: unknown policy \"leastconn\"`, conf); !strings.Contains(line, want) || !strings.Contains(line, "trigger=sighup") {
		t.Fatalf("refusal logged as\n%s\nwant it to contain %s", line, want)
	}
	if _, got := body(hc, "http://"+httpAddr+"/"); got != "a" {
		t.Fatalf("after a refused reload: %q, want a", got)
	}

	writeConfig(t, conf, fmt.Sprintf("routes:\n  - name: app\n    addresses: [%q]\ntcp:\n  - {listen: \"127.0.0.1:0\", service: db}\n", addr(b.URL)), true)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line = p.await(regexp.MustCompile(`(msg="config reloaded.*)`), 10*time.Second)
	if !strings.Contains(line, "needs a restart (SIGUSR2): tcp[0] added") || !strings.Contains(line, "version=2") {
		t.Fatalf("reload logged as\n%s", line)
	}
	if _, got := body(hc, "http://"+httpAddr+"/"); got != "b" {
		t.Fatalf("after SIGHUP: %q, want b", got)
	}
	if show := runtimeCmd(t, sock, "show config"); !strings.Contains(show, "(sighup)") || !strings.Contains(show, "needs_restart  tcp[0] added") {
		t.Fatalf("show config:\n%s", show)
	}
}
