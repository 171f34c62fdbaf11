package tests

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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

	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/switchboard-net/switchboard/pkg/access"
	"github.com/switchboard-net/switchboard/pkg/certs"
	"github.com/switchboard-net/switchboard/pkg/netnstest"
	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	"github.com/switchboard-net/switchboard/pkg/wire"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	resolverv1 "github.com/switchboard-net/switchboard/proto/switchboard/resolver/v1"
)

// The attack lab: the five real binaries on the host end of a veth pair
// (mutual TLS, an ACL file with default deny, each service calling the
// others with its own token and certificate), and an attacker in the
// namespace at the other end.

// callTimeout bounds every RPC, DNS query and wire exchange of the suite.
const callTimeout = 5 * time.Second

// attackLab is the stack under attack, its PKI and the callers around it.
type attackLab struct {
	host     string // the services' address (the link's end 0)
	attacker string // the attacker's address (end 1)
	ns       string // the attacker's namespace
	dir      string
	grpcurl  string

	ca, outsiderCA *certs.CA
	caFile         string
	pool           *x509.CertPool

	tokens   map[string]string           // ACL token name -> token
	certs    map[string]*tls.Certificate // client certificates by name
	discKey  []byte                      // the prober's discovery key
	discPort int                         // and the port it listens on

	procs    map[string]*sbProcess
	upstream *fakeUpstream // the resolver's upstream, in the attacker's namespace

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// principal is someone calling the services: where from, with which client
// certificate and which bearer token.
type principal struct {
	name  string           // for messages
	ns    string           // network namespace ("" is the host's)
	cert  *tls.Certificate // nil: no client certificate
	token string           // "" : none
}

// sbProcess is one running service binary.
type sbProcess struct {
	name  string
	cmd   *exec.Cmd
	ready chan struct{}
	exit  chan struct{}

	mu    sync.Mutex
	logs  strings.Builder
	addrs map[string]string // listener name -> bound address
}

var (
	listeningLine = regexp.MustCompile(`msg=listening .*?listener=(\S+) addr=(\S+)`)
	readyLine     = regexp.MustCompile(`msg=serving\b`)
)

// randomToken returns a fresh secret.
func randomToken(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// writeFile writes a test file with mode 0600 and returns its path.
func (l *attackLab) writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(l.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// issue writes a certificate of ca for name (server and client) with the
// given IP SANs, and returns the file paths.
func (l *attackLab) issue(t *testing.T, ca *certs.CA, name string, ips ...net.IP) (certFile, keyFile string) {
	t.Helper()
	c, k, err := ca.Issue(certs.CertOptions{Name: name, DNS: []string{"localhost"}, IPs: ips})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(l.dir, name+".crt"), filepath.Join(l.dir, name+".key")
	if err := certs.WritePair(certFile, keyFile, c, k, true); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// aclRules are the rules of each token of the lab's ACL file.
var aclRules = map[string]string{
	// People.
	"deployer": `[{service: "shop*", access: write}, {records: "example.test.", access: write}]`,
	"viewer":   `[{service: "*", access: read}]`,
	"ops":      `[{operator: true}, {service: "*", access: write}, {records: "*", access: write}]`,
	// Services, least privilege (docs/security.md).
	"balancer": `[{service: "*", access: write}]`,
	"resolver": `[{service: "*", access: read}, {records: "*", access: read}, {records: "example.test.", access: write}, {records: "other.test.", access: write}]`,
	"prober":   `[{service: "*", access: write}, {operator: true}]`,
	"edge":     `[{service: "*", access: write}]`,
}

// writeACL makes a token per entry of aclRules and writes the ACL file.
func (l *attackLab) writeACL(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("default: deny\ntokens:\n")
	for name, rules := range aclRules {
		tok := randomToken(t)
		l.tokens[name] = tok
		fmt.Fprintf(&b, "  - {name: %s, sha256: %s, rules: %s}\n", name, access.HashToken(tok), rules)
	}
	return l.writeFile(t, "acl.yaml", []byte(b.String()))
}

// zoneFile writes a static zone with its SOA and name server only.
func (l *attackLab) zoneFile(t *testing.T, origin string) string {
	t.Helper()
	z := fmt.Sprintf("$ORIGIN %s\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A 192.0.2.53\n", origin)
	return l.writeFile(t, strings.TrimSuffix(origin, ".")+".zone", []byte(z))
}

// buildBinaries builds the five service binaries into dir.
func buildBinaries(t *testing.T, dir string) {
	t.Helper()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, name := range []string{"registry", "balancer", "resolver", "prober", "edge"} {
		args = append(args, "github.com/switchboard-net/switchboard/services/"+name+"/cmd/"+name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
}

// start runs a service binary with the lab's trust flags and waits for its
// ready line. It is stopped (SIGTERM, then kill) when the test ends, and
// its log is shown if the test failed.
func (l *attackLab) start(t *testing.T, name string, args ...string) *sbProcess {
	t.Helper()
	cert, key := filepath.Join(l.dir, name+".crt"), filepath.Join(l.dir, name+".key")
	all := []string{
		"--grpc-addr=" + net.JoinHostPort(l.host, "0"), "--admin-addr=127.0.0.1:0",
		"--tls-cert=" + cert, "--tls-key=" + key, "--tls-ca=" + l.caFile,
		"--acl-file=" + filepath.Join(l.dir, "acl.yaml"), "--shutdown-grace=2s",
	}
	if tok, ok := l.tokens[name]; ok {
		all = append(all, "--token-file="+l.writeFile(t, name+".token", []byte(tok+"\n")))
	}
	p := &sbProcess{name: name, ready: make(chan struct{}), exit: make(chan struct{}), addrs: map[string]string{}}
	p.cmd = exec.Command(filepath.Join(l.dir, "bin", name), append(all, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") && !strings.HasPrefix(kv, "OTEL_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go p.readLog(stderr)
	t.Cleanup(func() { p.stop(t) })
	select {
	case <-p.ready:
	case <-p.exit:
		t.Fatalf("%s exited before it was ready:\n%s", name, p.log())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s not ready within 30s:\n%s", name, p.log())
	}
	l.procs[name] = p
	return p
}

func (p *sbProcess) readLog(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	isReady := false
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.logs.WriteString(line + "\n")
		if m := listeningLine.FindStringSubmatch(line); m != nil {
			p.addrs[m[1]] = strings.Trim(m[2], `"`)
		}
		p.mu.Unlock()
		if !isReady && readyLine.MatchString(line) {
			isReady = true
			close(p.ready)
		}
	}
	_, _ = io.Copy(io.Discard, r)
	_ = p.cmd.Wait()
	close(p.exit)
}

func (p *sbProcess) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// addr returns the bound address of one of the process's listeners.
func (p *sbProcess) addr(t *testing.T, listener string) string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.addrs[listener]
	if a == "" {
		t.Fatalf("%s logged no %q listener", p.name, listener)
	}
	return a
}

func (p *sbProcess) stop(t *testing.T) {
	if t.Failed() {
		t.Logf("%s log:\n%s", p.name, p.log())
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exit:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exit
	}
}

// bearerToken sends a token with every call.
type bearerToken string

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return true }

// tlsConfig is the client TLS configuration of id: it trusts the lab's CA
// and verifies the services' address.
func (l *attackLab) tlsConfig(id principal) *tls.Config {
	cfg := &tls.Config{RootCAs: l.pool, ServerName: l.host, MinVersion: tls.VersionTLS12}
	if id.cert != nil {
		cfg.Certificates = []tls.Certificate{*id.cert}
	}
	return cfg
}

// conn returns a gRPC connection of id to the service, dialled from id's
// namespace; connections are shared and closed when the test ends.
func (l *attackLab) conn(t *testing.T, id principal, service string) *grpc.ClientConn {
	t.Helper()
	addr := l.procs[service].addr(t, "grpc")
	key := id.name + "|" + addr
	l.mu.Lock()
	defer l.mu.Unlock()
	if cc := l.conns[key]; cc != nil {
		return cc
	}
	ns := id.ns
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(l.tlsConfig(id))),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			return netnstest.DialContext(ctx, ns, "tcp", a)
		}),
	}
	if id.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(id.token)))
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	l.conns[key] = cc
	return cc
}

func (l *attackLab) registry(t *testing.T, id principal) registryv1.RegistryClient {
	return registryv1.NewRegistryClient(l.conn(t, id, "registry"))
}

func (l *attackLab) balancer(t *testing.T, id principal) balancerv1.BalancerClient {
	return balancerv1.NewBalancerClient(l.conn(t, id, "balancer"))
}

func (l *attackLab) resolver(t *testing.T, id principal) resolverv1.ResolverClient {
	return resolverv1.NewResolverClient(l.conn(t, id, "resolver"))
}

func (l *attackLab) prober(t *testing.T, id principal) proberv1.ProberClient {
	return proberv1.NewProberClient(l.conn(t, id, "prober"))
}

// callCtx is a context for one call, ended with the test.
func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

// wantRefused fails unless err is a gRPC status with code whose message
// holds every one of msg.
func wantRefused(t *testing.T, what string, err error, code codes.Code, msg ...string) {
	t.Helper()
	st, _ := status.FromError(err)
	switch {
	case err == nil:
		t.Errorf("%s: succeeded, want %v", what, code)
		return
	case st.Code() != code:
		t.Errorf("%s: %v, want %v", what, err, code)
		return
	}
	for _, m := range msg {
		if !strings.Contains(st.Message(), m) {
			t.Errorf("%s: %v: the message does not say %q", what, err, m)
		}
	}
	t.Logf("%s: %v: %s", what, st.Code(), st.Message())
}

// pollFor calls cond until it reports true or the timeout passes; then it
// fails the test with cond's last word.
func pollFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last: %s", what, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// instance reads an instance back as the operator (nil when absent).
func (l *attackLab) instance(t *testing.T, service, id string) *registryv1.Instance {
	t.Helper()
	resp, err := l.registry(t, l.ops()).GetService(callCtx(t), &registryv1.GetServiceRequest{Service: service, IncludeUnhealthy: true})
	if err != nil {
		t.Fatalf("GetService %s as ops: %v", service, err)
	}
	for _, in := range resp.GetInstances() {
		if in.GetId() == id {
			return in
		}
	}
	return nil
}

// metric reads one sample of a service's /metrics (over TLS on its
// loopback admin port); series is the name with its labels as exposed,
// e.g. `switchboard_prober_discovery_dropped_total{reason="unauthenticated"}`. An
// absent series is 0.
func (l *attackLab) metric(t *testing.T, service, series string) float64 {
	t.Helper()
	cfg := l.tlsConfig(l.ops())
	cfg.ServerName = "127.0.0.1"
	hc := &http.Client{Timeout: callTimeout, Transport: &http.Transport{TLSClientConfig: cfg}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + l.procs[service].addr(t, "admin") + "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", service, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", service, line, err)
			}
			return f
		}
	}
	return 0
}

// countingListener counts the connections it accepted.
type countingListener struct {
	net.Listener
	accepts atomic.Int64
}

func (c *countingListener) Accept() (net.Conn, error) {
	conn, err := c.Listener.Accept()
	if err == nil {
		c.accepts.Add(1)
	}
	return conn, err
}

// port is the listener's port.
func (c *countingListener) port() uint32 { return uint32(c.Addr().(*net.TCPAddr).Port) }

// listenCounting opens a counting TCP listener on ip, closed with the test.
func listenCounting(t *testing.T, ip string) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &countingListener{Listener: ln}
}

// httpTarget serves h on ip and counts the connections it accepts.
func httpTarget(t *testing.T, ip string, h http.HandlerFunc) *countingListener {
	t.Helper()
	ln := listenCounting(t, ip)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: callTimeout}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln
}

// rawTarget writes payload to every connection and closes it (a server
// that does not speak HTTP, which the check quotes back).
func rawTarget(t *testing.T, ip string, payload string) *countingListener {
	t.Helper()
	ln := listenCounting(t, ip)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(callTimeout))
			_, _ = io.WriteString(c, payload)
			_ = c.Close()
		}
	}()
	return ln
}

// runProberJob runs a prober job and returns its result, or the call's error.
func runProberJob(t *testing.T, c proberv1.ProberClient, spec *proberv1.JobSpec) (*proberv1.JobResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*callTimeout)
	defer cancel()
	st, err := c.Run(ctx, &proberv1.RunRequest{Spec: spec})
	if err != nil {
		return nil, err
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("stream ended without a result")
			}
			return nil, err
		}
		if r := resp.GetResult(); r != nil {
			return r, nil
		}
	}
}

// grpcurlIn runs the real grpcurl inside namespace ns and returns its
// combined output (its exit status is the call's, so it is not an error).
func (l *attackLab) grpcurlIn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*callTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, l.grpcurl, "-max-time", "5"}, args...)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("grpcurl %v: %v\n%s", args, ctx.Err(), out)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("grpcurl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// wireSession opens a wire session to the edge from id's namespace, over
// TLS, presenting id's token in HELLO.
func (l *attackLab) wireSession(t *testing.T, id principal) (*wire.Session, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	c, err := netnstest.DialContext(ctx, id.ns, "tcp", l.procs["edge"].addr(t, "wire"))
	if err != nil {
		t.Fatalf("dial the wire listener: %v", err)
	}
	cfg := l.tlsConfig(id)
	cfg.NextProtos = []string{"switchboard-wire"}
	s, err := wire.Client(tls.Client(c, cfg), wire.Config{Token: []byte(id.token), HandshakeTimeout: callTimeout})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { s.Close() })
	return s, nil
}

// wireRequest opens a stream to service, sends req and reads the answer
// to its end; the error carries the wire code of a refusal.
func wireRequest(s *wire.Session, service, req string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	st, err := s.Open(ctx, service)
	if err != nil {
		return "", err
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(callTimeout))
	if _, err := io.WriteString(st, req); err != nil {
		return "", err
	}
	_ = st.CloseWrite()
	b, err := io.ReadAll(st)
	return string(b), err
}

// dnsQuery asks server over UDP from namespace ns.
func dnsQuery(ns, server, name string, qtype uint16, rd bool) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	c, err := netnstest.DialContext(ctx, ns, "udp", server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(callTimeout))
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = rd
	co := &dns.Conn{Conn: c}
	if err := co.WriteMsg(q); err != nil {
		return nil, err
	}
	for {
		r, err := co.ReadMsg()
		if err != nil {
			return nil, err
		}
		if r.Id == q.Id {
			return r, nil
		}
	}
}

// answerAddrs lists the A records of a reply.
func answerAddrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

// fakeUpstream is a DNS server in the attacker's namespace that answers
// every query first with forged replies (a wrong ID; the right ID for
// another question), each claiming forgedAddr, and then with the real
// reply, realAddr.
type fakeUpstream struct {
	pc      net.PacketConn
	queries atomic.Int64
}

const (
	forgedAddr = "6.6.6.6"
	realAddr   = "192.0.2.99"
)

func startFakeUpstream(t *testing.T, ns, ip string) *fakeUpstream {
	t.Helper()
	pc, err := netnstest.ListenPacket(ns, "udp4", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	u := &fakeUpstream{pc: pc}
	t.Cleanup(func() { pc.Close() })
	go u.serve()
	return u
}

func (u *fakeUpstream) addr() string { return u.pc.LocalAddr().String() }

func (u *fakeUpstream) serve() {
	buf := make([]byte, 4096)
	for {
		n, from, err := u.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := new(dns.Msg)
		if q.Unpack(buf[:n]) != nil || len(q.Question) != 1 {
			continue
		}
		u.queries.Add(1)
		name := q.Question[0].Name
		other := "poison.attack.test."
		if strings.EqualFold(name, other) {
			other = "www.attack.test."
		}
		wrongID := dnsReply(q, name, forgedAddr)
		wrongID.Id = q.Id + 1
		otherQuestion := dnsReply(q, other, forgedAddr)
		for _, m := range []*dns.Msg{wrongID, otherQuestion, dnsReply(q, name, realAddr)} {
			if b, err := m.Pack(); err == nil {
				_, _ = u.pc.WriteTo(b, from)
			}
		}
	}
}

// dnsReply answers q as if it had asked for name, with one A record.
func dnsReply(q *dns.Msg, name, addr string) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	m.Question[0].Name = name
	m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.ParseIP(addr)}}
	return m
}

// freeUDPPort returns a UDP port free on this host just now.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// newAttackLab sets up the link, the PKI, the ACL file and the five
// services.
func newAttackLab(t *testing.T) *attackLab {
	t.Helper()
	link := netnstest.NewLink(t, true)
	l := &attackLab{
		host: link.Addr[0].String(), attacker: link.Addr[1].String(), ns: link.NS[1],
		dir: t.TempDir(), grpcurl: servicetest.Tool(t, "grpcurl"),
		tokens: map[string]string{}, certs: map[string]*tls.Certificate{}, procs: map[string]*sbProcess{}, conns: map[string]*grpc.ClientConn{},
	}
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, cc := range l.conns {
			cc.Close()
		}
	})
	buildBinaries(t, filepath.Join(l.dir, "bin"))

	// The PKI: the services' CA, and another one the attacker controls.
	var err error
	if l.ca, err = certs.NewCA(certs.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	if l.outsiderCA, err = certs.NewCA(certs.CAOptions{CommonName: "Outsider CA"}); err != nil {
		t.Fatal(err)
	}
	l.caFile = l.writeFile(t, "ca.crt", l.ca.CertPEM())
	l.pool = x509.NewCertPool()
	l.pool.AddCert(l.ca.Certificate())
	for _, name := range []string{"registry", "balancer", "resolver", "prober", "edge"} {
		l.issue(t, l.ca, name, net.ParseIP(l.host), net.IPv4(127, 0, 0, 1))
	}
	// Client certificates: the operator's, CI's, an insider's (signed by
	// the CA, unknown to the ACL) and an outsider's (another CA).
	for name, ca := range map[string]*certs.CA{"operator": l.ca, "ci": l.ca, "insider": l.ca, "outsider": l.outsiderCA} {
		certPEM, keyPEM, err := ca.Issue(certs.CertOptions{Name: name, Client: true})
		if err != nil {
			t.Fatal(err)
		}
		kp, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		l.certs[name] = &kp
		if err := certs.WritePair(filepath.Join(l.dir, name+".crt"), filepath.Join(l.dir, name+".key"), certPEM, keyPEM, true); err != nil {
			t.Fatal(err)
		}
	}
	l.writeACL(t)

	// The resolver's upstream lives on the attacker's side of the link.
	l.upstream = startFakeUpstream(t, l.ns, l.attacker)
	l.discKey = []byte(randomToken(t))
	keyFile := l.writeFile(t, "discovery.key", l.discKey)
	l.discPort = freeUDPPort(t)
	subnet := link.Addr[0].String() + "/24"

	reg := l.start(t, "registry", "--store=embedded", "--data-dir="+filepath.Join(l.dir, "registry"))
	regAddr := "--registry-addr=" + reg.addr(t, "grpc")
	bal := l.start(t, "balancer", regAddr, "--data-dir="+filepath.Join(l.dir, "balancer"))
	l.start(t, "resolver", regAddr, "--dns-addr="+net.JoinHostPort(l.host, "0"), "--udp-sockets=1",
		"--zone-file="+l.zoneFile(t, "example.test."), "--zone-file="+l.zoneFile(t, "other.test."),
		"--upstream="+l.upstream.addr(), "--allow-recursion=127.0.0.0/8,"+l.host+"/32")
	l.start(t, "prober", regAddr, "--allow="+subnet+",registered", "--rise=1", "--fall=1",
		"--bandwidth-addr=", "--name=host-prober",
		"--discovery", "--discovery-key-file="+keyFile, "--discovery-interfaces="+link.Dev[0],
		"--discovery-group=239.255.74.2:"+strconv.Itoa(l.discPort), "--discovery-interval=1s")
	l.start(t, "edge", "--balancer-addr="+bal.addr(t, "grpc"), "--registry-addr=", "--prober-addr=",
		"--http-addr="+net.JoinHostPort(l.host, "0"), "--wire-addr="+net.JoinHostPort(l.host, "0"), "--wire-tls",
		"--runtime-socket=", "--data-dir="+filepath.Join(l.dir, "edge"))
	return l
}

// The people.

// ops is the operator at the host: its own certificate, the ops token.
func (l *attackLab) ops() principal { return l.known("ops", "operator", "ops") }

// deployer is the legitimate deployer at the host (CI).
func (l *attackLab) deployer() principal { return l.known("deployer@ci", "ci", "deployer") }

// known is someone at the host with a certificate of the CA and a token.
func (l *attackLab) known(name, certName, token string) principal {
	return principal{name: name, cert: l.certs[certName], token: l.tokens[token]}
}

// Attacker identities, all in the attacker's namespace.
func (l *attackLab) noCert() principal {
	return principal{name: "attacker without a client certificate (viewer token)", ns: l.ns, token: l.tokens["viewer"]}
}

func (l *attackLab) outsider() principal {
	return principal{name: "attacker with an outsider certificate (viewer token)", ns: l.ns, cert: l.certs["outsider"], token: l.tokens["viewer"]}
}

func (l *attackLab) insider() principal {
	return principal{name: "attacker with an insider certificate, no token", ns: l.ns, cert: l.certs["insider"]}
}

func (l *attackLab) forged() principal {
	return principal{name: "attacker with a made-up token", ns: l.ns, cert: l.certs["insider"], token: "not-a-token-of-the-acl"}
}

func (l *attackLab) viewer() principal {
	return principal{name: "attacker with the viewer token", ns: l.ns, cert: l.certs["insider"], token: l.tokens["viewer"]}
}

func (l *attackLab) rogueDeployer() principal {
	return principal{name: "attacker with the deployer token", ns: l.ns, cert: l.certs["insider"], token: l.tokens["deployer"]}
}
