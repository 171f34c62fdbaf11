package storetest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
)

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return ports
}

// Proc is an external server (etcd, Consul) a test starts, kills and
// restarts on the same ports and data.
type Proc struct {
	name  string
	bin   string
	args  []string
	ready func(ctx context.Context) error

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	out    *strings.Builder
}

// Start starts the process and waits until it is ready.
func (p *Proc) Start(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	out := &strings.Builder{}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = &lockedWriter{b: out}, &lockedWriter{b: out}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		t.Fatalf("start %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.out, p.exited = cmd, out, exited
	p.mu.Unlock()
	go func() { _ = cmd.Wait(); close(exited) }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	delay := 20 * time.Millisecond
	for {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		err := p.ready(rctx)
		rcancel()
		if err == nil {
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s exited while starting: %s", p.name, p.output())
		case <-ctx.Done():
			t.Fatalf("%s not ready within 30s: %v\n%s", p.name, err, p.output())
		case <-time.After(delay):
		}
		delay = min(delay*2, 200*time.Millisecond)
	}
}

func (p *Proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Stop kills the process (SIGKILL: an outage, not a shutdown) and waits
// until its port is closed.
func (p *Proc) Stop(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Errorf("%s did not exit within 10s of SIGKILL", p.name)
	}
}

type lockedWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() < 1<<20 {
		w.b.Write(p)
	}
	return len(p), nil
}

// Etcd is a single-member etcd server on loopback ports with a temporary
// data directory.
type Etcd struct {
	*Proc
	// Endpoint is the client URL.
	Endpoint string
}

// StartEtcd starts etcd (from PATH; skips, or fails under CI, when it is
// missing) and stops it at test cleanup.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	bin := servicetest.Tool(t, "etcd")
	ports := freePorts(t, 2)
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	e := &Etcd{Endpoint: client}
	e.Proc = &Proc{
		name: "etcd", bin: bin,
		args: []string{
			"--name", "test", "--data-dir", t.TempDir(),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", "test=" + peer,
			// Short ticks: leases as short as 1s, quick elections.
			"--heartbeat-interval", "50", "--election-timeout", "500",
			"--log-level", "error",
		},
		ready: func(ctx context.Context) error { return httpOK(ctx, client+"/health", `"true"`) },
	}
	e.Start(t)
	t.Cleanup(func() { e.Stop(t) })
	return e
}

// Consul is a `consul agent -dev` on loopback ports.
type Consul struct {
	*Proc
	// Addr is the HTTP address (host:port).
	Addr  string
	ports []int
}

// StartConsul starts a Consul dev agent named "test" (from PATH; skips, or
// fails under CI, when it is missing) and stops it at test cleanup. A dev
// agent keeps its data in memory: a restart loses every registration.
func StartConsul(t testing.TB) *Consul {
	t.Helper()
	bin := servicetest.Tool(t, "consul")
	p := freePorts(t, 4)
	addr := fmt.Sprintf("127.0.0.1:%d", p[0])
	c := &Consul{Addr: addr, ports: p}
	c.Proc = &Proc{
		name: "consul", bin: bin, args: c.agentArgs("test", ""),
		ready: func(ctx context.Context) error {
			return httpOK(ctx, "http://"+addr+"/v1/status/leader", `:`)
		},
	}
	c.Start(t)
	t.Cleanup(func() { c.Stop(t) })
	return c
}

// agentArgs are the agent's arguments with a node name and, if not empty, a
// data directory (a dev agent keeps its node ID and the services registered
// through its API there).
func (c *Consul) agentArgs(node, dataDir string) []string {
	p := c.ports
	args := []string{
		"agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-node", node,
		"-http-port", strconv.Itoa(p[0]), "-serf-lan-port", strconv.Itoa(p[1]),
		"-serf-wan-port", strconv.Itoa(p[2]), "-server-port", strconv.Itoa(p[3]),
		"-dns-port", "-1", "-grpc-port", "-1", "-hcl", "ports { grpc_tls = -1 }",
		"-log-level", "error",
	}
	if dataDir != "" {
		return append(args, "-data-dir", dataDir)
	}
	return append(args, "-disable-host-node-id")
}

// Replace kills the agent and starts a new one on the same address with
// another node name and nothing of the old one's state: a Consul container
// recreated. With dataDir (empty at first) the new agent keeps its node ID
// and the services registered with it there, and a restart reloads them;
// without, it keeps everything in memory, as the compose stack's
// `consul agent -dev` does, and a restart loses every registration. Later
// Stop and Start restart the new agent with the same settings.
func (c *Consul) Replace(t testing.TB, node, dataDir string) {
	t.Helper()
	c.Stop(t)
	c.mu.Lock()
	c.Proc.args = c.agentArgs(node, dataDir)
	c.mu.Unlock()
	c.Start(t)
}

func httpOK(ctx context.Context, url, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	if resp.StatusCode != http.StatusOK || !strings.Contains(b.String(), want) {
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, b.String())
	}
	return nil
}
