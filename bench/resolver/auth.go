package main

// The authoritative benchmark (-mode auth): the resolver against Knot DNS,
// NSD and CoreDNS serving the same zones, each pinned to one core, dnsperf
// pinned to another, rounds interleaved, every round reported.

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// authConfig is what -mode auth takes from the flags.
type authConfig struct {
	resolver, coredns, knotd, nsd string
	baseline                      string // another resolver build, measured beside it
	services                      int
	duration, latDur              time.Duration
	rounds, clients, latQPS       int
	serverCPU, clientCPU          string
	extra                         []string
	profile                       string // perf record each server in round 1 into <profile>.<server>
	realtime                      bool   // run servers and dnsperf under SCHED_FIFO (chrt -f 1)
}

// benchZone is the static zone every server loads from one file: apex
// data, addresses, a CNAME chain, a wildcard, and a delegation with glue.
const benchZone = `$ORIGIN bench.test.
$TTL 300
@        IN SOA ns1 hostmaster 2026120201 3600 600 86400 60
@        IN NS  ns1
@        IN MX  10 mail
@        IN TXT "v=spf1 -all"
ns1      IN A   192.0.2.53
mail     IN A   192.0.2.25
www      IN A   192.0.2.10
www      IN AAAA 2001:db8::10
alias    IN CNAME alias2
alias2   IN CNAME www
*.wild   IN A   192.0.2.80
*.wild   IN AAAA 2001:db8::80
*.wild   IN MX  10 mail
sub      IN NS  ns.sub
sub      IN NS  ns2.sub
ns.sub   IN A   192.0.2.101
ns2.sub  IN A   192.0.2.102
_http._tcp IN SRV 10 5 80 www
`

// serviceZoneFile writes for the peers the service zone the resolver
// builds from the registry's n services (three instances each): A and
// SRV at <svc>.service, SRV at _<svc>._tcp.service, the targets' A at
// <id>.<svc>.instance, the apex NS at ns.switchboard. (127.0.0.1).
func serviceZoneFile(n int) string {
	var b strings.Builder
	b.WriteString("$ORIGIN switchboard.\n@ 5 IN SOA ns.switchboard. hostmaster.switchboard. 1 3600 600 86400 5\n@ 5 IN NS ns.switchboard.\nns 5 IN A 127.0.0.1\n")
	for i := range n {
		for j := range 3 {
			id := fmt.Sprintf("svc-%d-%d", i, j)
			target := fmt.Sprintf("%s.svc-%d.instance.switchboard.", id, i)
			fmt.Fprintf(&b, "svc-%d.service 5 IN A %s\n", i, instanceAddr(i, j))
			fmt.Fprintf(&b, "svc-%d.service 5 IN SRV 1 1 8080 %s\n", i, target)
			fmt.Fprintf(&b, "_svc-%d._tcp.service 5 IN SRV 1 1 8080 %s\n", i, target)
			fmt.Fprintf(&b, "%s 5 IN A %s\n", target, instanceAddr(i, j))
		}
	}
	return b.String()
}

// authQueries is the query mix, in a fixed shuffled order: service A and
// SRV, static answers, CNAME chains, wildcard synthesis, referrals below
// the cut, NXDOMAIN and NODATA. The kinds and their shares are printed.
func authQueries(services int) (lines []string, kinds map[string]int) {
	kinds = map[string]int{}
	add := func(kind, name, qtype string, n int) {
		for range n {
			lines = append(lines, name+" "+qtype)
			kinds[kind]++
		}
	}
	for i := range services {
		add("service A", fmt.Sprintf("svc-%d.service.switchboard.", i), "A", 3)
		add("service SRV", fmt.Sprintf("_svc-%d._tcp.service.switchboard.", i), "SRV", 1)
		add("service SRV", fmt.Sprintf("svc-%d.service.switchboard.", i), "SRV", 1)
	}
	for i := range services {
		add("wildcard", fmt.Sprintf("h%d.wild.bench.test.", i), "A", 1)
		if i%2 == 0 {
			add("wildcard", fmt.Sprintf("h%d.wild.bench.test.", i), "MX", 1)
		}
		add("referral", fmt.Sprintf("h%d.sub.bench.test.", i), "A", 1)
		add("NXDOMAIN", fmt.Sprintf("nope-%d.bench.test.", i), "A", 1)
		add("NXDOMAIN", fmt.Sprintf("nope-%d.svc-%d.service.switchboard.", i, i), "A", 1)
	}
	for range services / 4 {
		add("static", "www.bench.test.", "A", 1)
		add("static", "www.bench.test.", "AAAA", 1)
		add("static", "bench.test.", "MX", 1)
		add("static", "bench.test.", "NS", 1)
		add("CNAME", "alias.bench.test.", "A", 2)
		add("NODATA", "www.bench.test.", "TXT", 1)
		add("static", "_http._tcp.bench.test.", "SRV", 1)
	}
	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
	return lines, kinds
}

// authServer is one server under test.
type authServer struct {
	name string
	port string
	cmd  *exec.Cmd
	pid  int
}

func runAuth(c authConfig) {
	dir, err := os.MkdirTemp("", "resolver-auth-bench-")
	must(err)
	atExit(func() { os.RemoveAll(dir) })
	defer runCleanups()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	regAddr := startRegistry(c.services)
	benchFile, svcFile := filepath.Join(dir, "bench.test.zone"), filepath.Join(dir, "switchboard.zone")
	must(os.WriteFile(benchFile, []byte(benchZone), 0o644))
	must(os.WriteFile(svcFile, []byte(serviceZoneFile(c.services)), 0o644))
	lines, kinds := authQueries(c.services)
	qFile := filepath.Join(dir, "queries.txt")
	must(os.WriteFile(qFile, []byte(strings.Join(lines, "\n")+"\n"), 0o644))

	// pinned is the command prefix of the servers and dnsperf: taskset,
	// under chrt -f 1 with -realtime, so that on a machine shared with
	// other work they get their cores when they want them (the kernel's
	// RT throttling still leaves others 5 %).
	pinned = []string{"taskset"}
	if c.realtime {
		pinned = []string{"chrt", "-f", "1", "taskset"}
	}
	var servers []*authServer
	pin := func(args ...string) []string { return append([]string{"-c", c.serverCPU}, args...) }
	start := func(name string, env []string, args ...string) *authServer {
		s := &authServer{name: name}
		s.cmd = exec.CommandContext(ctx, pinned[0], append(pinned[1:], args...)...)
		s.cmd.Env = append(os.Environ(), env...)
		s.cmd.Stdout, s.cmd.Stderr = os.Stderr, os.Stderr
		must(s.cmd.Start())
		atExit(func() { _ = s.cmd.Process.Kill(); _ = s.cmd.Wait() })
		s.pid = s.cmd.Process.Pid
		servers = append(servers, s)
		return s
	}

	// The resolver: the static zone from the file, the service zone from
	// the registry's Watch.
	for _, r := range [][2]string{{"switchboard", c.resolver}, {"baseline", c.baseline}} {
		name, bin := r[0], r[1]
		if bin == "" {
			continue
		}
		rp := freePort()
		args := append([]string{bin, "--dns-addr=127.0.0.1:" + rp, "--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0",
			"--registry-addr=" + regAddr, "--zone-file=" + benchFile, "--log-level=warn"}, c.extra...)
		start(name, nil, pin(args...)...).port = rp
	}

	if c.knotd != "" {
		kp := freePort()
		must(os.MkdirAll(filepath.Join(dir, "knot"), 0o755))
		conf := fmt.Sprintf(`server:
    listen: 127.0.0.1@%s
    rundir: %s
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: %s
control:
    listen: %s
log:
  - target: stderr
    any: warning
template:
  - id: default
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: bench.test.
    file: %s
  - domain: switchboard.
    file: %s
`, kp, filepath.Join(dir, "knot"), filepath.Join(dir, "knot", "db"), filepath.Join(dir, "knot", "knot.sock"), benchFile, svcFile)
		cf := filepath.Join(dir, "knot.conf")
		must(os.WriteFile(cf, []byte(conf), 0o644))
		start("knot", nil, pin(c.knotd, "-c", cf)...).port = kp
	}
	if c.nsd != "" {
		np := freePort()
		nd := filepath.Join(dir, "nsd")
		must(os.MkdirAll(nd, 0o755))
		conf := fmt.Sprintf(`server:
    ip-address: 127.0.0.1@%s
    server-count: 1
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: %s
    database: ""
    zonelistfile: %s
    xfrdfile: %s
    pidfile: %s
    logfile: %s
    verbosity: 0
    rrl-ratelimit: 0
    hide-version: yes
remote-control:
    control-enable: no
zone:
    name: bench.test.
    zonefile: %s
zone:
    name: switchboard.
    zonefile: %s
`, np, nd, filepath.Join(nd, "zone.list"), filepath.Join(nd, "xfrd.state"), filepath.Join(nd, "nsd.pid"),
			filepath.Join(nd, "nsd.log"), benchFile, svcFile)
		cf := filepath.Join(dir, "nsd.conf")
		must(os.WriteFile(cf, []byte(conf), 0o644))
		start("nsd", nil, pin(c.nsd, "-d", "-c", cf)...).port = np
	}
	if c.coredns != "" {
		cp := freePort()
		corefile := fmt.Sprintf(`bench.test.:%[1]s {
    bind 127.0.0.1
    file %[2]s
}
switchboard.:%[1]s {
    bind 127.0.0.1
    file %[3]s
}
`, cp, benchFile, svcFile)
		cf := filepath.Join(dir, "Corefile")
		must(os.WriteFile(cf, []byte(corefile), 0o644))
		start("coredns", nil, pin(c.coredns, "-conf", cf, "-quiet")...).port = cp
	}
	for _, s := range servers {
		waitAnswer(s.name, s.port, "svc-0.service.switchboard.", 3)
		waitAnswer(s.name, s.port, "www.bench.test.", 1)
	}

	// Every answer checked before any is timed: each server against Knot
	// (the reference the resolver's own tests use), or against NSD
	// without Knot.
	ref := ""
	for _, s := range servers {
		if s.name == "knot" || (ref == "" && s.name == "nsd") {
			ref = s.port
		}
	}
	distinct := slices.Compact(slices.Sorted(slices.Values(lines)))
	if ref != "" {
		for _, s := range servers {
			if s.port == ref {
				continue
			}
			diffs := 0
			for _, l := range distinct {
				f := strings.Fields(l)
				qt := dns.StringToType[f[1]]
				want, got := answerOf(ref, f[0], qt), answerOf(s.port, f[0], qt)
				if want != got {
					if diffs < 5 {
						log.Printf("%s differs from the reference on %s:\n  want %s\n  got  %s", s.name, l, want, got)
					}
					diffs++
				}
			}
			log.Printf("answers: %s agrees with the reference on %d of %d distinct questions", s.name, len(distinct)-diffs, len(distinct))
			if diffs > 0 && (s.name == "switchboard" || s.name == "baseline") {
				fatalf("the resolver answers %d questions differently from the reference", diffs)
			}
		}
	}

	var kindList []string
	for k, n := range kinds {
		kindList = append(kindList, fmt.Sprintf("%s %.0f%%", k, 100*float64(n)/float64(len(lines))))
	}
	slices.Sort(kindList)
	log.Printf("query mix: %d queries (%d distinct): %s", len(lines), len(distinct), strings.Join(kindList, ", "))
	log.Printf("servers on CPU %s, dnsperf -c %d on CPU %s; %d rounds of %v (throughput) + %v at %d qps (latency)",
		c.serverCPU, c.clients, c.clientCPU, c.rounds, c.duration, c.latDur, c.latQPS)

	type result struct {
		qps, perCPU, p50, p99 float64
		rcodes                string
	}
	res := map[string][]result{}
	for r := range c.rounds {
		rot := append(slices.Clone(servers[r%len(servers):]), servers[:r%len(servers)]...)
		for _, s := range rot {
			stop := func() {}
			if r == 0 && c.profile != "" {
				stop = startProfile(s.pid, c.profile+"."+s.name)
			}
			cpu0 := treeCPUSeconds(s.pid)
			q, rc, err := pinnedDnsperf(c.clientCPU, s.port, qFile, c.duration, c.clients)
			cpu := treeCPUSeconds(s.pid) - cpu0
			stop()
			if err != nil {
				fatalf("%s: %v", s.name, err)
			}
			// Queries answered per second of the server's own CPU time
			// (all its processes): steadier than qps when other work
			// shares the core.
			eff := q * c.duration.Seconds() / max(cpu, 0.01)
			l, err := pinnedLatency(c.clientCPU, s.port, qFile, c.latQPS, c.latDur)
			if err != nil {
				fatalf("%s latency: %v", s.name, err)
			}
			res[s.name] = append(res[s.name], result{q, eff, l.p50, l.p99, rc})
			log.Printf("round %d %-12s %9.0f qps  %9.0f queries/CPU-s  p50 %.3f ms  p99 %.3f ms  (%s)", r+1, s.name, q, eff, l.p50*1000, l.p99*1000, rc)
		}
	}

	fmt.Printf("\nauthoritative benchmark: each server on CPU %s, dnsperf -c %d on CPU %s, %v per round, %d rounds interleaved; p50/p99 at %d qps for %v; %d queries (%s)\n\n",
		c.serverCPU, c.clients, c.clientCPU, c.duration, c.rounds, c.latQPS, c.latDur, len(lines), strings.Join(kindList, ", "))
	var nsd []result
	if r, ok := res["nsd"]; ok {
		nsd = r
	}
	fmt.Printf("| server | round | qps | vs NSD | queries/CPU-s | vs NSD | p50 | p99 | response codes |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range servers {
		for i, r := range res[s.name] {
			ratio, effRatio := "-", "-"
			if len(nsd) > i && nsd[i].qps > 0 {
				ratio = fmt.Sprintf("%.2f×", r.qps/nsd[i].qps)
				effRatio = fmt.Sprintf("%.2f×", r.perCPU/nsd[i].perCPU)
			}
			fmt.Printf("| %s | %d | %.0f | %s | %.0f | %s | %.3f ms | %.3f ms | %s |\n", s.name, i+1, r.qps, ratio, r.perCPU, effRatio, r.p50*1000, r.p99*1000, r.rcodes)
		}
	}
}

// answerOf is one server's answer to name/qtype over UDP without EDNS (as
// dnsperf asks), normalized: rcode, AA, TC, and each section's records
// with TTLs zeroed, sorted.
func answerOf(port, name string, qtype uint16) string {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	cl := &dns.Client{Timeout: 2 * time.Second}
	var r *dns.Msg
	var err error
	for range 3 {
		if r, _, err = cl.Exchange(m, "127.0.0.1:"+port); err == nil {
			break
		}
	}
	if err != nil {
		return "error: " + err.Error()
	}
	// Positive answers may carry the zone's NS in the authority section
	// and their addresses in the additional one (NSD, CoreDNS) or not
	// (Knot, the resolver): optional data (RFC 2181 §6.1), left out of
	// the comparison.
	skip := map[string]bool{}
	if len(r.Answer) > 0 {
		ns := r.Ns[:0]
		for _, rr := range r.Ns {
			if n, ok := rr.(*dns.NS); ok {
				skip[strings.ToLower(n.Ns)] = true
				continue
			}
			ns = append(ns, rr)
		}
		r.Ns = ns
	}
	sec := func(rrs []dns.RR) string {
		var s []string
		for _, rr := range rrs {
			if rr.Header().Rrtype == dns.TypeOPT || skip[strings.ToLower(rr.Header().Name)] {
				continue
			}
			rr = dns.Copy(rr)
			rr.Header().Ttl = 0
			s = append(s, strings.ToLower(rr.String()))
		}
		slices.Sort(s)
		return strings.Join(s, "; ")
	}
	return fmt.Sprintf("%s aa=%v tc=%v | an: %s | ns: %s | ar: %s", dns.RcodeToString[r.Rcode], r.Authoritative, r.Truncated,
		sec(r.Answer), sec(r.Ns), sec(r.Extra))
}

var rcodesRe = regexp.MustCompile(`Response codes:\s+(.*)`)

// pinned is the command that pins a server or dnsperf to a CPU (set by
// runAuth).
var pinned = []string{"taskset"}

// pinnedDnsperf runs dnsperf on cpu for d and returns its qps and its
// response-code summary.
func pinnedDnsperf(cpu, port, file string, d time.Duration, clients int) (float64, string, error) {
	out, err := exec.Command(pinned[0], append(pinned[1:], "-c", cpu, "dnsperf", "-s", "127.0.0.1", "-p", port, "-d", file,
		"-l", strconv.Itoa(int(d.Seconds())), "-c", strconv.Itoa(clients), "-t", "2")...).CombinedOutput()
	if err != nil {
		return 0, "", fmt.Errorf("dnsperf: %w\n%s", err, out)
	}
	q := qpsRe.FindSubmatch(out)
	if q == nil {
		return 0, "", fmt.Errorf("no figures in dnsperf output:\n%s", out)
	}
	qv, _ := strconv.ParseFloat(string(q[1]), 64)
	rc := ""
	if m := rcodesRe.FindSubmatch(out); m != nil {
		rc = string(bytes.TrimSpace(m[1]))
	}
	if l := lost.FindSubmatch(out); l != nil && string(l[1]) != "0" {
		rc += ", " + string(l[1]) + " lost"
	}
	return qv, rc, nil
}

// pinnedLatency is latency with dnsperf pinned to cpu.
func pinnedLatency(cpu, port, file string, qps int, d time.Duration) (latencies, error) {
	return latencyCmd(exec.Command(pinned[0], append(pinned[1:], "-c", cpu, "dnsperf", "-s", "127.0.0.1", "-p", port, "-d", file,
		"-l", strconv.Itoa(int(d.Seconds())), "-Q", strconv.Itoa(qps), "-c", "4", "-v")...))
}

// startProfile samples the process's CPU (call graphs) with perf record
// into out, when perf is installed; read it with perf report -i out.
func startProfile(pid int, out string) func() {
	perf, err := exec.LookPath("perf")
	if err != nil {
		log.Printf("no perf: -profile ignored")
		return func() {}
	}
	var pids []string
	for _, p := range treePIDs(pid) {
		pids = append(pids, strconv.Itoa(p))
	}
	cmd := exec.Command(perf, "record", "-g", "-p", strings.Join(pids, ","), "-o", out)
	if err := cmd.Start(); err != nil {
		log.Printf("perf: %v", err)
		return func() {}
	}
	return func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }
}

// treeCPUSeconds is the user+system CPU time of pid and every process
// descended from it (NSD forks its workers), from /proc.
func treeCPUSeconds(pid int) float64 {
	total := 0.0
	for _, p := range treePIDs(pid) {
		total += cpuSeconds(p)
	}
	return total
}

// treePIDs returns pid and every process descended from it, from /proc.
func treePIDs(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	parent := map[int]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		st := string(b)
		f := strings.Fields(st[strings.LastIndexByte(st, ')')+2:])
		if len(f) > 1 {
			parent[p], _ = strconv.Atoi(f[1])
		}
	}
	var tree []int
	for p := range parent {
		for q := p; q > 1; q = parent[q] {
			if q == pid {
				tree = append(tree, p)
				break
			}
		}
	}
	return tree
}
