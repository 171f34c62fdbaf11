package edge_test

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
)

// writeConfig replaces path's content the way editors do: a new file
// renamed over the old one (rename), or truncated and rewritten in place.
func writeConfig(t *testing.T, path, text string, rename bool) {
	t.Helper()
	if !rename {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	tmp := filepath.Join(filepath.Dir(path), ".edge.yaml.swp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// addr is a test backend's host:port.
func addr(u string) string { return strings.TrimPrefix(u, "http://") }

// reloadLoad sends GETs to url from n keep-alive clients until stop, and
// counts answers whose body is not one of want (or that fail) as failed.
type reloadLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	wg         sync.WaitGroup
}

func startReloadLoad(url string, n int, stop <-chan struct{}, want ...string) *reloadLoad {
	l := &reloadLoad{}
	for range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := hc.Get(url)
				if err != nil {
					l.fail(err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || !contains(want, string(b)) {
					l.fail(fmt.Sprintf("%s %q", resp.Status, b))
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	return l
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (l *reloadLoad) fail(s string) {
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.errs) < 5 {
		l.errs = append(l.errs, s)
	}
	l.mu.Unlock()
}

// body GETs url and returns the status and body ("" on a transport error).
func body(c *http.Client, url string) (int, string) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var reloadsRE = regexp.MustCompile(`switchboard_edge_config_reloads_total\{result="(ok|error)"\} (\d+)`)

// reloadCounts reads switchboard_edge_config_reloads_total from the metrics text.
func reloadCounts(text string) (ok, failed string) {
	for _, m := range reloadsRE.FindAllStringSubmatch(text, -1) {
		if m[1] == "ok" {
			ok = m[2]
		} else {
			failed = m[2]
		}
	}
	return ok, failed
}

// TestReloadUnderLoad: with clients sending GETs without pause, the
// config file is rewritten (by rename, then in place) to move a route to
// another backend and add a route; no request fails, the new route
// answers within a second of the write, and a broken file is refused
// with its line and field while the old routes keep serving.
func TestReloadUnderLoad(t *testing.T) {
	a, b, c := backend(t, "a"), backend(t, "b"), backend(t, "c")
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	v1 := fmt.Sprintf("routes:\n  - name: app\n    path_prefix: /app\n    addresses: [%q]\n", addr(a.URL))
	writeConfig(t, path, v1, false)
	inst, sock := startEdge(t, "", "--config="+path)
	base := "http://" + inst.Addrs["http"]
	hc := &http.Client{Timeout: 5 * time.Second}
	if code, got := body(hc, base+"/app"); code != 200 || got != "a" {
		t.Fatalf("before reload: %d %q", code, got)
	}
	sum := func(text string) string { s := sha256.Sum256([]byte(text)); return hex.EncodeToString(s[:])[:12] }
	if got := runtimeCmd(t, sock, "show config"); !strings.Contains(got, "version        1\n") || !strings.Contains(got, sum(v1)) {
		t.Fatalf("show config at start:\n%s", got)
	}

	stop := make(chan struct{})
	load := startReloadLoad(base+"/app", 4, stop, "a", "b")
	eventually(t, 10*time.Second, "load running", func() bool { return load.ok.Load() > 50 })

	// 1. Move /app to b and add /new on c, by rename.
	v2 := fmt.Sprintf("routes:\n  - name: app\n    path_prefix: /app\n    addresses: [%q]\n  - name: new\n    path_prefix: /new\n    addresses: [%q]\n", addr(b.URL), addr(c.URL))
	wrote := time.Now()
	writeConfig(t, path, v2, true)
	var took time.Duration
	for {
		if code, got := body(hc, base+"/new"); code == 200 && got == "c" {
			took = time.Since(wrote)
			break
		}
		if time.Since(wrote) > 10*time.Second {
			t.Fatalf("/new never answered after the config was rewritten")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the new route answered %v after the write", took.Round(time.Millisecond))
	if took > reloadBound {
		t.Errorf("the new route answered %v after the write, want within %v", took, reloadBound)
	}
	eventually(t, 10*time.Second, "/app on b", func() bool { _, got := body(hc, base+"/app"); return got == "b" })
	if got := runtimeCmd(t, sock, "show config"); !strings.Contains(got, "version        2\n") || !strings.Contains(got, sum(v2)) || !strings.Contains(got, "(file)") {
		t.Fatalf("show config after the reload:\n%s", got)
	}
	if m := metricsText(t, inst); !strings.Contains(m, fmt.Sprintf(`switchboard_edge_config_info{sha256=%q,version="2"} 1`, sum(v2))) {
		t.Fatalf("switchboard_edge_config_info does not name version 2:\n%s", grepLines(m, "edge_config"))
	}

	// 2. A broken file (a policy name misspelt), written in place: refused,
	// counted, and the routes of version 2 keep serving.
	broken := strings.Replace(v2, "  - name: new\n", "  - name: new\n    policy: leastconn\n", 1)
	writeConfig(t, path, broken, false)
	eventually(t, 10*time.Second, "the broken file refused", func() bool {
		_, failed := reloadCounts(metricsText(t, inst))
		return failed == "1"
	})
	show := runtimeCmd(t, sock, "show config")
	wantErr := path + `:6: routes[1].policy: unknown policy "leastconn" (want one of consistent_hash, least_conn, p2c, random, round_robin, weighted_round_robin)`
	if !strings.Contains(show, "version        2\n") || !strings.Contains(show, wantErr) {
		t.Fatalf("show config after a broken file:\n%s\nwant version 2 and %q", show, wantErr)
	}
	for _, p := range []string{"/app", "/new"} {
		if code, got := body(hc, base+p); code != 200 || (got != "b" && got != "c") {
			t.Fatalf("%s after the broken file: %d %q", p, code, got)
		}
	}
	m := metricsText(t, inst)
	if ok, failed := reloadCounts(m); ok != "1" || failed != "1" {
		t.Fatalf("reloads ok=%s error=%s, want 1 and 1", ok, failed)
	}
	if !strings.Contains(m, "switchboard_edge_config_last_reload_successful 0") {
		t.Fatalf("switchboard_edge_config_last_reload_successful is not 0 after a refused reload:\n%s", grepLines(m, "edge_config"))
	}

	// 3. Fixed again, in place, with /new gone: version 3, /new is 404.
	v3 := fmt.Sprintf("routes:\n  - name: app\n    path_prefix: /app\n    addresses: [%q, %q]\n", addr(a.URL), addr(b.URL))
	writeConfig(t, path, v3, false)
	eventually(t, 10*time.Second, "/new removed", func() bool { code, _ := body(hc, base+"/new"); return code == 404 })

	close(stop)
	load.wg.Wait()
	t.Logf("load: %d requests answered, %d failed", load.ok.Load(), load.failed.Load())
	if n := load.failed.Load(); n > 0 {
		t.Fatalf("%d requests failed during reloads, first: %v", n, load.errs)
	}
	if show := runtimeCmd(t, sock, "show config"); !strings.Contains(show, "version        3\n") || !strings.Contains(show, "last_error     -") {
		t.Fatalf("show config after the fix:\n%s", show)
	}
}

// grepLines returns text's lines that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestReloadCommand: the runtime API's reload applies route and static
// service changes at once, says which listener changes need a restart
// (and keeps those listeners as they were), and refuses a broken file
// with the file, line and field.
func TestReloadCommand(t *testing.T) {
	a, b := backend(t, "a"), backend(t, "b")
	tcpA, tcpB := namedTCP(t), namedTCP(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	tcpConf := func(listen, to string) string {
		return fmt.Sprintf("tcp:\n  - listen: %q\n    addresses: [%q]\n", listen, to)
	}
	writeConfig(t, path, fmt.Sprintf("services:\n  web: [%q]\nroutes:\n  - {name: site, service: web}\n", addr(a.URL))+tcpConf("127.0.0.1:0", tcpA), false)
	inst, sock := startEdge(t, "", "--config="+path, "--config-poll=0")
	base := "http://" + inst.Addrs["http"]
	hc := &http.Client{Timeout: 5 * time.Second}
	tcpAddr := inst.Addrs["tcp0"]
	if _, got := body(hc, base+"/"); got != "a" {
		t.Fatalf("before: %q", got)
	}

	// The static service moves to b and a header route appears; the TCP
	// listener's backend changes (live) and so does its address (not).
	writeConfig(t, path, fmt.Sprintf("services:\n  web: [%q]\nroutes:\n  - {name: site, service: web}\n  - {name: beta, headers: {X-Beta: \"1\"}, addresses: [%q]}\n", addr(b.URL), addr(a.URL))+
		tcpConf("127.0.0.1:1", tcpB), false)
	out := runtimeCmd(t, sock, "reload")
	if !strings.HasPrefix(out, "ok: version 2 ") || !strings.Contains(out, "needs a restart (SIGUSR2): tcp[0].listen changed") {
		t.Fatalf("reload: %q", out)
	}
	if _, got := body(hc, base+"/"); got != "b" {
		t.Fatalf("the static service after reload: %q, want b", got)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
	req.Header.Set("X-Beta", "1")
	if resp, err := hc.Do(req); err != nil || resp.Header.Get("X-Backend") != "a" {
		t.Fatalf("the header route after reload: %v %v", resp, err)
	}
	if got := tcpEcho(t, tcpAddr); got != tcpB {
		t.Fatalf("the TCP listener on its old address reached %s, want the new backend %s", got, tcpB)
	}
	if show := runtimeCmd(t, sock, "show config"); !strings.Contains(show, "needs_restart  tcp[0].listen changed") || !strings.Contains(show, "(runtime)") {
		t.Fatalf("show config:\n%s", show)
	}

	// A broken file: the answer is the one-line error, nothing changes.
	writeConfig(t, path, "routes:\n  - name: site\n    service: web\n    strip_prefix: yes please\n", false)
	out = runtimeCmd(t, sock, "reload")
	if want := "error: " + path + `:4: routes[0].strip_prefix: want true or false, got "yes please"`; strings.TrimSpace(out) != want {
		t.Fatalf("reload of a broken file: %q, want %q", out, want)
	}
	if _, got := body(hc, base+"/"); got != "b" {
		t.Fatalf("after the refused reload: %q, want b", got)
	}
	if show := runtimeCmd(t, sock, "show config"); !strings.Contains(show, "version        2\n") || !strings.Contains(show, "reloads        ok 1, error 1") {
		t.Fatalf("show config after the refused reload:\n%s", show)
	}
}

// namedTCP is a TCP backend that writes its own address to each
// connection and closes it.
func namedTCP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, ln.Addr().String())
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// tcpEcho connects to the edge's TCP listener at a and returns what the
// namedTCP backend there says.
func tcpEcho(t *testing.T, a string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", a, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

// TestReloadGivesServiceBackToBalancer: a name the config file defined
// under services: follows the balancer's endpoint set again once the file
// stops defining it, without waiting for the balancer to send it anew.
func TestReloadGivesServiceBackToBalancer(t *testing.T) {
	fromFile, fromBalancer := backend(t, "file"), backend(t, "balancer")
	bal := startBalancer(t)
	bal.push(&balancerv1.WatchEndpointsResponse{Service: "web", Endpoints: []*balancerv1.Endpoint{endpoint("w1", fromBalancer.URL)}})
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	writeConfig(t, path, fmt.Sprintf("services:\n  web: [%q]\nroutes:\n  - {name: site, service: web}\n", addr(fromFile.URL)), false)
	inst, sock := startEdge(t, "", "--config="+path, "--config-poll=0", "--balancer-addr="+bal.addr)
	base := "http://" + inst.Addrs["http"]
	hc := &http.Client{Timeout: 5 * time.Second}
	if _, got := body(hc, base+"/"); got != "file" {
		t.Fatalf("with services.web in the file: %q", got)
	}
	// The balancer's set has arrived (readiness says so) before the file
	// gives web back to it.
	eventually(t, 5*time.Second, "the balancer's first endpoint set", func() bool {
		resp, _ := get(t, hc, "http://"+inst.Addrs["admin"]+"/readyz", "")
		return resp.StatusCode == http.StatusOK
	})
	writeConfig(t, path, "routes:\n  - {name: site, service: web}\n", false)
	if out := runtimeCmd(t, sock, "reload"); !strings.HasPrefix(out, "ok: version 2") {
		t.Fatalf("reload: %q", out)
	}
	if _, got := body(hc, base+"/"); got != "balancer" {
		t.Fatalf("with services.web gone from the file: %q, want the balancer's endpoint", got)
	}
}

// TestReloadCertificates: a reload picks up a renewed HTTPS certificate
// for new connections.
func TestReloadCertificates(t *testing.T) {
	a := backend(t, "a")
	dir := t.TempDir()
	certPath, keyPath := writeCert(t, dir, "a.example")
	inst, sock := startEdge(t, fmt.Sprintf("routes:\n  - addresses: [%q]\n", addr(a.URL)),
		"--https-addr=127.0.0.1:0", "--https-cert="+certPath, "--https-key="+keyPath, "--config-poll=0")
	serial := func() string {
		c, err := tls.Dial("tcp", inst.Addrs["https"], &tls.Config{ServerName: "a.example", InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	renewed := t.TempDir()
	newCert, newKey := writeCert(t, renewed, "a.example")
	for _, p := range [][2]string{{newCert, certPath}, {newKey, keyPath}} {
		if err := os.Rename(p[0], p[1]); err != nil {
			t.Fatal(err)
		}
	}
	if got := serial(); got != before {
		t.Fatalf("the certificate changed before any reload")
	}
	if out := runtimeCmd(t, sock, "reload"); !strings.HasPrefix(out, "ok: version 2") {
		t.Fatalf("reload: %q", out)
	}
	if got := serial(); got == before {
		t.Fatalf("after the reload the listener still presents serial %s", got)
	}
}

// TestReloadSwitchesBackendsUnderLoad: a route's only backend is swapped
// 150 times by reload, and its policy every fifth time, while 16 clients
// send GETs: every request is
// answered, by the old backend or the new one. (The set must never hand
// out an endpoint whose backend is not in place yet, and a request on a
// backend the file dropped finishes there.)
func TestReloadSwitchesBackendsUnderLoad(t *testing.T) {
	a, b := backend(t, "a"), backend(t, "b")
	path := filepath.Join(t.TempDir(), "edge.yaml")
	conf := func(u, policy string) string {
		return fmt.Sprintf("routes:\n  - name: app\n    addresses: [%q]\n    policy: %s\n", addr(u), policy)
	}
	writeConfig(t, path, conf(a.URL, "round_robin"), false)
	inst, sock := startEdge(t, "", "--config="+path, "--config-poll=0")
	stop := make(chan struct{})
	load := startReloadLoad("http://"+inst.Addrs["http"]+"/", 16, stop, "a", "b")
	eventually(t, 10*time.Second, "load running", func() bool { return load.ok.Load() > 50 })
	policies := []string{"round_robin", "least_conn", "random"}
	for i := range 150 {
		u := a.URL
		if i%2 == 0 {
			u = b.URL
		}
		// Every fifth reload changes the policy too (a new set).
		writeConfig(t, path, conf(u, policies[i/5%len(policies)]), false)
		if out := runtimeCmd(t, sock, "reload"); !strings.HasPrefix(out, "ok") {
			t.Fatal(out)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	load.wg.Wait()
	t.Logf("load: %d requests answered, %d failed", load.ok.Load(), load.failed.Load())
	if n := load.failed.Load(); n > 0 {
		t.Fatalf("%d requests failed while the backend was swapped, first: %v", n, load.errs)
	}
}
