package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/certs"
	"github.com/switchboard-net/switchboard/pkg/telemetry"
	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// demoService is the name the demo app registers under.
const demoService = "demo"

// demoApp is one instance of the demo app: a tiny HTTP server.
type demoApp struct {
	id    string
	addr  string
	close func()
}

// demoHandler answers every path with the instance's name, and /healthz
// with ok, so that balancing is visible with plain curl.
func demoHandler(id string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Demo-Instance", id)
		fmt.Fprintf(w, "hello from %s (%s %s)\n", id, r.Method, r.URL.Path)
	})
	return mux
}

// traced wraps h so that each request is a server span whose parent is
// the caller's W3C traceparent.
func traced(tracer trace.Tracer, h http.Handler) http.Handler {
	prop := telemetry.Propagator()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, r.Method+" "+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// demoInstance is the registration of one demo instance.
func demoInstance(service, id, host string, port int, route string) *registryv1.Instance {
	return &registryv1.Instance{
		Service: service,
		Id:      id,
		Address: host,
		Port:    uint32(port),
		Tags:    []string{"edge.route=" + route},
		Check: &registryv1.HealthCheck{
			Kind:     registryv1.CheckKind_CHECK_KIND_HTTP,
			HttpPath: "/healthz",
			Interval: durationpb.New(2 * time.Second),
			Timeout:  durationpb.New(time.Second),
		},
	}
}

// startDemo serves n demo instances on host and registers each with the
// registry at regAddr, with an HTTP health check the prober runs.
func startDemo(ctx context.Context, host, regAddr string, n int) ([]demoApp, error) {
	cc, err := grpc.NewClient(regAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("registry client: %w", err)
	}
	defer cc.Close()
	reg := registryv1.NewRegistryClient(cc)
	var apps []demoApp
	for i := 1; i <= n; i++ {
		id := demoService + "-" + strconv.Itoa(i)
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return apps, fmt.Errorf("demo listener: %w", err)
		}
		srv := &http.Server{Handler: demoHandler(id), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		apps = append(apps, demoApp{id: id, addr: ln.Addr().String(), close: func() { _ = srv.Close() }})
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = reg.Register(rctx, &registryv1.RegisterRequest{
			Instance: demoInstance(demoService, id, host, ln.Addr().(*net.TCPAddr).Port, "/"),
		})
		cancel()
		if err != nil {
			return apps, fmt.Errorf("register %s: %w", id, err)
		}
	}
	return apps, nil
}

// scheduleDemoProbe has the prober check the first demo instance every two
// seconds, so the dashboard's RTT chart has a line from the start.
func scheduleDemoProbe(ctx context.Context, proberAddr, demoAddr string) error {
	cc, err := grpc.NewClient(proberAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("prober client: %w", err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = proberv1.NewProberClient(cc).Schedule(ctx, &proberv1.ScheduleRequest{Job: &proberv1.Job{
		Id: "demo-http",
		Spec: &proberv1.JobSpec{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{
			Kind: "http", Target: "http://" + demoAddr + "/healthz",
		}}},
		Interval: durationpb.New(2 * time.Second),
	}})
	if err != nil {
		return fmt.Errorf("schedule the demo probe: %w", err)
	}
	return nil
}

// runDemo serves one demo instance and registers it, retrying until the
// registry answers (containers start in any order); it deregisters on exit.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", ":8080", "HTTP listen address")
	name := fs.String("name", "demo-1", "instance id (and the name it answers with)")
	service := fs.String("service", demoService, "service name to register under")
	route := fs.String("route", "/", "edge route tag value (edge.route=ROUTE)")
	register := fs.String("register", "", "registry gRPC address; empty serves without registering")
	advertise := fs.String("advertise", "", "address to register (default: this host's first non-loopback IP)")
	wait := fs.Duration("register-timeout", time.Minute, "how long to keep trying to reach the registry")
	var tc demoTrust
	fs.StringVar(&tc.ca, "tls-ca", "", "CA bundle (PEM) to verify the registry against (mutual TLS with --tls-cert)")
	fs.StringVar(&tc.cert, "tls-cert", "", "client certificate (PEM) to present to the registry")
	fs.StringVar(&tc.key, "tls-key", "", "key (PEM) of --tls-cert")
	fs.StringVar(&tc.tokenFile, "token-file", "", "file holding the bearer token to register with (it needs service write on --service)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	// Traced like a real app behind the edge: with OTEL_* set, each request
	// is a server span continuing the edge's trace.
	tr, err := telemetry.NewTracing(ctx, "switchboard-demo", os.LookupEnv)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tr.Shutdown(sctx)
	}()
	handler := demoHandler(*name)
	if tr.Exporting {
		handler = traced(tr.Provider.Tracer("switchboard-demo"), handler)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	fmt.Fprintf(stdout, "demo %s serving on %s\n", *name, ln.Addr())

	if *register != "" {
		host := *advertise
		if host == "" {
			if host, err = firstIP(); err != nil {
				return err
			}
		}
		port := ln.Addr().(*net.TCPAddr).Port
		creds, err := tc.dialOptions(*register)
		if err != nil {
			return err
		}
		cc, err := grpc.NewClient(*register, creds...)
		if err != nil {
			return fmt.Errorf("registry client: %w", err)
		}
		defer cc.Close()
		reg := registryv1.NewRegistryClient(cc)
		inst := demoInstance(*service, *name, host, port, *route)
		if err := retry(ctx, *wait, func(ctx context.Context) error {
			_, err := reg.Register(ctx, &registryv1.RegisterRequest{Instance: inst})
			return err
		}); err != nil {
			return fmt.Errorf("register with %s: %w", *register, err)
		}
		fmt.Fprintf(stdout, "registered %s/%s at %s:%d\n", *service, *name, host, port)
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_, _ = reg.Deregister(dctx, &registryv1.DeregisterRequest{Service: *service, Id: *name})
		}()
	}
	<-ctx.Done()
	return nil
}

// retry calls fn (each call bounded to 3s) with backoff until it succeeds,
// ctx ends or total has passed.
func retry(ctx context.Context, total time.Duration, fn func(context.Context) error) error {
	deadline := time.Now().Add(total)
	backoff := 100 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := fn(cctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().Add(backoff).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// firstIP returns the host's first non-loopback IPv4 address (in a
// container: its address on the compose network).
func firstIP() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("interface addresses: %w", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return ipn.IP.String(), nil
		}
	}
	return "", errors.New("no non-loopback IPv4 address: pass --advertise")
}

// demoTrust is how the demo app reaches a locked registry: mutual TLS and a
// bearer token, each optional.
type demoTrust struct {
	ca, cert, key, tokenFile string
}

// dialOptions returns the credentials of a client of target.
func (d demoTrust) dialOptions(target string) ([]grpc.DialOption, error) {
	tlsOn := d.ca != "" || d.cert != "" || d.key != ""
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if tlsOn {
		r, err := certs.NewReloader(d.cert, d.key, d.ca)
		if err != nil {
			return nil, usageError{fmt.Errorf("--tls-ca/--tls-cert/--tls-key: %w", err)}
		}
		host, _, err := net.SplitHostPort(target)
		if err != nil {
			host = target
		}
		opts[0] = grpc.WithTransportCredentials(credentials.NewTLS(r.ClientConfig(host)))
	}
	if d.tokenFile != "" {
		b, err := os.ReadFile(d.tokenFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("--token-file: %w", err)}
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return nil, usageError{fmt.Errorf("--token-file %s is empty", d.tokenFile)}
		}
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken{token: tok, tls: tlsOn}))
	}
	return opts, nil
}

// bearerToken sends "authorization: Bearer <token>" with every call.
type bearerToken struct {
	token string
	tls   bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity: over TLS, never send the token in the clear.
func (b bearerToken) RequireTransportSecurity() bool { return b.tls }
