package resolver

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// secondaryDeadline is how soon a change must show on a secondary: the
// resolver NOTIFYs, the secondary asks for the SOA and transfers.
const secondaryDeadline = 2 * time.Second

// secondaryZoneText is the zone file the secondary tests serve beside the
// service zone.
func secondaryZoneText(serial int, www string) string {
	return fmt.Sprintf("$ORIGIN files.test.\n$TTL 300\n@ SOA ns1 hostmaster %d 3600 600 86400 60\n@ NS ns1\nns1 A 192.0.2.53\nwww A %s\n", serial, www)
}

// secondaryKind starts one secondary server: given its port, a work
// directory, our address, the zones and the TSIG key (nil: none), it
// returns a function that stops it and its output.
type secondaryKind struct {
	name  string
	tool  string
	tsig  bool
	start func(t *testing.T, bin string, port int, dir, primary string, zones []string, key *tsigKey) (stop func(), out *syncBuffer, exited <-chan error)
	// checkLog, when set, checks the secondary's log at the end.
	checkLog func(t *testing.T, log string)
}

// TestSecondaries runs real NSD and Knot DNS as secondaries of the
// resolver (NSD with TSIG, Knot without): each transfers the service zone
// and a zone file's zone; a registration shows on the secondary within
// 2 s of the registry's change (NOTIFY, then IXFR), a deregistration
// disappears within 2 s, and a zone file's change follows its reload.
func TestSecondaries(t *testing.T) {
	for _, kind := range []secondaryKind{
		{name: "nsd", tool: "nsd", tsig: true, start: startNSD},
		{name: "knot", tool: "knotd", start: startKnotSecondary, checkLog: knotAppliedIXFR},
	} {
		t.Run(kind.name, func(t *testing.T) { testSecondary(t, kind) })
	}
}

func testSecondary(t *testing.T, kind secondaryKind) {
	bin := sbinTool(t, kind.tool)
	dir := t.TempDir()
	zoneFile := filepath.Join(dir, "files.test.zone")
	if err := os.WriteFile(zoneFile, []byte(secondaryZoneText(1, "192.0.2.1")), 0o644); err != nil {
		t.Fatal(err)
	}
	reg, regAddr := startFakeRegistry(t)
	// A service zone larger than the changes below, so they go as IXFR
	// (changes larger than the zone go whole).
	for i := range 8 {
		reg.put(&registryv1.Instance{Service: "db", Id: "db-" + strconv.Itoa(i), Address: "10.2.0." + strconv.Itoa(i+1), Port: 5432, Health: registryv1.HealthStatus_HEALTH_STATUS_PASSING})
	}
	secPort := freeDNSPort(t)
	secAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(secPort))
	args := []string{"--dns-addr=127.0.0.1:0", "--registry-addr=" + regAddr, "--zone-file=" + zoneFile,
		"--transfer-allow=127.0.0.1/32", "--notify=" + secAddr, "--log-level=debug"}
	var key *tsigKey
	if kind.tsig {
		args = append(args, "--transfer-tsig="+testTSIG)
		var err error
		if key, err = parseTSIGKey(testTSIG); err != nil {
			t.Fatal(err)
		}
	}
	inst := servicetest.Start(t, Spec(), args...)
	primary := inst.Addrs["dns"]
	e := &testEnv{reg: reg, dns: primary}
	e.waitAnswers(t, "db.service.switchboard.", dns.TypeA, 8)

	zones := []string{"switchboard.", "files.test."}
	stop, out, exited := kind.start(t, bin, secPort, filepath.Join(dir, kind.name), primary, zones, key)
	t.Cleanup(func() {
		stop()
		if t.Failed() || testing.Verbose() {
			t.Logf("%s output:\n%s", kind.name, out.String())
		}
	})
	sec := &secondary{t: t, addr: secAddr, exited: exited, out: out}

	// The first transfer: the secondary serves our serial of each zone.
	for _, z := range zones {
		want := e.soaSerial(t, z)
		sec.await(fmt.Sprintf("%s SOA serial %d", z, want), 30*time.Second, func(r *dns.Msg) bool {
			return len(r.Answer) == 1 && r.Answer[0].(*dns.SOA).Serial == want
		}, z, dns.TypeSOA)
	}
	hasA := func(addr string) func(*dns.Msg) bool {
		return func(r *dns.Msg) bool {
			for _, rr := range r.Answer {
				if a, ok := rr.(*dns.A); ok && a.A.String() == addr {
					return true
				}
			}
			return false
		}
	}

	reg.put(&registryv1.Instance{Service: "web", Id: "web-1", Address: "10.0.0.1", Port: 8080, Health: registryv1.HealthStatus_HEALTH_STATUS_PASSING})
	took := sec.await("web registered", secondaryDeadline, hasA("10.0.0.1"), "web.service.switchboard.", dns.TypeA)
	t.Logf("%s: registration answered by the secondary after %v", kind.name, took.Round(time.Millisecond))
	// A second instance: an IXFR on top of the first.
	reg.put(&registryv1.Instance{Service: "web", Id: "web-2", Address: "10.0.0.2", Port: 8080, Health: registryv1.HealthStatus_HEALTH_STATUS_PASSING})
	took = sec.await("web-2 registered", secondaryDeadline, hasA("10.0.0.2"), "web.service.switchboard.", dns.TypeA)
	t.Logf("%s: second registration answered after %v", kind.name, took.Round(time.Millisecond))

	reg.remove("web", "web-1")
	reg.remove("web", "web-2")
	took = sec.await("web deregistered", secondaryDeadline, func(r *dns.Msg) bool {
		return r.Rcode == dns.RcodeNameError
	}, "web.service.switchboard.", dns.TypeA)
	t.Logf("%s: deregistration gone from the secondary after %v", kind.name, took.Round(time.Millisecond))
	sec.await("db still served", secondaryDeadline, hasA("10.2.0.1"), "db.service.switchboard.", dns.TypeA)

	// A zone file's change: reloaded within zoneCheckInterval (the file
	// is polled), then NOTIFY and transfer.
	if err := os.WriteFile(zoneFile, []byte(secondaryZoneText(2, "192.0.2.2")), 0o644); err != nil {
		t.Fatal(err)
	}
	took = sec.await("www.files.test changed", zoneCheckInterval+2*racyWindow+secondaryDeadline, hasA("192.0.2.2"), "www.files.test.", dns.TypeA)
	t.Logf("%s: zone file change answered by the secondary %v after the write (the file is polled every %v)", kind.name, took.Round(time.Millisecond), zoneCheckInterval)
	if kind.checkLog != nil {
		kind.checkLog(t, out.String())
	}
}

// secondary polls a secondary server.
type secondary struct {
	t      *testing.T
	addr   string
	exited <-chan error
	out    *syncBuffer
}

// await asks the secondary (name, qtype) over UDP until ok holds, at most
// for d, and returns how long it took.
func (s *secondary) await(what string, d time.Duration, ok func(*dns.Msg) bool, name string, qtype uint16) time.Duration {
	s.t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	last := "no answer"
	var errs []string
	for {
		select {
		case err := <-s.exited:
			s.t.Fatalf("%s: the secondary exited: %v\n%s", what, err, s.out.String())
		default:
		}
		r, _, err := c.Exchange(q(name, qtype), s.addr)
		switch {
		case err != nil:
			last = err.Error()
			errs = append(errs, time.Since(start).Round(time.Millisecond).String()+": "+last)
		case ok(r):
			if took := time.Since(start); took > d/2 {
				s.t.Logf("%s: slow (%v); answers before: %q", what, took, errs)
			}
			return time.Since(start)
		default:
			last = r.String()
			if len(errs) == 0 || !strings.HasSuffix(errs[len(errs)-1], dns.RcodeToString[r.Rcode]) {
				errs = append(errs, fmt.Sprintf("%v: %d answers %s", time.Since(start).Round(time.Millisecond), len(r.Answer), dns.RcodeToString[r.Rcode]))
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not on the secondary within %v; last answer to %s %s:\n%s", what, d, name, dns.TypeToString[qtype], last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sbinTool finds a daemon also in the sbin directories Debian installs it
// to (not on a user's PATH); without it the test is skipped, or fails
// under CI.
func sbinTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		if p := filepath.Join(d, name); fileExists(p) {
			return p
		}
	}
	return servicetest.Tool(t, name)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// runDaemon starts cmd with its output captured and returns how to stop
// it (SIGTERM, then SIGKILL after 10 s) and a channel that gets its exit.
func runDaemon(t *testing.T, cmd *exec.Cmd) (stop func(), out *syncBuffer, exited <-chan error) {
	t.Helper()
	out = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", cmd.Path, err)
	}
	ch := make(chan error, 1)
	done := make(chan struct{})
	go func() { ch <- cmd.Wait(); close(done) }()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	return stop, out, ch
}

// startNSD runs nsd in the foreground on 127.0.0.1@port as a secondary of
// primary for zones: no root, no chroot, no database file, everything in
// dir.
func startNSD(t *testing.T, bin string, port int, dir, primary string, zones []string, key *tsigKey) (func(), *syncBuffer, <-chan error) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "xfr"), 0o755); err != nil {
		t.Fatal(err)
	}
	host, pport, _ := net.SplitHostPort(primary)
	keyName, keyRef := "", "NOKEY"
	var b strings.Builder
	fmt.Fprintf(&b, `server:
    ip-address: 127.0.0.1@%d
    port: %d
    username: ""
    chroot: ""
    zonesdir: "%s"
    database: ""
    zonelistfile: "%s/zone.list"
    xfrdfile: "%s/xfrd.state"
    xfrdir: "%s/xfr"
    pidfile: "%s/nsd.pid"
    verbosity: 2
    server-count: 1
    rrl-ratelimit: 0
    xfrd-reload-timeout: 0
remote-control:
    control-enable: no
`, port, port, dir, dir, dir, dir, dir)
	if key != nil {
		keyName = strings.TrimSuffix(key.name, ".")
		keyRef = keyName
		fmt.Fprintf(&b, "key:\n    name: %q\n    algorithm: %s\n    secret: %q\n", keyName, strings.TrimSuffix(key.alg, "."), key.secret)
	}
	for _, z := range zones {
		fmt.Fprintf(&b, "zone:\n    name: %q\n    zonefile: %q\n    request-xfr: %s@%s %s\n    allow-notify: %s %s\n",
			z, strings.TrimSuffix(z, ".")+".zone", host, pport, keyRef, host, keyRef)
	}
	conf := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return runDaemon(t, exec.Command(bin, "-d", "-c", conf))
}

// startKnotSecondary runs knotd on 127.0.0.1@port as a secondary of
// primary for zones, its storage in dir.
func startKnotSecondary(t *testing.T, bin string, port int, dir, primary string, zones []string, key *tsigKey) (func(), *syncBuffer, <-chan error) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "db"), 0o755); err != nil {
		t.Fatal(err)
	}
	host, pport, _ := net.SplitHostPort(primary)
	var b strings.Builder
	fmt.Fprintf(&b, `server:
    listen: 127.0.0.1@%d
    rundir: %s
database:
    storage: %s
control:
    listen: %s
log:
  - target: stderr
    any: info
`, port, dir, filepath.Join(dir, "db"), filepath.Join(dir, "knot.sock"))
	keyLine := ""
	if key != nil {
		fmt.Fprintf(&b, "key:\n  - id: %s\n    algorithm: %s\n    secret: %s\n", key.name, strings.TrimSuffix(key.alg, "."), key.secret)
		keyLine = "\n    key: " + key.name
	}
	fmt.Fprintf(&b, `remote:
  - id: primary
    address: %s@%s%s
acl:
  - id: notify-from-primary
    address: %s
    action: notify%s
template:
  # No journal: on a loaded test machine its synchronous writes delay
  # applying a transfer by up to a second; IXFR is applied all the same.
  - id: default
    storage: %s
    zonefile-sync: -1
    zonefile-load: none
    journal-content: none
    master: primary
    acl: notify-from-primary
zone:
`, host, pport, keyLine, host, keyLine, dir)
	for _, z := range zones {
		fmt.Fprintf(&b, "  - domain: %s\n", z)
	}
	conf := filepath.Join(dir, "knot.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return runDaemon(t, exec.Command(bin, "-c", conf))
}

// knotAppliedIXFR checks that Knot took the service zone's changes as
// IXFR (RFC 1995): it logs each one, and falls back to AXFR when an IXFR
// does not apply (a record deleted that it does not hold, a serial out of
// sequence).
func knotAppliedIXFR(t *testing.T, log string) {
	t.Helper()
	n := 0
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, "[switchboard.]") {
			continue
		}
		if strings.Contains(l, "IXFR, incoming") && strings.Contains(l, "finished") {
			n++
		}
		if strings.Contains(l, "fallback to AXFR") || strings.Contains(l, "AXFR-style IXFR") {
			t.Errorf("knotd did not take an IXFR of switchboard. as one: %s", l)
		}
	}
	if n < 2 {
		t.Errorf("knotd took %d IXFRs of switchboard., want at least 2", n)
	}
}
