package service

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/switchboard-net/switchboard/pkg/access"
	"github.com/switchboard-net/switchboard/pkg/certs"
)

// trustFlags are the flags every service takes for TLS and access control.
type trustFlags struct {
	tlsCert, tlsKey, tlsCA string
	aclFile                string
	token, tokenFile       string
	insecure               bool
}

func (t *trustFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.tlsCert, "tls-cert", "", "certificate (PEM) the gRPC and admin servers present, and clients present to other services; reloaded when the file changes")
	fs.StringVar(&t.tlsKey, "tls-key", "", "private key (PEM) of --tls-cert")
	fs.StringVar(&t.tlsCA, "tls-ca", "", "CA bundle (PEM): servers require client certificates it signed, clients verify servers against it")
	fs.StringVar(&t.aclFile, "acl-file", "", "ACL file (YAML): tokens and certificate names with their rules; reloaded when it changes (empty: no access control)")
	fs.StringVar(&t.token, "token", "", "bearer token this service presents when it calls other services")
	fs.StringVar(&t.tokenFile, "token-file", "", "file holding the bearer token (instead of --token, which shows in process listings)")
	fs.BoolVar(&t.insecure, "insecure", false, "allow control-plane listeners beyond loopback without TLS")
}

// trust is a runtime's TLS material, ACL and token.
type trust struct {
	tls      *certs.Reloader // nil: plaintext
	hasCA    bool            // client certificates are verified against --tls-ca
	acl      *access.Source  // nil: no access control
	token    string
	insecure bool
}

func newTrust(f trustFlags) (*trust, error) {
	t := &trust{token: f.token, insecure: f.insecure, hasCA: f.tlsCA != ""}
	if f.tokenFile != "" {
		if f.token != "" {
			return nil, &FlagError{Err: errors.New("--token and --token-file are exclusive")}
		}
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, &FlagError{Err: fmt.Errorf("--token-file: %w", err)}
		}
		t.token = strings.TrimSpace(string(b))
		if t.token == "" {
			return nil, &FlagError{Err: fmt.Errorf("--token-file: %s is empty", f.tokenFile)}
		}
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return nil, &FlagError{Err: errors.New("--tls-cert and --tls-key go together")}
	}
	if f.tlsCert != "" || f.tlsCA != "" {
		r, err := certs.NewReloader(f.tlsCert, f.tlsKey, f.tlsCA)
		if err != nil {
			return nil, &FlagError{Err: fmt.Errorf("tls: %w", err)}
		}
		t.tls = r
	}
	if f.aclFile != "" {
		src, err := access.Load(f.aclFile)
		if err != nil {
			return nil, &FlagError{Err: err}
		}
		t.acl = src
	}
	return t, nil
}

// serving reports whether the servers present a certificate.
func (t *trust) serving() bool { return t.tls != nil && t.tls.HasCertificate() }

// IsLoopback reports whether a listen address only accepts connections from
// this host: a loopback IP or "localhost". An empty host (every interface)
// is not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// RequireTLS refuses a control-plane listener (name, on addr) that would
// accept connections from beyond this host in plaintext, unless the
// operator passed --insecure. tlsOn says whether that listener serves TLS.
func (rt *Runtime) RequireTLS(name, addr string, tlsOn bool) error {
	if tlsOn || rt.trust.insecure || IsLoopback(addr) {
		return nil
	}
	return fmt.Errorf("refusing to serve %s on %s without TLS: pass --tls-cert and --tls-key (and --tls-ca to require client certificates), bind a loopback address, or pass --insecure", name, addr)
}

// ServerTLS returns the TLS configuration of this service's servers, which
// follows certificate changes on disk, or nil when TLS is off. With --tls-ca,
// requireClientCert makes a client certificate signed by it mandatory;
// otherwise one is verified when given.
func (rt *Runtime) ServerTLS(requireClientCert bool) *tls.Config {
	if !rt.trust.serving() {
		return nil
	}
	return rt.trust.tls.ServerConfig(requireClientCert)
}

// ClientTLS returns the TLS configuration for connections this service opens
// to target (host:port, or a gRPC target such as dns:///host:port): its
// certificate, and the CA to verify the server's name against. It is nil
// when TLS is off.
func (rt *Runtime) ClientTLS(target string) *tls.Config {
	if rt.trust.tls == nil {
		return nil
	}
	return rt.trust.tls.ClientConfig(hostOf(target))
}

// hostOf returns the host of a dial target.
func hostOf(target string) string {
	if i := strings.Index(target, ":///"); i >= 0 {
		target = target[i+4:]
	}
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		return strings.Trim(target, "[]")
	}
	return host
}

// Token returns the bearer token this service presents to others.
func (rt *Runtime) Token() string { return rt.trust.token }

// Insecure reports whether --insecure was given.
func (rt *Runtime) Insecure() bool { return rt.trust.insecure }

// ACL returns the access-control source, or nil when the service runs
// without an ACL file.
func (rt *Runtime) ACL() *access.Source { return rt.trust.acl }

// Identify returns the caller a bearer token and a TLS connection state
// stand for (either may be empty or nil). An unknown token is an error. It
// is what the gRPC interceptor uses, for listeners of other protocols.
func (rt *Runtime) Identify(token string, cs *tls.ConnectionState) (*access.Caller, error) {
	var names []string
	if cs != nil && len(cs.VerifiedChains) > 0 {
		names = certs.PeerNames(*cs)
	}
	if rt.trust.acl == nil {
		if len(names) > 0 {
			return access.Open(names[0], "cert"), nil
		}
		return access.Open("", ""), nil
	}
	return rt.trust.acl.ACL().Identify(token, names)
}

// bearer reads "authorization: Bearer <token>" from incoming metadata.
func bearer(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			return strings.TrimSpace(v[7:])
		}
	}
	return ""
}

func connState(ctx context.Context) *tls.ConnectionState {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		return &ti.State
	}
	return nil
}

// identify establishes the caller of an RPC and records it on the span.
func (rt *Runtime) identify(ctx context.Context, method string) (context.Context, *access.Caller, error) {
	c, err := rt.Identify(bearer(ctx), connState(ctx))
	if err != nil {
		rt.Log.Warn("call refused", "method", method, "reason", err.Error())
		return ctx, nil, status.Errorf(codes.Unauthenticated, "%s: %v", method, err)
	}
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("switchboard.caller", c.String()))
	return access.WithCaller(ctx, c), c, nil
}

// authorize checks that the caller holds every permission the method's
// entry says a call with req needs.
func (rt *Runtime) authorize(c *access.Caller, method string, req any) error {
	check, ok := rt.methods.Lookup(method)
	if !ok {
		return status.Errorf(codes.PermissionDenied, "%s: no permission is mapped for this method", method)
	}
	for _, need := range check(req) {
		if c.Allows(need) {
			continue
		}
		rt.Log.Warn("call refused", "method", method, "caller", c.String(), "lacks", need.String())
		if c.Via == "none" {
			return status.Errorf(codes.Unauthenticated, "%s needs %s: send \"authorization: Bearer <token>\" or a client certificate", method, need)
		}
		return status.Errorf(codes.PermissionDenied, "%s lacks %s", c, need)
	}
	return nil
}

func (rt *Runtime) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, c, err := rt.identify(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	if err := rt.authorize(c, info.FullMethod, req); err != nil {
		return nil, err
	}
	if !rt.Log.Enabled(ctx, slog.LevelDebug) {
		return h(ctx, req)
	}
	start := time.Now()
	resp, err := h(ctx, req)
	rt.logCall(ctx, info.FullMethod, c, start, err)
	return resp, err
}

// logCall writes the RPC access log line (at debug level): who called
// what, the outcome and how long it took.
func (rt *Runtime) logCall(ctx context.Context, method string, c *access.Caller, start time.Time, err error) {
	rt.Log.LogAttrs(ctx, slog.LevelDebug, "rpc",
		slog.String("method", method), slog.String("caller", c.String()),
		slog.String("code", status.Code(err).String()), slog.Duration("took", time.Since(start)))
}

// streamAuth identifies the caller when the stream opens and checks the
// permissions against its first request message (streams in this project
// are server-streaming: one request, then answers).
func (rt *Runtime) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	ctx, c, err := rt.identify(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	as := &authStream{ServerStream: ss, ctx: ctx, rt: rt, caller: c, method: info.FullMethod}
	if rt.Log.Enabled(ctx, slog.LevelDebug) {
		start := time.Now()
		defer func() { rt.logCall(ctx, info.FullMethod, c, start, err) }()
	}
	if !info.IsClientStream {
		return h(srv, as)
	}
	// Client streams are checked once, without a request.
	if err := rt.authorize(c, info.FullMethod, nil); err != nil {
		return err
	}
	as.checked = true
	return h(srv, as)
}

type authStream struct {
	grpc.ServerStream
	ctx     context.Context
	rt      *Runtime
	caller  *access.Caller
	method  string
	checked bool
}

func (s *authStream) Context() context.Context { return s.ctx }

func (s *authStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if !s.checked {
		s.checked = true
		if err := s.rt.authorize(s.caller, s.method, m); err != nil {
			return err
		}
	}
	return nil
}

// checkMethods fails when a registered gRPC method has no permission entry.
func (rt *Runtime) checkMethods() error {
	var missing []string
	for svc, info := range rt.GRPC.GetServiceInfo() {
		for _, m := range info.Methods {
			full := "/" + svc + "/" + m.Name
			if _, ok := rt.methods.Lookup(full); !ok {
				missing = append(missing, full)
			}
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("no permission entry for %s (add it to the service's Methods table)", strings.Join(missing, ", "))
	}
	return nil
}

// basicAdmin are the admin paths served on any listener: scraping and
// probing, which change nothing and reveal nothing private.
func basicAdmin(p string) bool {
	return p == "/metrics" || p == "/healthz" || p == "/readyz"
}

// guardAdmin wraps the admin mux: beyond loopback, only /metrics, /healthz
// and /readyz are served in plaintext; the rest (dashboard, runtime views,
// profiles) needs TLS, and a verified client certificate when --tls-ca is set.
func (rt *Runtime) guardAdmin(next http.Handler, loopback, tlsOn bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if basicAdmin(r.URL.Path) || loopback {
			next.ServeHTTP(w, r)
			return
		}
		switch {
		case !tlsOn:
			http.Error(w, "forbidden: this admin listener is not loopback and has no TLS; only /metrics, /healthz and /readyz are served", http.StatusForbidden)
		case rt.trust.hasCA && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0):
			http.Error(w, "forbidden: a client certificate signed by the service's CA is required", http.StatusForbidden)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// tokenCreds sends the service's token with every call it makes.
type tokenCreds struct {
	token      string
	requireTLS bool
}

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + t.token}, nil
}

func (t tokenCreds) RequireTransportSecurity() bool { return t.requireTLS }

// dialCreds are the transport and per-call credentials of rt.Dial.
func (rt *Runtime) dialCreds(target string) []grpc.DialOption {
	var opts []grpc.DialOption
	if cfg := rt.ClientTLS(target); cfg != nil {
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	if rt.trust.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tokenCreds{token: rt.trust.token, requireTLS: false}))
	}
	return opts
}
