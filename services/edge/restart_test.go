//go:build linux

package edge_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// edgeProcs runs the edge binary and follows its log, and its successors'
// (they share its standard error).
type edgeProcs struct {
	t    *testing.T
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs strings.Builder
	seen chan string // every log line
}

// buildEdge builds the edge binary into dir.
func buildEdge(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "edge")
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/edge").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func startEdgeProcess(t *testing.T, args ...string) *edgeProcs {
	t.Helper()
	bin := buildEdge(t, t.TempDir())
	p := &edgeProcs{t: t, seen: make(chan string, 4096)}
	p.cmd = exec.Command(bin, args...)
	// A pipe of our own, not StderrPipe: Wait would close that when the
	// first process exits, and its successor, writing on, would die of
	// SIGPIPE. This one stays open until every process writing to it ends.
	stderr, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = w
	err = p.cmd.Start()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer stderr.Close()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.seen <- sc.Text():
			default:
			}
		}
	}()
	return p
}

// await returns the first submatch of re in a log line to come, within d.
func (p *edgeProcs) await(re *regexp.Regexp, d time.Duration) string {
	p.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case line := <-p.seen:
			if m := re.FindStringSubmatch(line); m != nil {
				return m[1]
			}
		case <-deadline:
			p.mu.Lock()
			defer p.mu.Unlock()
			p.t.Fatalf("no log line matching %s within %v; log:\n%s", re, d, p.logs.String())
		}
	}
}

func (p *edgeProcs) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// becomeSubreaper makes this test process adopt orphaned descendants, so
// that it can wait for the successor edge once its parent has exited.
func becomeSubreaper(t *testing.T) {
	const prSetChildSubreaper = 36
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		t.Skipf("PR_SET_CHILD_SUBREAPER: %v", e)
	}
	t.Cleanup(func() { syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 0, 0) })
}

// waitPid waits for an adopted process to exit, within d (then kills it).
func waitPid(t *testing.T, pid int, d time.Duration) syscall.WaitStatus {
	t.Helper()
	type res struct {
		ws  syscall.WaitStatus
		err error
	}
	ch := make(chan res, 1)
	go func() {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		ch <- res{ws, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("wait4 %d: %v", pid, r.err)
		}
		return r.ws
	case <-time.After(d):
		syscall.Kill(pid, syscall.SIGKILL)
		<-ch
		t.Fatalf("process %d did not exit within %v", pid, d)
	}
	return 0
}

// loadCounts is what the load clients saw.
type loadCounts struct {
	ok, failed    atomic.Int64
	okNew, okKept atomic.Int64 // answered on a new connection / a kept-alive one
	closeAnswers  atomic.Int64 // answers carrying Connection: close on a keep-alive client
	retried       atomic.Int64 // requests net/http sent twice (a kept-alive connection closed under it)
	mu            sync.Mutex
	firstErrs     []string
}

func (c *loadCounts) fail(err string) {
	c.failed.Add(1)
	c.mu.Lock()
	if len(c.firstErrs) < 5 {
		c.firstErrs = append(c.firstErrs, err)
	}
	c.mu.Unlock()
}

// runLoad sends GETs to url from keepAlive clients that reuse connections
// and fresh clients that open one per request, until stop is closed.
func runLoad(url string, keepAlive, fresh int, stop <-chan struct{}, c *loadCounts) *sync.WaitGroup {
	var wg sync.WaitGroup
	client := func(disableKeepAlives bool) {
		defer wg.Done()
		tr := &http.Transport{DisableKeepAlives: disableKeepAlives, MaxIdleConnsPerHost: 1}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		for {
			select {
			case <-stop:
				return
			default:
			}
			var conns int
			var reused bool
			trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { conns++; reused = i.Reused }}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url, nil)
			resp, err := hc.Do(req)
			if err != nil {
				c.fail(err.Error())
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(b) != "ok" {
				c.fail(fmt.Sprintf("%s %q", resp.Status, b))
				continue
			}
			c.ok.Add(1)
			if reused {
				c.okKept.Add(1)
			} else {
				c.okNew.Add(1)
			}
			if conns > 1 {
				c.retried.Add(1)
			}
			if !disableKeepAlives && resp.Close {
				c.closeAnswers.Add(1)
			}
		}
	}
	for range keepAlive {
		wg.Add(1)
		go client(false)
	}
	for range fresh {
		wg.Add(1)
		go client(true)
	}
	return &wg
}

// TestRestartUnderLoad restarts a real edge process with SIGUSR2, three
// times in a row, while keep-alive and new-connection clients send GETs:
// each time a new process takes the listening sockets over, the old one
// drains and exits 0, and no request fails (net/http retries a GET whose
// kept-alive connection the old process closed, as HTTP allows for
// idempotent requests). With --drain-delay, kept-alive clients are first
// told to move with Connection: close.
func TestRestartUnderLoad(t *testing.T) {
	becomeSubreaper(t)
	back := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(back.Close)
	for _, delay := range []string{"0s", "500ms"} {
		t.Run("drain-delay="+delay, func(t *testing.T) { restartUnderLoad(t, back.URL, delay) })
	}
}

func restartUnderLoad(t *testing.T, backURL, drainDelay string) {
	const restarts = 3
	dir := t.TempDir()
	conf := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("routes:\n  - addresses: [%q]\n", strings.TrimPrefix(backURL, "http://"))), 0o644); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "edge.pid")
	p := startEdgeProcess(t, "--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--http-addr=127.0.0.1:0",
		"--wire-addr=127.0.0.1:0", "--runtime-socket="+filepath.Join(dir, "rt.sock"), "--config="+conf,
		"--balancer-addr=", "--registry-addr=", "--prober-addr=", "--shutdown-grace=5s",
		"--drain-delay="+drainDelay, "--pid-file="+pidFile)
	defer p.cmd.Process.Kill()
	admin := p.await(regexp.MustCompile(`msg=listening .*listener=admin addr=(\S+)`), 30*time.Second)
	addr := p.await(regexp.MustCompile(`msg=listening .*listener=http addr=(\S+)`), 30*time.Second)
	p.await(regexp.MustCompile(`msg=(ready)`), 30*time.Second)
	pidIs := func(pid int) func() bool {
		return func() bool {
			b, _ := os.ReadFile(pidFile)
			return strings.TrimSpace(string(b)) == strconv.Itoa(pid)
		}
	}
	pid := p.cmd.Process.Pid
	eventually(t, 10*time.Second, "the pid file", pidIs(pid))

	var c loadCounts
	stop := make(chan struct{})
	wg := runLoad("http://"+addr+"/", 4, 2, stop, &c)
	// A health checker, as a load balancer in front would run one: the
	// address stays ready throughout.
	var probes, notReady atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		hc := &http.Client{Timeout: 10 * time.Second}
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			resp, err := hc.Get("http://" + admin + "/readyz")
			probes.Add(1)
			if err != nil {
				notReady.Add(1)
				c.fail("readyz: " + err.Error())
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				notReady.Add(1)
				c.fail("readyz: " + resp.Status)
			}
		}
	}()
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()
	waitMore := func(what string, n int64) {
		t.Helper()
		target := c.ok.Load() + n
		deadline := time.Now().Add(30 * time.Second)
		for c.ok.Load() < target {
			if time.Now().After(deadline) {
				t.Fatalf("%s: only %d requests answered; log:\n%s", what, c.ok.Load(), p.log())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitMore("before the first restart", 300)
	retired := regexp.MustCompile(`new process serves; this one retires" .*pid=(\d+)`)
	for i := range restarts {
		if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
			t.Fatal(err)
		}
		next, _ := strconv.Atoi(p.await(retired, 30*time.Second))
		if i == 0 {
			exited := make(chan error, 1)
			go func() { exited <- p.cmd.Wait() }()
			select {
			case err := <-exited:
				if err != nil {
					t.Fatalf("edge %d exited with %v; log:\n%s", pid, err, p.log())
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("edge %d did not exit within 20s of the handoff; log:\n%s", pid, p.log())
			}
		} else if ws := waitPid(t, pid, 20*time.Second); !ws.Exited() || ws.ExitStatus() != 0 {
			t.Fatalf("edge %d: %v; log:\n%s", pid, ws, p.log())
		}
		if !pidIs(next)() {
			t.Errorf("the pid file does not name the new process %d", next)
		}
		pid = next
		waitMore(fmt.Sprintf("after restart %d", i+1), 300)
	}
	stopLoad()

	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if ws := waitPid(t, pid, 20*time.Second); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("last edge %d: %v; log:\n%s", pid, ws, p.log())
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left after the last process stopped: %v", err)
	}
	t.Logf("%d restarts: %d requests answered (%d on new connections, %d on kept-alive ones); %d answers with Connection: close to keep-alive clients; %d GETs retried by net/http on a new connection; %d failed; /readyz not 200 in %d of %d probes",
		restarts, c.ok.Load(), c.okNew.Load(), c.okKept.Load(), c.closeAnswers.Load(), c.retried.Load(), c.failed.Load(), notReady.Load(), probes.Load())
	if n := c.failed.Load(); n > 0 {
		t.Fatalf("%d requests failed during the restarts, first: %v; log:\n%s", n, c.firstErrs, p.log())
	}
}

// TestRestartFailureKeepsServing: a new process that cannot start (here:
// the configuration file has become invalid) is abandoned, and the running
// edge keeps serving.
func TestRestartFailureKeepsServing(t *testing.T) {
	back := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(back.Close)
	dir := t.TempDir()
	conf := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("routes:\n  - addresses: [%q]\n", strings.TrimPrefix(back.URL, "http://"))), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startEdgeProcess(t, "--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--http-addr=127.0.0.1:0",
		"--wire-addr=127.0.0.1:0", "--runtime-socket="+filepath.Join(dir, "rt.sock"), "--config="+conf,
		"--balancer-addr=", "--registry-addr=", "--prober-addr=")
	defer p.cmd.Process.Kill()
	addr := p.await(regexp.MustCompile(`msg=listening .*listener=http addr=(\S+)`), 30*time.Second)
	p.await(regexp.MustCompile(`msg=(ready)`), 30*time.Second)
	if err := os.WriteFile(conf, []byte("routes: [ {{{\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGUSR2)
	p.await(regexp.MustCompile(`msg="restart (failed); this process keeps serving"`), 30*time.Second)
	c := &http.Client{Timeout: 10 * time.Second}
	resp, body := get(t, c, "http://"+addr+"/", "")
	if resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("after a failed restart: %s %q", resp.Status, body)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("edge exited with %v", err)
	}
}
