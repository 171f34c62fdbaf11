package edge_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/switchboard-net/switchboard/pkg/access"
	"github.com/switchboard-net/switchboard/pkg/certs"
	"github.com/switchboard-net/switchboard/pkg/config"
	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/pkg/wire"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	edgev1 "github.com/switchboard-net/switchboard/proto/switchboard/edge/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/edge"
)

// testPKI is a CA in a temporary directory and the certificates a test
// issues with it.
type testPKI struct {
	t      *testing.T
	dir    string
	ca     *certs.CA
	caFile string
	pool   *x509.CertPool
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	ca, err := certs.NewCA(certs.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{t: t, dir: t.TempDir(), ca: ca, pool: x509.NewCertPool()}
	p.caFile = filepath.Join(p.dir, "ca.crt")
	if err := os.WriteFile(p.caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	p.pool.AddCert(ca.Certificate())
	return p
}

// issue writes a certificate for name (valid for localhost and 127.0.0.1)
// and its key, and returns their paths.
func (p *testPKI) issue(name string) (certFile, keyFile string) {
	p.t.Helper()
	c, k, err := p.ca.Issue(certs.CertOptions{Name: name, DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		p.t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
	if err := certs.WritePair(certFile, keyFile, c, k, true); err != nil {
		p.t.Fatal(err)
	}
	return certFile, keyFile
}

// serverFlags are the edge's service-certificate flags: its certificate
// ("edge"), and the CA (client certificates verified) unless noCA.
func (p *testPKI) serverFlags(noCA bool) []string {
	c, k := p.issue("edge")
	f := []string{"--tls-cert=" + c, "--tls-key=" + k}
	if !noCA {
		f = append(f, "--tls-ca="+p.caFile)
	}
	return f
}

// client is a TLS client configuration trusting the CA, presenting a
// certificate for name unless name is empty.
func (p *testPKI) client(name string) *tls.Config {
	p.t.Helper()
	tc := &tls.Config{ServerName: "localhost", RootCAs: p.pool}
	if name != "" {
		c, k := p.issue(name)
		kp, err := tls.LoadX509KeyPair(c, k)
		if err != nil {
			p.t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{kp}
	}
	return tc
}

// writeACL writes an ACL file; tokens maps each token to its YAML rules.
func writeACL(t *testing.T, def string, tokens map[string]string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "default: %s\ntokens:\n", def)
	for tok, rules := range tokens {
		if name, ok := strings.CutPrefix(tok, "cert:"); ok {
			fmt.Fprintf(&b, "  - {name: %s, cert: %s, rules: %s}\n", name, name, rules)
			continue
		}
		fmt.Fprintf(&b, "  - {name: %s, sha256: %s, rules: %s}\n", tok, access.HashToken(tok), rules)
	}
	p := filepath.Join(t.TempDir(), "acl.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// onLoopback turns a listener's bound address (perhaps 0.0.0.0:port) into
// one to dial on this host.
func onLoopback(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return net.JoinHostPort("127.0.0.1", port)
}

// wireSession opens a wire session to addr presenting token, over TLS when
// tc is set. It is closed at the end of the test.
func wireSession(t *testing.T, addr string, tc *tls.Config, token string) (*wire.Session, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", onLoopback(addr), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if tc != nil {
		tc = tc.Clone()
		tc.NextProtos = []string{"switchboard-wire"}
		c = tls.Client(c, tc)
	}
	s, err := wire.Client(c, wire.Config{Token: []byte(token), HandshakeTimeout: 5 * time.Second})
	if err != nil {
		c.Close()
		return nil, err
	}
	t.Cleanup(func() { s.Close() })
	return s, nil
}

// echoOver opens a stream to svc (a tcpBackend) and checks the echo; the
// error carries the wire code of a refusal.
func echoOver(s *wire.Session, svc string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.Open(ctx, svc)
	if err != nil {
		return err
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(st, "hello"); err != nil {
		return err
	}
	st.CloseWrite()
	b, err := io.ReadAll(st)
	if err != nil {
		return err
	}
	if string(b) != "HELLO|" {
		return fmt.Errorf("echo of %s: got %q", svc, b)
	}
	return nil
}

// startRefused runs the edge with args (over a minimal loopback setup) and
// returns the error it stops with; it fails the test if the edge starts.
func startRefused(t *testing.T, args ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := append([]string{"--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--http-addr=",
		"--wire-addr=127.0.0.1:0", "--runtime-socket=" + filepath.Join(t.TempDir(), "rt.sock"),
		"--balancer-addr=", "--registry-addr=", "--prober-addr="}, args...)
	started := false
	err := service.Run(ctx, edge.Spec(), all, service.WithEnv(config.NoEnv), service.WithLogOutput(io.Discard),
		service.WithReady(func(map[string]string) { started = true; cancel() }))
	if started {
		t.Fatalf("edge started with %q", args)
	}
	if err == nil {
		t.Fatalf("edge with %q: no error", args)
	}
	return err
}

// TestMethodsCoverTheEdgeService checks that every method of the edge's
// gRPC service has a permission entry (the runtime refuses to start
// otherwise), and no entry names a method that does not exist.
func TestMethodsCoverTheEdgeService(t *testing.T) {
	svcs := edgev1.File_switchboard_edge_v1_edge_proto.Services()
	known := map[string]bool{}
	for i := 0; i < svcs.Len(); i++ {
		s := svcs.Get(i)
		for j := 0; j < s.Methods().Len(); j++ {
			full := "/" + string(s.FullName()) + "/" + string(s.Methods().Get(j).Name())
			known[full] = true
			if _, ok := edge.Methods[full]; !ok {
				t.Errorf("%s has no entry in edge.Methods", full)
			}
		}
	}
	if len(known) == 0 {
		t.Fatal("the edge's proto declares no methods")
	}
	for m := range edge.Methods {
		if !known[m] {
			t.Errorf("edge.Methods names %s, which the service does not have", m)
		}
	}
}

// TestGRPCAPIPermissions calls the edge's gRPC API with an ACL in force:
// the views need service "*" read, SetBackend needs operator.
func TestGRPCAPIPermissions(t *testing.T) {
	acl := writeACL(t, "deny", map[string]string{
		"viewer": `[{service: "*", access: read}]`,
		"ops":    `[{operator: true}]`,
		"webby":  `[{service: "web", access: write}]`,
	})
	inst, _ := startEdge(t, "", "--acl-file="+acl)
	api := edgev1.NewEdgeClient(inst.Conn(t))
	calls := map[string]func(context.Context) error{
		"ListRoutes": func(ctx context.Context) error {
			_, err := api.ListRoutes(ctx, &edgev1.ListRoutesRequest{})
			return err
		},
		"ListBackends": func(ctx context.Context) error {
			_, err := api.ListBackends(ctx, &edgev1.ListBackendsRequest{})
			return err
		},
		// An empty request: past the permission check it is InvalidArgument.
		"SetBackend": func(ctx context.Context) error {
			_, err := api.SetBackend(ctx, &edgev1.SetBackendRequest{})
			return err
		},
	}
	tests := []struct {
		token, call string
		want        codes.Code
	}{
		{"", "ListRoutes", codes.Unauthenticated},
		{"", "SetBackend", codes.Unauthenticated},
		{"nobody", "ListRoutes", codes.Unauthenticated},
		{"viewer", "ListRoutes", codes.OK},
		{"viewer", "ListBackends", codes.OK},
		{"viewer", "SetBackend", codes.PermissionDenied},
		{"webby", "ListBackends", codes.PermissionDenied},
		{"ops", "SetBackend", codes.InvalidArgument},
		{"ops", "ListRoutes", codes.PermissionDenied},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if tt.token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tt.token)
		}
		err := calls[tt.call](ctx)
		cancel()
		if got := status.Code(err); got != tt.want {
			t.Errorf("%s with token %q: %v, want %v", tt.call, tt.token, err, tt.want)
		}
	}
}

// TestStartRefusals checks the configurations the edge refuses to start
// with, each with one line that says what to do.
func TestStartRefusals(t *testing.T) {
	pki := newPKI(t)
	open := t.TempDir()
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	acl := writeACL(t, "deny", map[string]string{"x": `[{service: "*", access: read}]`})
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"wire beyond loopback without TLS", []string{"--wire-addr=0.0.0.0:0"}, "without TLS"},
		{"wire beyond loopback with no way to authenticate", []string{"--wire-addr=0.0.0.0:0", "--insecure"},
			"no way to authenticate"},
		{"wire beyond loopback over TLS without a CA", append([]string{"--wire-addr=0.0.0.0:0", "--wire-tls"}, pki.serverFlags(true)...),
			"no way to authenticate"},
		{"--wire-tls without the service certificate", []string{"--wire-tls"}, "--wire-tls needs the service certificate"},
		{"--wire-token with an ACL file", []string{"--wire-token=x", "--acl-file=" + acl}, "drop --wire-token"},
		{"runtime API beyond loopback without TLS", []string{"--runtime-addr=0.0.0.0:0"}, "without TLS"},
		{"runtime API beyond loopback, insecure", []string{"--runtime-addr=0.0.0.0:0", "--insecure"}, "without client certificates"},
		{"runtime API beyond loopback without a CA", append([]string{"--runtime-addr=0.0.0.0:0"}, pki.serverFlags(true)...),
			"without client certificates"},
		{"runtime socket in a world-writable directory", []string{"--runtime-socket=" + filepath.Join(open, "rt.sock")},
			"writable by group or others"},
		{"data dir world-writable", []string{"--runtime-socket=auto", "--data-dir=" + open}, "writable by group or others"},
		{"HTTPS pairs", []string{"--https-addr=127.0.0.1:0", "--https-cert=a.crt"}, "--https-cert and --https-key"},
		{"HTTPS without a pair", []string{"--https-addr=127.0.0.1:0"}, "needs at least one --https-cert/--https-key pair"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := startRefused(t, tt.args...)
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want it to say %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q takes more than one line", err)
			}
		})
	}
}

// TestWireSessionAuth runs wire clients against listeners on loopback and
// beyond it (0.0.0.0, dialled on 127.0.0.1): who may open a session.
func TestWireSessionAuth(t *testing.T) {
	pki := newPKI(t)
	echo := tcpBackend(t, false)
	conf := fmt.Sprintf("services:\n  echo: [%q]\n", echo)
	type client struct {
		name  string
		tls   *tls.Config
		token string
		ok    bool
	}
	withCert, noCert := pki.client("someone"), pki.client("")
	tlsFlags := append([]string{"--wire-tls"}, pki.serverFlags(false)...)
	tests := []struct {
		name    string
		args    []string
		clients []client
	}{
		{"loopback, nothing set", nil, []client{
			{"no token", nil, "", true},
			{"any token", nil, "whatever", true},
		}},
		{"loopback, --wire-token", []string{"--wire-token=s3cret"}, []client{
			{"right token", nil, "s3cret", true},
			{"wrong token", nil, "wrong", false},
			{"no token", nil, "", false},
		}},
		{"beyond loopback, --wire-token", []string{"--wire-addr=0.0.0.0:0", "--insecure", "--wire-token=s3cret"}, []client{
			{"right token", nil, "s3cret", true},
			{"wrong token", nil, "s3cre", false},
			{"no token", nil, "", false},
		}},
		{"beyond loopback, client certificates", append([]string{"--wire-addr=0.0.0.0:0"}, tlsFlags...), []client{
			{"verified certificate", withCert, "", true},
			{"no certificate", noCert, "", false},
			{"no certificate, a token", noCert, "s3cret", false},
		}},
		{"beyond loopback, certificates and --wire-token", append([]string{"--wire-addr=0.0.0.0:0", "--wire-token=s3cret"}, tlsFlags...), []client{
			{"verified certificate", withCert, "", true},
			{"token without certificate", noCert, "s3cret", true},
			{"wrong token with a certificate", withCert, "wrong", false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst, _ := startEdge(t, conf, append([]string{"--allow-loopback"}, tt.args...)...)
			for _, c := range tt.clients {
				s, err := wireSession(t, inst.Addrs["wire"], c.tls, c.token)
				if !c.ok {
					if wire.CodeOf(err) != wire.CodeUnauthorized {
						t.Errorf("%s: session %v, want refused with UNAUTHORIZED", c.name, err)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: session refused: %v", c.name, err)
					continue
				}
				if err := echoOver(s, "echo"); err != nil {
					t.Errorf("%s: %v", c.name, err)
				}
			}
		})
	}
}

// TestWireACL: with an ACL file, a session needs a known token or
// certificate beyond loopback, and each stream needs service read on its
// target; a token taken out of the file opens no more streams.
func TestWireACL(t *testing.T) {
	pki := newPKI(t)
	echo, web := tcpBackend(t, false), tcpBackend(t, false)
	conf := fmt.Sprintf("services:\n  echo: [%q]\n  web: [%q]\n", echo, web)
	tokens := map[string]string{
		"echo-reader":  `[{service: echo, access: read}]`,
		"web-writer":   `[{service: web, access: write}]`,
		"cert:partner": `[{service: "e*", access: read}]`,
	}
	acl := writeACL(t, "deny", tokens)
	args := append([]string{"--acl-file=" + acl, "--wire-addr=0.0.0.0:0", "--wire-tls", "--allow-loopback"}, pki.serverFlags(false)...)
	inst, _ := startEdge(t, conf, args...)
	plain := pki.client("")
	tests := []struct {
		name        string
		tls         *tls.Config
		token       string
		echo, web   error // nil: reached; else the wire code of the refusal
		sessionCode wire.ErrorCode
	}{
		{name: "echo reader", tls: plain, token: "echo-reader", web: &wire.StreamError{Code: wire.CodeUnauthorized}},
		{name: "web writer", tls: plain, token: "web-writer", echo: &wire.StreamError{Code: wire.CodeUnauthorized}},
		{name: "certificate in the file", tls: pki.client("partner"), web: &wire.StreamError{Code: wire.CodeUnauthorized}},
		{name: "certificate not in the file (default deny)", tls: pki.client("stranger"),
			echo: &wire.StreamError{Code: wire.CodeUnauthorized}, web: &wire.StreamError{Code: wire.CodeUnauthorized}},
		{name: "unknown token", tls: plain, token: "guess", sessionCode: wire.CodeUnauthorized},
		{name: "anonymous beyond loopback", tls: plain, sessionCode: wire.CodeUnauthorized},
	}
	for _, tt := range tests {
		s, err := wireSession(t, inst.Addrs["wire"], tt.tls, tt.token)
		if tt.sessionCode != 0 {
			if wire.CodeOf(err) != tt.sessionCode {
				t.Errorf("%s: session %v, want refused with %v", tt.name, err, tt.sessionCode)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: session refused: %v", tt.name, err)
			continue
		}
		for svc, want := range map[string]error{"echo": tt.echo, "web": tt.web} {
			err := echoOver(s, svc)
			switch {
			case want == nil && err != nil:
				t.Errorf("%s: stream to %s: %v, want it reached", tt.name, svc, err)
			case want != nil && wire.CodeOf(err) != wire.CodeOf(want):
				t.Errorf("%s: stream to %s: %v, want RESET %v", tt.name, svc, err, wire.CodeOf(want))
			}
		}
	}

	// Revoke echo-reader: its open session gets no new stream once the
	// file is reloaded (the runtime looks every second).
	s, err := wireSession(t, inst.Addrs["wire"], plain, "echo-reader")
	if err != nil {
		t.Fatal(err)
	}
	delete(tokens, "echo-reader")
	newACL := writeACL(t, "deny", tokens)
	if err := os.Rename(newACL, acl); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the revoked token's streams refused", func() bool {
		return wire.CodeOf(echoOver(s, "echo")) == wire.CodeUnauthorized
	})
}

// TestWireACLOnLoopback: on loopback an anonymous session is let in, with
// the ACL's default level for its streams.
func TestWireACLOnLoopback(t *testing.T) {
	echo := tcpBackend(t, false)
	for _, tt := range []struct {
		def  string
		want wire.ErrorCode // 0: reached
	}{
		{"deny", wire.CodeUnauthorized},
		{"read", 0},
	} {
		acl := writeACL(t, tt.def, map[string]string{"x": `[{operator: true}]`})
		inst, _ := startEdge(t, fmt.Sprintf("services:\n  echo: [%q]\n", echo), "--acl-file="+acl, "--allow-loopback")
		s, err := wireSession(t, inst.Addrs["wire"], nil, "")
		if err != nil {
			t.Fatalf("default %s: anonymous session on loopback: %v", tt.def, err)
		}
		err = echoOver(s, "echo")
		if (tt.want == 0) != (err == nil) || (err != nil && wire.CodeOf(err) != tt.want) {
			t.Errorf("default %s: stream %v, want code %v", tt.def, err, tt.want)
		}
	}
}

// TestWireLoopbackEndpoints: a registered service whose endpoint is on
// loopback gets no wire stream, without counting as the backend's failure,
// unless --allow-loopback or allow_loopback allows it; a name that
// resolves to loopback is refused the same way.
func TestWireLoopbackEndpoints(t *testing.T) {
	bal := startBalancer(t)
	echo := tcpBackend(t, false)
	_, port, _ := net.SplitHostPort(echo)
	bal.push(&balancerv1.WatchEndpointsResponse{Service: "echo", Endpoints: []*balancerv1.Endpoint{endpoint("echo-1", echo)}})
	conf := fmt.Sprintf("services:\n  named: [\"localhost:%s\"]\n", port)
	tests := []struct {
		name        string
		conf        string
		args        []string
		echo, named bool // reached
	}{
		{"default", conf, []string{"--allow-loopback=false"}, false, false},
		{"--allow-loopback", conf, []string{"--allow-loopback"}, true, true},
		{"allow_loopback", conf + "allow_loopback: [echo]\n", []string{"--allow-loopback=false"}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst, sock := startEdge(t, tt.conf, append([]string{"--balancer-addr=" + bal.addr}, tt.args...)...)
			s, err := wireSession(t, inst.Addrs["wire"], nil, "")
			if err != nil {
				t.Fatal(err)
			}
			// The balancer's set has arrived once echo is a known service.
			eventually(t, 5*time.Second, "the echo service", func() bool {
				return wire.CodeOf(echoOver(s, "echo")) != wire.CodeNoSuchService
			})
			for svc, reached := range map[string]bool{"echo": tt.echo, "named": tt.named} {
				err := echoOver(s, svc)
				if reached != (err == nil) {
					t.Errorf("stream to %s: %v, want reached=%v", svc, err, reached)
				}
				if !reached && wire.CodeOf(err) != wire.CodeUnavailable {
					t.Errorf("stream to %s: %v, want UNAVAILABLE", svc, err)
				}
				if !reached && svc == "named" && !strings.Contains(err.Error(), "loopback") {
					t.Errorf("stream to %s: %v, want a reason naming the loopback rule", svc, err)
				}
			}
			backends := runtimeCmd(t, sock, "show backends")
			if strings.Contains(backends, "echo-1") != tt.echo {
				t.Errorf("echo-1 among the backends = %v, want %v:\n%s", !tt.echo, tt.echo, backends)
			}
			// A refusal by policy is not the backend's failure.
			for _, line := range strings.Split(backends, "\n") {
				if f := strings.Fields(line); len(f) > 8 && f[0] != "service" && f[8] != "0" {
					t.Errorf("backend counted failures: %s", line)
				}
			}
		})
	}
}

// TestHTTPRouteToLoopbackEndpoint: a route from registry tags to an
// endpoint on the edge host's loopback is not proxied — the registry's
// writers must not reach the edge host's private services through the
// public listener — unless --allow-loopback says so.
func TestHTTPRouteToLoopbackEndpoint(t *testing.T) {
	bal := startBalancer(t)
	secret := backend(t, "secret")
	bal.push(&balancerv1.WatchEndpointsResponse{Service: "private", Endpoints: []*balancerv1.Endpoint{
		endpoint("private-1", secret.URL, "edge.route=/private")}})
	// control is allowed by name and streamed after private: once its route
	// is up, private's set has been applied too.
	bal.push(&balancerv1.WatchEndpointsResponse{Service: "control", Endpoints: []*balancerv1.Endpoint{
		endpoint("control-1", backend(t, "control").URL, "edge.route=/control")}})
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprintf("allow=%v", allow), func(t *testing.T) {
			inst, sock := startEdge(t, "allow_loopback: [control]\n", "--balancer-addr="+bal.addr, fmt.Sprintf("--allow-loopback=%v", allow))
			eventually(t, 5*time.Second, "the control route", func() bool {
				return strings.Contains(runtimeCmd(t, sock, "show routes"), "/control")
			})
			resp, err := http.Get("http://" + inst.Addrs["http"] + "/private")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got := resp.StatusCode == 200 && strings.Contains(string(body), "secret")
			if got != allow {
				t.Fatalf("GET /private: %d %q, want proxied=%v", resp.StatusCode, body, allow)
			}
		})
	}
}

// TestRuntimeSocketLocation checks where the runtime socket goes by
// default, and that it is private: mode 0600 in a 0700 directory, removed
// at shutdown.
func TestRuntimeSocketLocation(t *testing.T) {
	xdg := t.TempDir()
	tests := []struct {
		name string
		env  config.LookupFunc
		want func(dataDir string) string
	}{
		{"data dir", config.NoEnv, func(d string) string { return filepath.Join(d, "edge.sock") }},
		{"XDG_RUNTIME_DIR", func(k string) (string, bool) {
			if k == "XDG_RUNTIME_DIR" {
				return xdg, true
			}
			return "", false
		}, func(string) string { return filepath.Join(xdg, "switchboard", "edge.sock") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "state", "edge")
			inst, _ := startEdgeEnv(t, tt.env, "", "--runtime-socket=auto", "--data-dir="+dataDir)
			sock := tt.want(dataDir)
			if got := inst.Addrs["runtime"]; got != sock {
				t.Fatalf("runtime socket at %s, want %s", got, sock)
			}
			for path, mode := range map[string]os.FileMode{sock: 0o600, filepath.Dir(sock): 0o700} {
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != mode {
					t.Errorf("%s: mode %04o, want %04o", path, fi.Mode().Perm(), mode)
				}
			}
			if out := runtimeCmd(t, sock, "help"); !strings.Contains(out, "show routes") {
				t.Fatalf("help over the socket: %q", out)
			}
			if err := inst.Stop(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(sock); !os.IsNotExist(err) {
				t.Errorf("socket left after shutdown: %v", err)
			}
			if left, _ := filepath.Glob(filepath.Join(filepath.Dir(sock), "*")); len(left) != 0 {
				t.Errorf("files left in the socket's directory: %v", left)
			}
		})
	}
}

// TestRuntimeTCPWithClientCertificates serves the runtime API beyond
// loopback with client certificates: a client without one is turned away
// at the handshake; with an ACL, commands need their gRPC twin's
// permission held by the certificate's name.
func TestRuntimeTCPWithClientCertificates(t *testing.T) {
	pki := newPKI(t)
	acl := writeACL(t, "deny", map[string]string{
		"cert:viewer":   `[{service: "*", access: read}]`,
		"cert:operator": `[{service: "*", access: read}, {operator: true}]`,
	})
	inst, _ := startEdge(t, "", append([]string{"--runtime-addr=0.0.0.0:0", "--acl-file=" + acl}, pki.serverFlags(false)...)...)
	addr := onLoopback(inst.Addrs["runtime-tcp"])
	run := func(tc *tls.Config, cmd string) (string, error) {
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", addr, tc)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "%s\nquit\n", cmd)
		b, err := io.ReadAll(c)
		return string(b), err
	}
	if out, err := run(pki.client(""), "show routes"); err == nil && out != "" {
		t.Fatalf("without a client certificate: %q", out)
	}
	tests := []struct {
		cert, cmd, want string
	}{
		{"viewer", "show routes", "proto"},
		{"viewer", "disable backend x y", `error: cert "viewer" lacks operator`},
		{"operator", "disable backend x y", "error: not found"},
		{"viewer", "show config", "version"},
		{"viewer", "reload", `error: cert "viewer" lacks operator`},
		{"operator", "reload", "error: nothing to reload"},
		{"stranger", "show backends", `error: cert "stranger" lacks service "*" read`},
	}
	for _, tt := range tests {
		out, err := run(pki.client(tt.cert), tt.cmd)
		if err != nil || !strings.HasPrefix(out, tt.want) {
			t.Errorf("%s: %s = %q, %v; want %q...", tt.cert, tt.cmd, out, err, tt.want)
		}
	}
}

// TestAccessLogPrivate checks the access log file's mode (0600) and that
// --access-log-query=false keeps query strings out of it on every HTTP
// protocol.
func TestAccessLogPrivate(t *testing.T) {
	web := backend(t, "web")
	dir := t.TempDir()
	cert, key := writeCert(t, dir, "a.example")
	logPath := filepath.Join(dir, "access.log")
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - {name: web, addresses: [%q]}\n", strings.TrimPrefix(web.URL, "http://")),
		"--access-log="+logPath, "--access-log-query=false",
		"--https-addr=127.0.0.1:0", "--https-cert="+cert, "--https-key="+key)
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	tests := []struct {
		proto, url string
		c          *http.Client
	}{
		{"HTTP/1.1", "http://" + inst.Addrs["http"] + "/h1?secret=1", &http.Client{Timeout: 5 * time.Second}},
		{"HTTP/2.0", "http://" + inst.Addrs["http"] + "/h2c?secret=1", &http.Client{Timeout: 5 * time.Second,
			Transport: &http.Transport{Protocols: &h2c}}},
		{"HTTP/2.0", "https://" + inst.Addrs["https"] + "/h2tls?secret=1", &http.Client{Timeout: 5 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: "a.example", InsecureSkipVerify: true},
				ForceAttemptHTTP2: true}}},
	}
	for _, tt := range tests {
		resp, body := get(t, tt.c, tt.url, "")
		if resp.StatusCode != 200 || body != "web" || resp.Proto != tt.proto {
			t.Fatalf("GET %s: %s %s %q", tt.url, resp.Proto, resp.Status, body)
		}
		if got := resp.Header.Get("X-Got-Path"); !strings.HasSuffix(got, "?secret=1") {
			t.Fatalf("GET %s: the backend got %q; the query must still reach it", tt.url, got)
		}
	}
	if err := inst.Stop(); err != nil { // flushes the log
		t.Fatal(err)
	}
	fi, err := os.Stat(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("access log mode %04o, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(logPath)
	for _, p := range []string{" /h1 200 ", " /h2c 200 ", " /h2tls 200 "} {
		if !strings.Contains(string(b), p) {
			t.Errorf("access log lacks %q:\n%s", p, b)
		}
	}
	if strings.Contains(string(b), "secret") {
		t.Errorf("access log has the query string:\n%s", b)
	}
}

// fakeRegistry records who calls it: the bearer token and the client
// certificate's name.
type fakeRegistry struct {
	registryv1.UnimplementedRegistryServer
	mu            sync.Mutex
	tokens, names []string
}

func (f *fakeRegistry) ListServices(ctx context.Context, _ *registryv1.ListServicesRequest) (*registryv1.ListServicesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	f.tokens = append(f.tokens, md.Get("authorization")...)
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			f.names = append(f.names, ti.State.VerifiedChains[0][0].Subject.CommonName)
		}
	}
	return &registryv1.ListServicesResponse{}, nil
}

// TestDashboardClientsCarryTLSAndToken: the dashboard's registry client
// presents the edge's certificate and token to a registry that requires a
// client certificate.
func TestDashboardClientsCarryTLSAndToken(t *testing.T) {
	pki := newPKI(t)
	regCert, regKey := pki.issue("registry")
	kp, err := tls.LoadX509KeyPair(regCert, regKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := &fakeRegistry{}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{kp},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pki.pool})))
	registryv1.RegisterRegistryServer(srv, reg)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

	inst, _ := startEdge(t, "", append([]string{"--registry-addr=" + ln.Addr().String(), "--token=dash-token"}, pki.serverFlags(false)...)...)
	// The admin port serves TLS with the service certificate too.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: pki.client("")}}
	resp, err := c.Get("https://" + inst.Addrs["admin"] + "/dashboard/api/state")
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Errors []string }
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(st.Errors) != 0 {
		t.Fatalf("dashboard state: %d %v %v", resp.StatusCode, err, st.Errors)
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if len(reg.tokens) == 0 || reg.tokens[0] != "Bearer dash-token" || len(reg.names) == 0 || reg.names[0] != "edge" {
		t.Fatalf("the registry saw tokens %q and certificates %q, want the edge's", reg.tokens, reg.names)
	}
}
