package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/config"
	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/services/registry"
)

// startDevStack runs `switchboard dev` in-process on free ports and returns
// its addresses; the stack stops when the test ends.
func startDevStack(t *testing.T) *devStack {
	t.Helper()
	ready := make(chan *devStack, 1)
	devReady = func(s *devStack) { ready <- s }
	t.Cleanup(func() { devReady = nil })
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	code := make(chan int, 1)
	go func() { code <- run(ctx, []string{"dev", "--random-ports", "--data-dir", t.TempDir()}, &out, &errOut) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-code:
		case <-time.After(30 * time.Second):
			t.Errorf("dev did not stop")
		}
	})
	select {
	case s := <-ready:
		return s
	case c := <-code:
		t.Fatalf("dev exited %d:\n%s", c, errOut.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("dev did not start:\n%s", errOut.String())
	}
	return nil
}

// cliRun runs one client command and returns its exit code and output.
func cliRun(ctx context.Context, args ...string) (int, string, string) {
	var out, errOut syncBuffer
	code := run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// jsonAt walks a decoded JSON document by a dotted path ("a.0.b").
func jsonAt(doc any, path string) (any, bool) {
	cur := doc
	for _, p := range strings.Split(path, ".") {
		switch v := cur.(type) {
		case map[string]any:
			x, ok := v[p]
			if !ok {
				return nil, false
			}
			cur = x
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(v) {
				return nil, false
			}
			cur = v[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// cliCase is one documented command: run in table form, then with -o json.
type cliCase struct {
	args      []string
	code      int                     // exit code of both forms
	jsonCode  int                     // exit code of the JSON form when it differs (0: same as code)
	table     []string                // substrings of the table form's stdout (or stderr when code != 0)
	notStderr string                  // must not appear on stderr
	stderr    string                  // must appear on stderr (table form)
	json      map[string]any          // path -> value in the JSON form (nil value: the key exists)
	jsonArgs  []string                // the JSON form's arguments when they differ
	noJSON    bool                    // the command has no JSON form
	check     func(out string) string // extra check of the table form; returns a complaint
}

// TestCLI runs every client command README.md and docs/ show against `switchboard dev`
// in table and JSON form and checks what a user would read: the rows, the
// words, the exit codes, and that JSON keeps zero values.
func TestCLI(t *testing.T) {
	s := startDevStack(t)
	// The env twins point the commands at this stack (and so are tested).
	for _, svc := range serviceNames {
		t.Setenv(config.EnvName(svc+"-addr"), s.addrs[svc]["grpc"])
	}
	t.Setenv("SWITCHBOARD_OUTPUT", "")
	os.Unsetenv("SWITCHBOARD_OUTPUT")
	ctx := context.Background()

	// Both demo instances pass their checks first.
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, out, _ := cliRun(ctx, "services", "-o", "json")
		var doc any
		if code == 0 && json.Unmarshal([]byte(out), &doc) == nil {
			if p, _ := jsonAt(doc, "services.0.passing"); p == 2.0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo never had 2 passing instances: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The demo's periodic check has a result to show.
	for {
		code, out, _ := cliRun(ctx, "jobs", "results", "demo-http", "-n", "1", "-o", "json")
		var doc any
		if code == 0 && json.Unmarshal([]byte(out), &doc) == nil {
			if _, ok := jsonAt(doc, "results.0"); ok {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo-http job has no result: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A port nothing listens on, for failures.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	_, closedPort, _ := net.SplitHostPort(closed)
	_, regPort, _ := net.SplitHostPort(s.addrs["registry"]["grpc"])
	demoAddr := s.demo[0].addr

	cases := []cliCase{
		{args: []string{"services"}, table: []string{"NAME", "PASSING", "demo", "edge.route=/"},
			json: map[string]any{"services.0.name": "demo", "services.0.instances": 2.0, "services.0.passing": 2.0}},
		{args: []string{"instances", "demo"}, table: []string{"HEALTH", "demo-1", "demo-2", "passing", "http /healthz"},
			json: map[string]any{"instances.0.id": "demo-1", "instances.0.health": "HEALTH_STATUS_PASSING", "instances.0.zone": ""}},
		{args: []string{"instances", "nope"}, code: 3, table: []string{`service "nope": no instances registered`}},
		{args: []string{"register", "web", "w1", "127.0.0.1:9", "--tag", "canary", "--meta", "team=net", "--weight", "3"},
			table: []string{"registered web/w1 at 127.0.0.1:9 (health: passing)"},
			json:  map[string]any{"instance.weight": 3.0, "instance.metadata.team": "net", "instance.zone": ""}},
		{args: []string{"health", "set", "web", "w1", "critical", "--message", "maintenance"}, table: []string{"web/w1 is critical"}, json: map[string]any{}},
		{args: []string{"instances", "web"}, table: []string{"w1", "critical", "maintenance"},
			json: map[string]any{"instances.0.health": "HEALTH_STATUS_CRITICAL", "instances.0.healthOutput": "maintenance"}},
		{args: []string{"instances", "web", "--passing"}, table: []string{"ID"}, check: func(out string) string {
			if strings.Contains(out, "w1") {
				return "a critical instance is listed under --passing"
			}
			return ""
		}, json: map[string]any{"instances": []any{}}},
		{args: []string{"health", "set", "web", "nope", "passing"}, code: 3, table: []string{"instance web/nope: not registered"}},
		{args: []string{"health", "set", "web", "w1", "sick"}, code: 2, table: []string{`status "sick": want passing, warning or critical`}},
		{args: []string{"deregister", "web", "w1"}, jsonCode: 3, table: []string{"deregistered web/w1"}},
		{args: []string{"pick", "demo"}, table: []string{"demo-", "127.0.0.1:", "true"},
			json: map[string]any{"endpoint.healthy": true, "endpoint.zone": "", "endpoint.port": nil}},
		{args: []string{"pick", "demo", "-n", "4"}, noJSON: true, check: func(out string) string {
			if strings.Count(out, "demo-1") != 2 || strings.Count(out, "demo-2") != 2 {
				return "round robin over two instances should pick each twice"
			}
			return ""
		}},
		{args: []string{"pick", "nope"}, code: 3},
		{args: []string{"policy", "get", "demo"}, table: []string{"round_robin", "ignored by round_robin", "5m"},
			json: map[string]any{"policy.name": "round_robin", "policy.slowStart": "0s", "policy.breaker.failureThreshold": 0.0}},
		{args: []string{"edge", "weight", "demo", "demo-1", "3"}, table: []string{"demo-1", "3"}, stderr: "ignores weights",
			json: map[string]any{"backend.weight": 3.0, "backend.disabled": false}},
		{args: []string{"policy", "set", "demo", "weighted_round_robin", "--slow-start", "5s"}, table: []string{"weighted_round_robin", "honoured", "5s"},
			json: map[string]any{"policy.name": "weighted_round_robin", "policy.slowStart": "5s", "policy.outlier.consecutiveFailures": 5.0}},
		{args: []string{"edge", "weight", "demo", "demo-1", "2"}, table: []string{"demo-1", "2"}, notStderr: "ignores weights",
			json: map[string]any{"backend.weight": 2.0}},
		{args: []string{"edge", "weight", "demo", "demo-1", "0"}, table: []string{"demo-1"}, json: map[string]any{"backend.weight": 1.0}},
		{args: []string{"policy", "set", "demo", "round_robin", "--slow-start", "0s"}, table: []string{"round_robin", "off"},
			json: map[string]any{"policy.name": "round_robin"}},
		{args: []string{"policy", "set", "demo", "fastest"}, code: 1, table: []string{"balancer: invalid argument"}},
		{args: []string{"edge", "routes"}, table: []string{"PROTOCOL", "http", "demo", "registry"},
			json: map[string]any{"routes.0.protocol": "http", "routes.0.service": "demo", "routes.0.stripPrefix": false}},
		{args: []string{"edge", "backends", "demo"}, table: []string{"demo-1", "demo-2", "up", "closed"},
			json: map[string]any{"backends.0.service": "demo", "backends.0.failures": "0", "backends.0.ejected": false}},
		{args: []string{"edge", "backends", "nope"}, code: 3},
		{args: []string{"edge", "disable", "demo", "demo-2"}, table: []string{"demo-2", "disabled"}, json: map[string]any{"backend.disabled": true}},
		{args: []string{"edge", "enable", "demo", "demo-2"}, table: []string{"demo-2", "up"}, json: map[string]any{"backend.disabled": false}},
		{args: []string{"records", "set", "www.example.switchboard", "A", "10.0.0.7", "--ttl", "60"}, table: []string{"www.example.switchboard.", "60", "10.0.0.7", "managed"},
			json: map[string]any{"record.source": "managed", "record.ttl": 60.0}},
		{args: []string{"records", "list"}, table: []string{"www.example.switchboard.", "10.0.0.7"},
			json: map[string]any{"records.0.name": "www.example.switchboard.", "records.0.type": "A"}},
		{args: []string{"lookup", "www.example.switchboard"}, table: []string{"status: NOERROR", "10.0.0.7"},
			json: map[string]any{"rcode": "NOERROR", "answer.0.data": "10.0.0.7", "cached": false, "authority": []any{}}},
		{args: []string{"lookup", "demo.service.switchboard", "SRV"}, table: []string{"SRV", "demo-1.demo.instance.switchboard."},
			json: map[string]any{"answer.0.type": "SRV"}},
		{args: []string{"records", "rm", "www.example.switchboard", "A"}, jsonCode: 3, table: []string{"deleted 1 record(s)"}},
		{args: []string{"lookup", "nope.service.switchboard"}, code: 3, table: []string{"NXDOMAIN"}, json: map[string]any{"rcode": "NXDOMAIN"}},
		{args: []string{"probe", "ping", "127.0.0.1", "-c", "2", "-i", "100ms"},
			table: []string{"PING 127.0.0.1", "reply from 127.0.0.1: seq=1", "reply from 127.0.0.1: seq=2", "2 sent, 2 received, 0% loss", "rtt min/avg/max/mdev"},
			json:  map[string]any{"ping.received": 2.0, "ping.lossPercent": 0.0, "success": true}},
		{args: []string{"probe", "scan", "127.0.0.1", "-p", regPort + "," + closedPort}, table: []string{regPort + "/tcp open", "2 ports scanned: 1 open, 1 closed, 0 filtered"},
			json: map[string]any{"scan.open": 1.0, "scan.closed": 1.0, "scan.filtered": 0.0}},
		{args: []string{"probe", "check", "http", "http://" + demoAddr + "/healthz"}, table: []string{"ok", "200", "HTTP 200"},
			json: map[string]any{"check.ok": true, "check.statusCode": 200.0}},
		{args: []string{"probe", "check", "tcp", closed}, code: 1, table: []string{"failed", "refused"}, json: map[string]any{"check.ok": false}},
		{args: []string{"probe", "bandwidth", s.addrs["prober"]["bandwidth"], "-t", "1s"}, table: []string{"Interval", "Transfer", "bits/sec"},
			json: map[string]any{"bandwidth.bitsPerSecond": nil, "bandwidth.packetsLost": "0", "bandwidth.lossPercent": 0.0}},
		{args: []string{"jobs", "add", "cli-ping", "ping", "127.0.0.1", "-c", "1", "--every", "1s"}, table: []string{"cli-ping", "ping", "127.0.0.1", "1s"},
			json: map[string]any{"job.id": "cli-ping", "job.interval": "1s"}},
		{args: []string{"jobs", "list"}, table: []string{"demo-http", "check", "cli-ping"}, json: map[string]any{"jobs.0.id": nil}},
		{args: []string{"jobs", "results", "demo-http", "-n", "2"}, table: []string{"ok: HTTP 200", "ago"},
			json: map[string]any{"results.0.success": true, "results.0.check.ok": true}},
		{args: []string{"jobs", "rm", "cli-ping"}, jsonCode: 3, table: []string{"removed job cli-ping"}},
		{args: []string{"completion", "bash"}, noJSON: true, table: []string{"complete -F _switchboard switchboard"}, check: bashSyntax},
		{args: []string{"completion", "zsh"}, noJSON: true, table: []string{"#compdef switchboard", "bashcompinit"}},
		{args: []string{"instances"}, code: 2, table: []string{"usage: switchboard instances SERVICE"}},
		{args: []string{"services", "-o", "xml"}, code: 2, noJSON: true, table: []string{`--output "xml"`}},
		{args: []string{"services", "--registry-addr", closed, "--timeout", "3s"}, code: 1, table: []string{"registry: unavailable"}},
		{args: []string{"watch", "--registry-addr", closed, "--timeout", "1s"}, code: 1, table: []string{"registry: unavailable", "within 1s"}},
	}
	covered := map[string]bool{}
	for _, c := range cases {
		covered[commandKey(c.args)] = true
		name := strings.Join(c.args, " ")
		t.Run(name, func(t *testing.T) {
			code, out, errOut := cliRun(ctx, c.args...)
			text := out
			if c.code != 0 {
				text = out + errOut
			}
			if code != c.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, c.code, out, errOut)
			}
			for _, w := range c.table {
				if !strings.Contains(text, w) {
					t.Errorf("output lacks %q:\n%s%s", w, text, errOut)
				}
			}
			if c.stderr != "" && !strings.Contains(errOut, c.stderr) {
				t.Errorf("stderr lacks %q: %s", c.stderr, errOut)
			}
			if c.notStderr != "" && strings.Contains(errOut, c.notStderr) {
				t.Errorf("stderr has %q: %s", c.notStderr, errOut)
			}
			if c.check != nil {
				if msg := c.check(out); msg != "" {
					t.Errorf("%s:\n%s", msg, out)
				}
			}
			if c.noJSON {
				return
			}
			args := c.args
			if c.jsonArgs != nil {
				args = c.jsonArgs
			}
			want := c.code
			if c.jsonCode != 0 {
				want = c.jsonCode
			}
			code, out, errOut = cliRun(ctx, append(append([]string{}, args...), "-o", "json")...)
			if code != want {
				t.Fatalf("-o json: exit %d, want %d\n%s%s", code, want, out, errOut)
			}
			if want != 0 && c.json == nil {
				return
			}
			var doc any
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatalf("-o json: %v\n%s%s", err, out, errOut)
			}
			for path, v := range c.json {
				got, ok := jsonAt(doc, path)
				if !ok {
					t.Errorf("-o json lacks %s:\n%s", path, out)
					continue
				}
				if v == nil {
					continue
				}
				gb, _ := json.Marshal(got)
				wb, _ := json.Marshal(v)
				if string(gb) != string(wb) {
					t.Errorf("-o json %s = %s, want %s", path, gb, wb)
				}
			}
		})
	}

	t.Run("yaml", func(t *testing.T) {
		code, out, errOut := cliRun(ctx, "instances", "demo", "-o", "yaml")
		for _, w := range []string{"instances:\n  - service: demo\n", "    health: HEALTH_STATUS_PASSING\n", "    zone: \"\"\n", "index: \""} {
			if code != 0 || !strings.Contains(out, w) {
				t.Errorf("exit %d; yaml lacks %q:\n%s%s", code, w, out, errOut)
			}
		}
	})

	t.Run("watch", func(t *testing.T) {
		covered["watch"] = true
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var out, errOut syncBuffer
		done := make(chan int, 1)
		go func() { done <- run(wctx, []string{"watch", "demo"}, &out, &errOut) }()
		waitFor := func(what string) {
			t.Helper()
			deadline := time.Now().Add(20 * time.Second)
			for !strings.Contains(out.String(), what) {
				if time.Now().After(deadline) {
					t.Fatalf("watch never printed %q:\n%s%s", what, out.String(), errOut.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		waitFor("= demo/demo-2 ")
		if code, o, e := cliRun(ctx, "register", "demo", "cli-w", "127.0.0.1:9"); code != 0 {
			t.Fatalf("register: %s%s", o, e)
		}
		waitFor("+ demo/cli-w 127.0.0.1:9 passing")
		if code, o, e := cliRun(ctx, "health", "set", "demo", "cli-w", "warning"); code != 0 {
			t.Fatalf("health set: %s%s", o, e)
		}
		waitFor("~ demo/cli-w health passing -> warning")
		if code, o, e := cliRun(ctx, "deregister", "demo", "cli-w"); code != 0 {
			t.Fatalf("deregister: %s%s", o, e)
		}
		waitFor("- demo/cli-w 127.0.0.1:9")
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("watch ended %d after Ctrl-C: %s", code, errOut.String())
		}

		// -o json: one JSON snapshot per line.
		jctx, jcancel := context.WithCancel(ctx)
		defer jcancel()
		var jout syncBuffer
		go func() { done <- run(jctx, []string{"watch", "demo", "-o", "json"}, &jout, &errOut) }()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(jout.String(), "\n") {
			if time.Now().After(deadline) {
				t.Fatalf("watch -o json printed nothing: %s", errOut.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		jcancel()
		<-done
		line, _, _ := strings.Cut(jout.String(), "\n")
		var doc any
		if err := json.Unmarshal([]byte(line), &doc); err != nil {
			t.Fatalf("watch -o json line: %v: %s", err, line)
		}
		if v, _ := jsonAt(doc, "stale"); v != false {
			t.Errorf("watch -o json lacks stale=false: %s", line)
		}
	})

	t.Run("trace", func(t *testing.T) {
		covered["probe trace"] = true
		code, out, errOut := cliRun(ctx, "probe", "trace", "127.0.0.1", "-m", "3", "-q", "1")
		if code != 0 && strings.Contains(errOut, "raw") {
			t.Skip("traceroute needs raw sockets here:", errOut)
		}
		if code != 0 || !strings.Contains(out, " 1  127.0.0.1") || !strings.Contains(out, "reached in 1 hops") {
			t.Errorf("exit %d:\n%s%s", code, out, errOut)
		}
	})

	// Every command the docs show has run above.
	keys, lines := documentedCommands(t)
	for _, cmd := range keys {
		if !covered[cmd] {
			t.Errorf("the docs show %q, which this test does not run", cmd)
		}
	}
	// And every documented command line parses: its flags exist, its
	// arguments are enough.
	cliParseOnly = true
	defer func() { cliParseOnly = false }()
	for _, args := range lines {
		var out, errOut syncBuffer
		cmd := lookupCLI(args)
		if err := cmd.run(ctx, args[1:], &out, &errOut); !errors.Is(err, errParsedOnly) && !(args[0] == "completion" && err == nil) {
			t.Errorf("documented %q does not parse: %v %s", strings.Join(args, " "), err, errOut.String())
		}
	}
}

// commandKey is a command's name and subcommand ("edge weight").
func commandKey(args []string) string {
	if c := lookupCLI(args); c != nil && len(c.subs) > 0 && len(args) > 1 {
		return args[0] + " " + args[1]
	}
	return args[0]
}

// documentedCommands reads the client commands README.md and docs/*.md
// show (lines that start with "switchboard", "$ switchboard" or
// "go run ./cmd/switchboard"), as "command" or "command sub".
func documentedCommands(t *testing.T) (keys []string, lines [][]string) {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../../README.md")
	re := regexp.MustCompile(`^\s*(?:\$ )?(?:go run \./cmd/)?switchboard ([a-z].*)$`)
	seen := map[string]bool{}
	perFile := map[string]int{}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			m := re.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			line, _, _ := strings.Cut(m[1], "#")
			args := shellWords(line)
			if len(args) == 0 || lookupCLI(args) == nil {
				continue // dev, tls ...: tested elsewhere
			}
			perFile[filepath.Base(name)]++
			if !strings.ContainsAny(line, "$<>") { // shell expansions stay unparsed
				lines = append(lines, args)
			}
			if k := commandKey(args); !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
		f.Close()
	}
	if len(keys) < 20 || perFile["cli.md"] == 0 || perFile["README.md"] == 0 {
		t.Fatalf("the docs show only %d client commands (%v): %v", len(keys), perFile, keys)
	}
	return keys, lines
}

// bashSyntax checks the completion script with bash -n.
func bashSyntax(script string) string {
	bash, err := exec.LookPath("bash")
	if err != nil {
		return ""
	}
	cmd := exec.Command(bash, "-n")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "bash -n: " + err.Error() + ": " + string(out)
	}
	return ""
}

// TestCLILocked drives a registry locked as the compose stack runs it
// (bootstrap's certificates, tokens and ACL): with the CA, the client
// certificate and the operator's token from SWITCHBOARD_* the commands
// work; the viewer's token reads but may not register, which exits 1 with
// the status in words; without a certificate nothing gets through.
func TestCLILocked(t *testing.T) {
	dir, host := t.TempDir(), t.TempDir()
	runBootstrapCmd(t, "--dir", dir, "--host", host)
	p := func(rel string) string { return filepath.Join(dir, "registry", rel) }
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan map[string]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, registry.Spec(), []string{
			"--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--data-dir=" + t.TempDir(),
			"--tls-cert=" + p("cert.pem"), "--tls-key=" + p("key.pem"), "--tls-ca=" + p("ca.pem"),
			"--acl-file=" + p("acl.yaml"), "--token-file=" + p("token"),
		}, service.WithEnv(config.NoEnv), service.WithLogOutput(io.Discard),
			service.WithReady(func(a map[string]string) { addrs <- a }))
	}()
	t.Cleanup(func() { cancel(); <-done })
	var a map[string]string
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("registry: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("registry not ready within 20s")
	}
	_, grpcPort, _ := net.SplitHostPort(a["grpc"])
	t.Setenv("SWITCHBOARD_REGISTRY_ADDR", "localhost:"+grpcPort)
	t.Setenv("SWITCHBOARD_TLS_CA", filepath.Join(host, "ca.pem"))
	t.Setenv("SWITCHBOARD_TLS_CERT", filepath.Join(host, "client.pem"))
	t.Setenv("SWITCHBOARD_TLS_KEY", filepath.Join(host, "client-key.pem"))
	t.Setenv("SWITCHBOARD_TOKEN_FILE", filepath.Join(host, "operator.token"))
	bg := context.Background()

	if code, out, errOut := cliRun(bg, "register", "web", "web-1", "127.0.0.1:9000"); code != 0 || !strings.Contains(out, "registered web/web-1") {
		t.Fatalf("operator register: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := cliRun(bg, "services"); code != 0 || !strings.Contains(out, "web") {
		t.Errorf("operator services: exit %d\n%s%s", code, out, errOut)
	}
	viewer := []string{"--token-file", filepath.Join(host, "viewer.token")}
	if code, out, errOut := cliRun(bg, append([]string{"instances", "web"}, viewer...)...); code != 0 || !strings.Contains(out, "web-1") {
		t.Errorf("viewer instances: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut := cliRun(bg, append([]string{"register", "web", "web-2", "127.0.0.1:9001"}, viewer...)...)
	if code != 1 || !strings.Contains(errOut, "registry: permission denied") {
		t.Errorf("viewer register: exit %d, want 1 and the status in words\n%s%s", code, out, errOut)
	}
	// Without a client certificate the handshake fails: unavailable.
	code, out, errOut = cliRun(bg, "services", "--tls-cert", "", "--tls-key", "", "--timeout", "3s")
	if code != 1 || !strings.Contains(errOut, "registry:") {
		t.Errorf("no certificate: exit %d, want 1\n%s%s", code, out, errOut)
	}
	// A token and a token file are exclusive: a usage error.
	if code, _, errOut := cliRun(bg, "services", "--token", "x"); code != 2 || !strings.Contains(errOut, "exclusive") {
		t.Errorf("--token with SWITCHBOARD_TOKEN_FILE: exit %d: %s", code, errOut)
	}
}

// shellWords splits a command line as sh would for plain words and quotes.
func shellWords(line string) []string {
	var out []string
	var cur strings.Builder
	in, quote := false, rune(0)
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}
