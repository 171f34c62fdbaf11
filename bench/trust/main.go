// Command trust-bench measures what the trust layer (mutual TLS and the ACL)
// costs, in one run, each comparison interleaved round by round:
//
//  1. Pick RPCs/s against a balancer (and its registry) in plaintext vs
//     over mTLS with an ACL file and bearer tokens (pick.go);
//  2. registrations/s on the registry's embedded store without an ACL, with
//     one, and with one over mTLS (register.go);
//  3. the edge's HTTP req/s (wrk) with and without mTLS and an ACL on its
//     control plane: the data plane never consults the ACL (edge.go).
//
// Every round is printed with its ratio, then the median; the order of the
// setups alternates from round to round so that drift does not favour one.
//
//	go run ./bench/trust [-rounds 5] [-duration 3s] [-c 4] [-wrk-duration 5s]
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchboard-net/switchboard/pkg/access"
	"github.com/switchboard-net/switchboard/pkg/certs"
	"github.com/switchboard-net/switchboard/pkg/config"
	"github.com/switchboard-net/switchboard/pkg/service"
)

var (
	rounds   = flag.Int("rounds", 5, "interleaved rounds of every figure")
	duration = flag.Duration("duration", 3*time.Second, "length of one gRPC measurement (figures 1 and 2)")
	conc     = flag.Int("c", 4, "concurrent callers in the gRPC measurements")
	wrkDur   = flag.Duration("wrk-duration", 5*time.Second, "length of one wrk measurement (figure 3)")
	wrkConns = flag.Int("wrk-conns", 50, "wrk connections (figure 3); wrk runs with one thread")
	figures  = flag.String("figures", "pick,register,edge", "figures to run, comma-separated")
	logFile  = flag.String("log", "", "write the services' logs to this file (default: discarded)")
)

// callTimeout bounds every single RPC or HTTP request.
const callTimeout = 5 * time.Second

var logOut io.Writer = io.Discard

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "trust-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	if *rounds < 1 || *duration <= 0 || *conc < 1 || *wrkDur < time.Second || *wrkConns < 1 {
		return errors.New("need -rounds ≥ 1, -duration > 0, -c ≥ 1, -wrk-duration ≥ 1s, -wrk-conns ≥ 1")
	}
	if *logFile != "" {
		f, err := os.OpenFile(*logFile, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		logOut = &lockedWriter{w: f}
	}
	dir, err := os.MkdirTemp("", "trust-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	env, err := newEnv(dir)
	if err != nil {
		return err
	}
	fmt.Printf("trust-bench %s\n", strings.Join(os.Args[1:], " "))
	fmt.Printf("nproc %d, GOMAXPROCS %d, %s; load average at start: %s\n\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), loadavg())
	for _, f := range strings.Split(*figures, ",") {
		var err error
		switch strings.TrimSpace(f) {
		case "pick":
			err = figurePick(env)
		case "register":
			err = figureRegister(env)
		case "edge":
			err = figureEdge(env)
		default:
			err = fmt.Errorf("-figures: unknown figure %q (pick, register, edge)", f)
		}
		if err != nil {
			return err
		}
		fmt.Println()
	}
	fmt.Printf("load average at end: %s\n", loadavg())
	return nil
}

// env is the run's PKI and ACL: one CA, a certificate per service and one
// for the benchmark's client, and an ACL file that denies by default.
type env struct {
	dir                   string
	caFile                string
	ca                    *certs.CA
	aclFile               string
	clientTLS             *tls.Config
	clientTok             string // service "*" read: the caller of Pick and of the edge's API
	balancerTok           string // service "*" read: the balancer's watch on the registry
	deployerTok           string // service "*" write: registrations
	clientCert, clientKey string
}

func newEnv(dir string) (*env, error) {
	e := &env{dir: dir, caFile: filepath.Join(dir, "ca.pem")}
	ca, err := certs.NewCA(certs.CAOptions{CommonName: "trust-bench CA"})
	if err != nil {
		return nil, err
	}
	e.ca = ca
	if err := ca.WriteFiles(e.caFile, filepath.Join(dir, "ca-key.pem"), false); err != nil {
		return nil, err
	}
	if e.clientCert, e.clientKey, err = e.issue("bench-client"); err != nil {
		return nil, err
	}
	r, err := certs.NewReloader(e.clientCert, e.clientKey, e.caFile)
	if err != nil {
		return nil, err
	}
	e.clientTLS = r.ClientConfig("127.0.0.1")
	for _, t := range []*string{&e.clientTok, &e.balancerTok, &e.deployerTok} {
		if *t, err = newToken(); err != nil {
			return nil, err
		}
	}
	e.aclFile = filepath.Join(dir, "acl.yaml")
	acl := fmt.Sprintf(`default: deny
tokens:
  - {name: client, sha256: %s, rules: [{service: "*", access: read}]}
  - {name: balancer, sha256: %s, rules: [{service: "*", access: read}]}
  - {name: deployer, sha256: %s, rules: [{service: "*", access: write}]}
`, access.HashToken(e.clientTok), access.HashToken(e.balancerTok), access.HashToken(e.deployerTok))
	if err := os.WriteFile(e.aclFile, []byte(acl), 0o600); err != nil {
		return nil, err
	}
	if _, err := access.Load(e.aclFile); err != nil {
		return nil, fmt.Errorf("the benchmark's own ACL file: %w", err)
	}
	return e, nil
}

// issue writes a certificate for name, valid for 127.0.0.1 and localhost.
func (e *env) issue(name string) (certFile, keyFile string, err error) {
	c, k, err := e.ca.Issue(certs.CertOptions{Name: name, DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(e.dir, name+".pem"), filepath.Join(e.dir, name+"-key.pem")
	return certFile, keyFile, certs.WritePair(certFile, keyFile, c, k, false)
}

// tlsFlags returns the flags that put a service behind mutual TLS, with a
// new certificate for name.
func (e *env) tlsFlags(name string) ([]string, error) {
	c, k, err := e.issue(name)
	if err != nil {
		return nil, err
	}
	return []string{"--tls-cert=" + c, "--tls-key=" + k, "--tls-ca=" + e.caFile}, nil
}

// secure returns the flags that put a service behind mTLS and the ACL.
func (e *env) secure(name string) ([]string, error) {
	f, err := e.tlsFlags(name)
	return append(f, "--acl-file="+e.aclFile), err
}

func newToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// proc is a service running in this process.
type proc struct {
	name   string
	addrs  map[string]string
	cancel context.CancelFunc
	done   chan error
}

// startService runs spec with args on loopback port 0 and waits (30 s at
// most) until it serves.
func startService(spec service.Spec, args ...string) (*proc, error) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{name: spec.Name, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan map[string]string, 1)
	all := append([]string{"--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--shutdown-grace=5s", "--log-level=warn"}, args...)
	go func() {
		p.done <- service.Run(ctx, spec, all, service.WithEnv(config.NoEnv), service.WithLogOutput(logOut),
			service.WithReady(func(a map[string]string) { ready <- a }))
	}()
	select {
	case p.addrs = <-ready:
		return p, nil
	case err := <-p.done:
		cancel()
		return nil, fmt.Errorf("%s did not start: %w", spec.Name, err)
	case <-time.After(30 * time.Second):
		cancel()
		return nil, fmt.Errorf("%s did not start within 30s", spec.Name)
	}
}

// stop stops the service and waits for it (20 s at most).
func (p *proc) stop() error {
	p.cancel()
	select {
	case err := <-p.done:
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		return nil
	case <-time.After(20 * time.Second):
		return fmt.Errorf("%s did not stop within 20s", p.name)
	}
}

// bearer sends a token with every call. It allows plaintext, so that the
// ACL alone can be measured without TLS.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// dial opens a client connection: over TLS when tc is set, with a bearer
// token when token is set.
func dial(addr string, tc *tls.Config, token string) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if tc != nil {
		opts[0] = grpc.WithTransportCredentials(credentials.NewTLS(tc))
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(token)))
	}
	return grpc.NewClient(addr, opts...)
}

// sample is one measurement of one setup.
type sample struct {
	rate     float64 // calls per second
	p50, p99 time.Duration
	// cpu is this process's CPU time (user + system) per call: the
	// services and, for gRPC, the client run in this process. Unlike the
	// rate it hardly depends on how much of the machine others take.
	cpu time.Duration
}

// cpuTime is the CPU time (user + system) this process has used.
func cpuTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// maxLatencies bounds the latencies one caller records.
const maxLatencies = 1 << 20

// load runs call from n callers for d and returns the rate of successful
// calls and their latency percentiles. The first error stops it. Every call
// runs under a deadline: the measurement's end plus callTimeout.
func load(n int, d time.Duration, call func(ctx context.Context, worker, i int) error) (sample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d+callTimeout)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		lats []time.Duration
		errs = make(chan error, n)
	)
	cpu0, err := cpuTime()
	if err != nil {
		return sample{}, err
	}
	start := time.Now()
	end := start.Add(d)
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 4096)
			for i := 0; ; i++ {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				if err := call(ctx, w, i); err != nil {
					errs <- err
					cancel()
					return
				}
				if len(mine) < maxLatencies {
					mine = append(mine, time.Since(t0))
				}
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	took := time.Since(start)
	cpu1, err := cpuTime()
	if err != nil {
		return sample{}, err
	}
	select {
	case err := <-errs:
		return sample{}, err
	default:
	}
	if len(lats) == 0 {
		return sample{}, errors.New("no call completed")
	}
	slices.Sort(lats)
	return sample{
		rate: float64(len(lats)) / took.Seconds(),
		p50:  lats[len(lats)/2],
		p99:  lats[min(len(lats)-1, len(lats)*99/100)],
		cpu:  (cpu1 - cpu0) / time.Duration(len(lats)),
	}, nil
}

// order returns the setups' indexes for a round: rotated by one each
// round, so every setup goes first equally often.
func order(n, round int) []int {
	o := make([]int, n)
	for i := range o {
		o[i] = (i + round) % n
	}
	return o
}

// table prints a figure: one row per round with each setup's rate and p99
// and each setup's ratio to the first, then the medians.
func table(title, unit string, names []string, results [][]sample, orders [][]int) {
	fmt.Println(title)
	var rateW, ratioW []int
	fmt.Printf("%-7s %-6s", "round", "order")
	for _, n := range names {
		h := n + " " + unit
		rateW = append(rateW, max(8, len(h)))
		fmt.Printf("  %*s %8s", rateW[len(rateW)-1], h, "p99")
	}
	for _, n := range names[1:] {
		h := n + "/" + names[0]
		ratioW = append(ratioW, max(7, len(h)))
		fmt.Printf("  %*s", ratioW[len(ratioW)-1], h)
	}
	fmt.Println()
	ratios := make([][]float64, len(names))
	rates := make([][]float64, len(names))
	p99s := make([][]time.Duration, len(names))
	for r, row := range results {
		var ord []string
		for _, i := range orders[r] {
			ord = append(ord, string(rune('A'+i)))
		}
		fmt.Printf("%-7d %-6s", r+1, strings.Join(ord, ","))
		for i, s := range row {
			fmt.Printf("  %*.0f %8s", rateW[i], s.rate, fmtDur(s.p99))
			rates[i] = append(rates[i], s.rate)
			p99s[i] = append(p99s[i], s.p99)
		}
		for i := 1; i < len(row); i++ {
			q := row[i].rate / row[0].rate
			ratios[i] = append(ratios[i], q)
			fmt.Printf("  %*.3fx", ratioW[i-1]-1, q)
		}
		fmt.Println()
	}
	fmt.Printf("%-7s %-6s", "median", "")
	for i := range names {
		fmt.Printf("  %*.0f %8s", rateW[i], median(rates[i]), fmtDur(medianDur(p99s[i])))
	}
	for i := 1; i < len(names); i++ {
		fmt.Printf("  %*.3fx", ratioW[i-1]-1, median(ratios[i]))
	}
	fmt.Println()
	// The same rounds as CPU time per call.
	fmt.Printf("%-7s %-6s", "", "")
	var cpuW []int
	for _, n := range names {
		h := n + " CPU/call"
		cpuW = append(cpuW, max(8, len(h)))
		fmt.Printf("  %*s", cpuW[len(cpuW)-1], h)
	}
	for i, n := range names[1:] {
		fmt.Printf("  %*s", ratioW[i], n+"/"+names[0])
	}
	fmt.Println()
	cpus := make([][]time.Duration, len(names))
	cpuRatios := make([][]float64, len(names))
	for r, row := range results {
		fmt.Printf("%-7d %-6s", r+1, "")
		for i, s := range row {
			fmt.Printf("  %*s", cpuW[i], fmtDur(s.cpu))
			cpus[i] = append(cpus[i], s.cpu)
		}
		for i := 1; i < len(row); i++ {
			q := float64(row[i].cpu) / float64(row[0].cpu)
			cpuRatios[i] = append(cpuRatios[i], q)
			fmt.Printf("  %*.3fx", ratioW[i-1]-1, q)
		}
		fmt.Println()
	}
	fmt.Printf("%-7s %-6s", "median", "")
	for i := range names {
		fmt.Printf("  %*s", cpuW[i], fmtDur(medianDur(cpus[i])))
	}
	for i := 1; i < len(names); i++ {
		fmt.Printf("  %*.3fx", ratioW[i-1]-1, median(cpuRatios[i]))
	}
	fmt.Println()
	var legend []string
	for i, n := range names {
		legend = append(legend, fmt.Sprintf("%c = %s", 'A'+i, n))
	}
	fmt.Printf("(order of measurement in the round: %s; a ratio is of one round's pair, the median ratio the median of those;\n"+
		" CPU/call is this process's user+system CPU time over the measurement divided by the calls made)\n", strings.Join(legend, ", "))
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianDur(v []time.Duration) time.Duration {
	f := make([]float64, len(v))
	for i, d := range v {
		f[i] = float64(d)
	}
	return time.Duration(median(f))
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	case d >= 10*time.Microsecond:
		return d.Round(time.Microsecond).String()
	default:
		return d.Round(10 * time.Nanosecond).String()
	}
}

func fmtDurs(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = fmtDur(d)
	}
	return strings.Join(s, " ")
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return strings.TrimSpace(string(b))
	}
	return strings.Join(f[:3], " ")
}

// lockedWriter serialises the services' log writes to one file.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
