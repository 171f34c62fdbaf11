// Command resolver-bench measures the Switchboard resolver against CoreDNS
// (file + cache + forward) and unbound (local-data + forward-zone) with
// dnsperf, in one run on one machine, with the same names and data:
//
//   - service-zone answers: <svc>.service.switchboard. A (3 records, TTL 5),
//     from the registry's Watch for Switchboard, a zone file for CoreDNS and
//     local-data for unbound;
//   - forwarded cache hits: fwd-<n>.bench.example.com. A, forwarded once to a local
//     upstream during warm-up and then answered from each server's cache.
//
// Each measurement runs dnsperf for -duration; -rounds rounds interleave
// the servers and the median is reported, with dnsperf's average latency.
// Latency percentiles (p50, p99, max) come from separate paced runs
// (dnsperf -v at -p99-qps for -latency-duration), also one per server,
// set and round, interleaved, medians reported.
//
// With -mode auth (auth.go) it measures instead the resolver against Knot
// DNS, NSD and CoreDNS as authoritative servers of the same zones (a
// static zone with a wildcard, a delegation and CNAME chains, and the
// service zone), each pinned to one core, dnsperf pinned to another,
// every round reported with its ratio to NSD.
//
// Run it with bench/resolver/run.sh, which builds what it needs; with
// -coredns "" (run.sh: NO_COREDNS=1) CoreDNS is left out.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

func main() {
	var (
		resolverBin = flag.String("resolver", "", "path of the resolver binary")
		corednsBin  = flag.String("coredns", "", "path of the CoreDNS binary")
		unboundBin  = flag.String("unbound", "unbound", "path of unbound")
		services    = flag.Int("services", 200, "services in the service zone (3 instances each)")
		forwarded   = flag.Int("forwarded", 200, "forwarded names")
		duration    = flag.Duration("duration", 8*time.Second, "each dnsperf run")
		rounds      = flag.Int("rounds", 3, "rounds (median reported)")
		clients     = flag.Int("clients", 8, "dnsperf -c")
		p99QPS      = flag.Int("p99-qps", 10000, "pace (qps) of the latency runs")
		latDur      = flag.Duration("latency-duration", 10*time.Second, "each paced latency run")
		latClients  = flag.Int("latency-clients", 8, "dnsperf -c of the latency runs")
		throughput  = flag.Bool("throughput", true, "run the throughput (unpaced) measurements")
		threads     = flag.Int("unbound-threads", 2, "unbound num-threads (the machine's cores)")
		extra       = flag.String("resolver-args", "", "extra resolver flags, space-separated")
		mode        = flag.String("mode", "forward", "forward: against CoreDNS and unbound (service zone, cache hits); auth: against Knot, NSD and CoreDNS serving the same zones, one core each")
		knotdBin    = flag.String("knotd", "knotd", "path of knotd (-mode auth; empty: left out)")
		nsdBin      = flag.String("nsd", "nsd", "path of nsd (-mode auth; empty: left out)")
		serverCPU   = flag.String("server-cpu", "0", "CPU the servers are pinned to (-mode auth)")
		clientCPU   = flag.String("client-cpu", "1", "CPU dnsperf is pinned to (-mode auth)")
		profile     = flag.String("profile", "", "-mode auth: perf record each server's throughput run of round 1 into <profile>.<server> (perf report -i)")
		realtime    = flag.Bool("realtime", false, "-mode auth: run the servers and dnsperf under SCHED_FIFO (chrt -f 1), for a machine shared with other work")
		baseline    = flag.String("baseline", "", "-mode auth: another resolver binary (an earlier build) measured beside -resolver as \"baseline\"")
	)
	flag.Parse()
	if *resolverBin == "" {
		log.Fatal("-resolver is required (run.sh sets it)")
	}
	if *mode == "auth" {
		runAuth(authConfig{resolver: *resolverBin, coredns: *corednsBin, knotd: *knotdBin, nsd: *nsdBin,
			services: *services, duration: *duration, latDur: *latDur, rounds: *rounds, clients: *clients,
			latQPS: *p99QPS, serverCPU: *serverCPU, clientCPU: *clientCPU, extra: strings.Fields(*extra), profile: *profile,
			baseline: *baseline, realtime: *realtime})
		return
	}
	if *mode != "forward" {
		log.Fatalf("-mode: %q is neither forward nor auth", *mode)
	}
	dir, err := os.MkdirTemp("", "resolver-bench-")
	must(err)
	atExit(func() { os.RemoveAll(dir) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	upAddr := startUpstream()
	regAddr := startRegistry(*services)

	// Query files.
	var svcQ, fwdQ strings.Builder
	for i := range *services {
		fmt.Fprintf(&svcQ, "svc-%d.service.switchboard A\n", i)
	}
	for i := range *forwarded {
		fmt.Fprintf(&fwdQ, "fwd-%d.bench.example.com A\n", i)
	}
	svcFile, fwdFile := filepath.Join(dir, "svc.txt"), filepath.Join(dir, "fwd.txt")
	must(os.WriteFile(svcFile, []byte(svcQ.String()), 0o644))
	must(os.WriteFile(fwdFile, []byte(fwdQ.String()), 0o644))

	// Equivalent data for the peers.
	var zone, local strings.Builder
	zone.WriteString("$ORIGIN switchboard.\n@ 5 IN SOA ns.switchboard. hostmaster.switchboard. 1 3600 600 86400 5\n")
	for i := range *services {
		for j := range 3 {
			fmt.Fprintf(&zone, "svc-%d.service 5 IN A %s\n", i, instanceAddr(i, j))
			fmt.Fprintf(&local, "  local-data: \"svc-%d.service.switchboard. 5 IN A %s\"\n", i, instanceAddr(i, j))
		}
	}
	must(os.WriteFile(filepath.Join(dir, "db.switchboard"), []byte(zone.String()), 0o644))

	ports := map[string]string{}
	for _, n := range []string{"switchboard", "coredns", "unbound"} {
		ports[n] = freePort()
	}
	corefile := fmt.Sprintf(`.:%s {
    bind 127.0.0.1
    file %s switchboard.
    cache
    forward . %s
}
`, ports["coredns"], filepath.Join(dir, "db.switchboard"), upAddr)
	must(os.WriteFile(filepath.Join(dir, "Corefile"), []byte(corefile), 0o644))
	upHost, upPort, _ := net.SplitHostPort(upAddr)
	unboundConf := fmt.Sprintf(`server:
  interface: 127.0.0.1
  port: %s
  num-threads: %d
  so-reuseport: yes
  do-daemonize: no
  use-syslog: no
  logfile: ""
  verbosity: 0
  username: ""
  chroot: ""
  pidfile: ""
  directory: "%s"
  do-ip6: no
  do-not-query-localhost: no
  module-config: "iterator"
  access-control: 127.0.0.0/8 allow
  ratelimit: 0
  ip-ratelimit: 0
  local-zone: "switchboard." static
  local-data: "switchboard. 5 IN SOA ns.switchboard. hostmaster.switchboard. 1 3600 600 86400 5"
%sforward-zone:
  name: "."
  forward-addr: %s@%s
`, ports["unbound"], *threads, dir, local.String(), upHost, upPort)
	must(os.WriteFile(filepath.Join(dir, "unbound.conf"), []byte(unboundConf), 0o644))

	resolverArgs := append([]string{"--dns-addr=127.0.0.1:" + ports["switchboard"],
		"--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--registry-addr=" + regAddr,
		"--upstream=" + upAddr, "--log-level=warn"}, strings.Fields(*extra)...)
	cmds := map[string]*exec.Cmd{
		"switchboard": exec.CommandContext(ctx, *resolverBin, resolverArgs...),
		"coredns":     exec.CommandContext(ctx, *corednsBin, "-conf", filepath.Join(dir, "Corefile"), "-quiet"),
		"unbound":     exec.CommandContext(ctx, *unboundBin, "-d", "-c", filepath.Join(dir, "unbound.conf")),
	}
	order := []string{"switchboard", "coredns", "unbound"}
	if *corednsBin == "" {
		order = []string{"switchboard", "unbound"}
	}
	defer runCleanups()
	pids := map[string]int{}
	for _, n := range order {
		p := cmds[n]
		p.Stdout, p.Stderr = os.Stderr, os.Stderr
		must(p.Start())
		atExit(func() { _ = p.Process.Kill(); _ = p.Wait() })
		pids[n] = p.Process.Pid
	}
	for _, n := range order {
		waitAnswer(n, ports[n], "svc-0.service.switchboard.", 3)
		// Warm the caches: every forwarded name once.
		for i := range *forwarded {
			waitAnswer(n, ports[n], fmt.Sprintf("fwd-%d.bench.example.com.", i), 2)
		}
	}
	log.Printf("%v answer the same data; %d rounds of %v per server and set", order, *rounds, *duration)

	type key struct{ set, server string }
	qps := map[key][]float64{}
	perCPU := map[key][]float64{}
	avg := map[key][]float64{}
	p50, p99, pmax := map[key][]float64{}, map[key][]float64{}, map[key][]float64{}
	sets := []struct{ name, file string }{{"service zone", svcFile}, {"forwarded, cached", fwdFile}}
	for r := range *rounds {
		rot := append(slices.Clone(order[r%len(order):]), order[:r%len(order)]...)
		for _, set := range sets {
			for _, n := range rot {
				if !*throughput {
					break
				}
				cpu0 := cpuSeconds(pids[n])
				q, a, err := dnsperf(ports[n], set.file, *duration, *clients)
				if err != nil {
					fatalf("%s %s: %v", n, set.name, err)
				}
				cpu := cpuSeconds(pids[n]) - cpu0
				// Queries answered per second of the server's own CPU time:
				// steadier than qps on a machine shared with other work.
				eff := q * duration.Seconds() / max(cpu, 0.01)
				perCPU[key{set.name, n}] = append(perCPU[key{set.name, n}], eff)
				log.Printf("round %d %-18s %-12s %9.0f qps  avg %.3f ms  %9.0f queries/CPU-s", r+1, set.name, n, q, a*1000, eff)
				qps[key{set.name, n}] = append(qps[key{set.name, n}], q)
				avg[key{set.name, n}] = append(avg[key{set.name, n}], a)
			}
			for _, n := range rot {
				l, err := latency(ports[n], set.file, *p99QPS, *latDur, *latClients)
				if err != nil {
					fatalf("%s %s latency: %v", n, set.name, err)
				}
				k := key{set.name, n}
				p50[k], p99[k], pmax[k] = append(p50[k], l.p50), append(p99[k], l.p99), append(pmax[k], l.max)
				log.Printf("round %d %-18s %-12s at %d qps: p50 %.3f ms  p99 %.3f ms  max %.3f ms  (%d answers)",
					r+1, set.name, n, *p99QPS, l.p50*1000, l.p99*1000, l.max*1000, l.n)
			}
		}
	}

	fmt.Printf("\nresolver benchmark: dnsperf -c %d, %v x %d rounds (median), latency at %d qps for %v with -c %d; %d services x 3 A, %d forwarded names\n\n",
		*clients, *duration, *rounds, *p99QPS, *latDur, *latClients, *services, *forwarded)
	fmt.Printf("| %-18s | %-12s | %10s | %12s | %10s | %10s | %10s | %14s | %14s | %14s |\n", "queries", "server", "qps", "avg latency", "p50", "p99", "max", "switchboard is", "queries/CPU-s", "switchboard is")
	fmt.Printf("|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 20), strings.Repeat("-", 14), strings.Repeat("-", 12), strings.Repeat("-", 14), strings.Repeat("-", 12), strings.Repeat("-", 12), strings.Repeat("-", 12), strings.Repeat("-", 16), strings.Repeat("-", 16), strings.Repeat("-", 16))
	for _, set := range sets {
		ours := median(qps[key{set.name, "switchboard"}])
		oursEff := median(perCPU[key{set.name, "switchboard"}])
		for _, n := range order {
			k := key{set.name, n}
			q, eff := median(qps[k]), median(perCPU[k])
			ratio, effRatio := "-", "-"
			if n != "switchboard" && q > 0 {
				ratio = fmt.Sprintf("%.2fx", ours/q)
				effRatio = fmt.Sprintf("%.2fx", oursEff/eff)
			}
			fmt.Printf("| %-18s | %-12s | %10.0f | %9.3f ms | %7.3f ms | %7.3f ms | %7.3f ms | %14s | %14.0f | %14s |\n", set.name, n, q, median(avg[k])*1000,
				median(p50[k])*1000, median(p99[k])*1000, median(pmax[k])*1000, ratio, eff, effRatio)
		}
	}
}

// cleanups run before a fatal exit, so no server outlives the driver.
var (
	cleanupMu sync.Mutex
	cleanups  []func()
)

func atExit(fn func()) {
	cleanupMu.Lock()
	cleanups = append(cleanups, fn)
	cleanupMu.Unlock()
}

func runCleanups() {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanups = nil
}

func fatalf(format string, args ...any) {
	runCleanups()
	log.Fatalf(format, args...)
}

func must(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

// cpuSeconds returns a process's user+system CPU time from /proc.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func instanceAddr(svc, i int) string { return fmt.Sprintf("10.%d.%d.%d", svc/250, svc%250, i+1) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// freePort returns a port free for TCP and UDP on 127.0.0.1.
func freePort() string {
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		must(err)
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return strconv.Itoa(port)
		}
	}
	fatalf("no free port")
	return ""
}

// waitAnswer polls until the server gives want A records for name.
func waitAnswer(server, port, name string, want int) {
	c := &dns.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		r, _, err := c.Exchange(m, "127.0.0.1:"+port)
		if err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) == want {
			return
		}
		last = fmt.Sprint(r, err)
		time.Sleep(50 * time.Millisecond)
	}
	fatalf("%s does not answer %s with %d records: %s", server, name, want, last)
}

var (
	qpsRe = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	avgRe = regexp.MustCompile(`Average Latency \(s\):\s+([0-9.]+)`)
	lost  = regexp.MustCompile(`Queries lost:\s+(\d+)`)
)

// dnsperf runs dnsperf and returns queries per second and average latency (s).
func dnsperf(port, file string, d time.Duration, clients int) (float64, float64, error) {
	out, err := exec.Command("dnsperf", "-s", "127.0.0.1", "-p", port, "-d", file,
		"-l", strconv.Itoa(int(d.Seconds())), "-c", strconv.Itoa(clients), "-t", "2").CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("dnsperf: %w\n%s", err, out)
	}
	q, a := qpsRe.FindSubmatch(out), avgRe.FindSubmatch(out)
	if q == nil || a == nil {
		return 0, 0, fmt.Errorf("no figures in dnsperf output:\n%s", out)
	}
	qv, _ := strconv.ParseFloat(string(q[1]), 64)
	av, _ := strconv.ParseFloat(string(a[1]), 64)
	if l := lost.FindSubmatch(out); l != nil && string(l[1]) != "0" {
		log.Printf("note: %s queries lost on port %s", l[1], port)
	}
	return qv, av, nil
}

// latencies are percentiles of one paced run's per-query latencies (s).
type latencies struct {
	p50, p99, max float64
	n             int
}

// latency runs dnsperf -v paced at qps for d with the given clients and
// returns percentiles of its per-query latencies.
func latency(port, file string, qps int, d time.Duration, clients int) (latencies, error) {
	return latencyCmd(exec.Command("dnsperf", "-s", "127.0.0.1", "-p", port, "-d", file, "-l", strconv.Itoa(int(d.Seconds())),
		"-Q", strconv.Itoa(qps), "-c", strconv.Itoa(clients), "-v"))
}

// latencyCmd runs a dnsperf -v command and returns percentiles of its
// per-query latencies.
func latencyCmd(cmd *exec.Cmd) (latencies, error) {
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return latencies{}, fmt.Errorf("dnsperf: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return latencies{}, fmt.Errorf("dnsperf: %w", err)
	}
	var lat []float64
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "> ") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			lat = append(lat, v)
		}
	}
	if err := cmd.Wait(); err != nil {
		return latencies{}, fmt.Errorf("dnsperf: %w", err)
	}
	if len(lat) == 0 {
		return latencies{}, errors.New("no latencies in dnsperf -v output")
	}
	slices.Sort(lat)
	return latencies{p50: lat[len(lat)/2], p99: lat[len(lat)*99/100], max: lat[len(lat)-1], n: len(lat)}, nil
}

// startUpstream serves fwd-<n>.bench.example.com. (two A records, TTL 3600) and
// NXDOMAIN for anything else, on loopback UDP and TCP.
func startUpstream() string {
	port := freePort()
	addr := "127.0.0.1:" + port
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		q := r.Question[0]
		if strings.HasPrefix(q.Name, "fwd-") && strings.HasSuffix(q.Name, ".bench.example.com.") && q.Qtype == dns.TypeA {
			for _, ip := range []string{"198.51.100.1", "198.51.100.2"} {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600}, A: net.ParseIP(ip)})
			}
		} else {
			m.Rcode = dns.RcodeNameError
			soa, _ := dns.NewRR("bench.example.com. 3600 IN SOA ns.bench.example.com. h.bench.example.com. 1 3600 600 86400 300")
			m.Ns = []dns.RR{soa}
		}
		_ = w.WriteMsg(m)
	})
	var wg sync.WaitGroup
	for _, network := range []string{"udp", "tcp"} {
		srv := &dns.Server{Addr: addr, Net: network, Handler: h}
		wg.Add(1)
		srv.NotifyStartedFunc = wg.Done
		go func() { fatalf("upstream: %v", srv.ListenAndServe()) }()
	}
	wg.Wait()
	return addr
}

// registry is a minimal registry: Watch sends one snapshot of n services
// with three passing instances each; WatchRecords sends no records.
type registry struct {
	registryv1.UnimplementedRegistryServer
	n int
}

func (g *registry) Watch(_ *registryv1.WatchRequest, s grpc.ServerStreamingServer[registryv1.WatchResponse]) error {
	var ins []*registryv1.Instance
	for i := range g.n {
		for j := range 3 {
			ins = append(ins, &registryv1.Instance{Service: fmt.Sprintf("svc-%d", i), Id: fmt.Sprintf("svc-%d-%d", i, j),
				Address: instanceAddr(i, j), Port: 8080, Health: registryv1.HealthStatus_HEALTH_STATUS_PASSING})
		}
	}
	if err := s.Send(&registryv1.WatchResponse{Index: 1, Instances: ins}); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

func (g *registry) WatchRecords(_ *registryv1.WatchRecordsRequest, s grpc.ServerStreamingServer[registryv1.WatchRecordsResponse]) error {
	if err := s.Send(&registryv1.WatchRecordsResponse{Index: 1}); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

func startRegistry(n int) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	// The resolver's client pings every 30 s; the registry's policy allows it.
	srv := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}))
	registryv1.RegisterRegistryServer(srv, &registry{n: n})
	go func() { fatalf("registry: %v", srv.Serve(ln)) }()
	return ln.Addr().String()
}
