package edge_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
)

// grpcBackend is a real grpc-go server with health and reflection. Every
// call answers with header metadata x-backend (its name) and x-echo (the
// caller's x-echo and traceparent), and trailer x-backend-trailer.
// Methods of the unknown service "slow.Svc" wait until the call ends.
type grpcBackend struct {
	name  string
	addr  string
	hs    *health.Server
	srv   *grpc.Server
	waits atomic.Int64 // calls to slow.Svc received
}

func startGRPCBackend(t *testing.T, name string) *grpcBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gb := &grpcBackend{name: name, addr: ln.Addr().String(), hs: health.NewServer()}
	tag := func(ctx context.Context) metadata.MD {
		md, _ := metadata.FromIncomingContext(ctx)
		return metadata.Pairs("x-backend", name,
			"x-echo", strings.Join(md.Get("x-echo"), ","),
			"x-got-traceparent", strings.Join(md.Get("traceparent"), ","))
	}
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			grpc.SetHeader(ctx, tag(ctx))
			grpc.SetTrailer(ctx, metadata.Pairs("x-backend-trailer", name))
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			ss.SetHeader(tag(ss.Context()))
			ss.SetTrailer(metadata.Pairs("x-backend-trailer", name))
			return h(srv, ss)
		}),
		grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
			gb.waits.Add(1)
			<-ss.Context().Done()
			return status.Error(codes.Canceled, "gone")
		}),
	)
	gb.srv = srv
	healthpb.RegisterHealthServer(srv, gb.hs)
	reflection.Register(srv)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return gb
}

// rawH2C is a plain net/http HTTP/2 cleartext backend answering any call
// with one empty gRPC message, header x-got-te (the TE it received) and
// trailers grpc-status 0 and x-sum 42. It returns its address.
func rawH2C(t *testing.T) string {
	t.Helper()
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("X-Got-Te", r.Header.Get("Te"))
		w.WriteHeader(http.StatusOK)
		w.Write([]byte{0, 0, 0, 0, 0}) // an uncompressed, empty message
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"X-Sum", "42")
	}))
	s.Config.Protocols = &protos
	s.Start()
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// grpcClient dials the edge's HTTP listener with a real grpc-go client
// (h2c with prior knowledge).
func grpcClient(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestGRPCThroughEdge runs a real gRPC server behind the edge's plain HTTP
// port: unary calls, a server stream, metadata and trailers, spreading over
// two backends, and the edge's own gRPC-shaped errors.
func TestGRPCThroughEdge(t *testing.T) {
	a, b := startGRPCBackend(t, "a"), startGRPCBackend(t, "b")
	conf := fmt.Sprintf(`routes:
  - {name: grpc, path_prefix: /grpc.health.v1.Health, addresses: [%q, %q]}
  - {name: slow, path_prefix: /slow.Svc, addresses: [%q]}
  - {name: empty, path_prefix: /empty.Svc, service: nothing}
  - {name: raw, path_prefix: /raw.Svc, addresses: [%q]}
`, a.addr, b.addr, a.addr, rawH2C(t))
	inst, _ := startEdge(t, conf, "--response-timeout=300ms")
	cc := grpcClient(t, inst.Addrs["http"])
	hc := healthpb.NewHealthClient(cc)

	t.Run("unary spreads over both backends with metadata and trailers", func(t *testing.T) {
		seen := map[string]int{}
		for i := 0; i < 8; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
			ctx = metadata.AppendToOutgoingContext(ctx, "x-echo", "hello", "traceparent", tp)
			var hdr, trl metadata.MD
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr), grpc.Trailer(&trl))
			cancel()
			if err != nil {
				t.Fatalf("Check through the edge: %v", err)
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("status %v", resp.GetStatus())
			}
			name := strings.Join(hdr.Get("x-backend"), ",")
			if got := strings.Join(trl.Get("x-backend-trailer"), ","); got != name || name == "" {
				t.Fatalf("header x-backend %q, trailer x-backend-trailer %q", name, got)
			}
			if e := strings.Join(hdr.Get("x-echo"), ","); e != "hello" {
				t.Fatalf("the backend saw x-echo %q", e)
			}
			if g := strings.Join(hdr.Get("x-got-traceparent"), ","); g != tp {
				t.Fatalf("the backend saw traceparent %q, want %q", g, tp)
			}
			seen[name]++
		}
		if seen["a"] == 0 || seen["b"] == 0 {
			t.Fatalf("calls per backend %v, want both used", seen)
		}
	})

	t.Run("TE trailers reaches the backend, trailers come back", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var hdr, trl metadata.MD
		err := cc.Invoke(ctx, "/raw.Svc/Call", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{},
			grpc.Header(&hdr), grpc.Trailer(&trl))
		if err != nil {
			t.Fatal(err)
		}
		if got := hdr.Get("x-got-te"); len(got) != 1 || got[0] != "trailers" {
			t.Fatalf("the backend saw TE %q, want trailers", got)
		}
		if got := trl.Get("x-sum"); len(got) != 1 || got[0] != "42" {
			t.Fatalf("trailer x-sum %q, want 42 (trailers %v)", got, trl)
		}
	})

	t.Run("a backend's error status passes through", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("Check of an unknown service: %v, want NotFound from the backend", err)
		}
	})

	t.Run("server stream delivers several messages", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, gb := range []*grpcBackend{a, b} {
			gb.hs.SetServingStatus("watched", healthpb.HealthCheckResponse_SERVING)
		}
		st, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "watched"})
		if err != nil {
			t.Fatal(err)
		}
		hdr, err := st.Header()
		if err != nil {
			t.Fatal(err)
		}
		var gb *grpcBackend
		switch strings.Join(hdr.Get("x-backend"), ",") {
		case "a":
			gb = a
		case "b":
			gb = b
		default:
			t.Fatalf("stream header %v", hdr)
		}
		want := []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_SERVING,
			healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVING}
		for i, w := range want {
			m, err := st.Recv()
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if m.GetStatus() != w {
				t.Fatalf("message %d: %v, want %v", i, m.GetStatus(), w)
			}
			if i+1 < len(want) {
				gb.hs.SetServingStatus("watched", want[i+1])
			}
		}
		cancel()
		if _, err := st.Recv(); status.Code(err) != codes.Canceled {
			t.Fatalf("after cancel: %v", err)
		}
	})

	t.Run("metrics count the calls", func(t *testing.T) {
		m := metricsText(t, inst)
		for _, want := range []string{
			`switchboard_edge_http_requests_total{code="2xx",route="grpc"}`,
			`switchboard_edge_backend_requests_total{backend="` + a.addr + `",service="static:grpc"}`,
			`switchboard_edge_backend_requests_total{backend="` + b.addr + `",service="static:grpc"}`,
		} {
			if !strings.Contains(m, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})

	t.Run("edge errors are gRPC statuses", func(t *testing.T) {
		for _, tc := range []struct {
			method string
			code   codes.Code
			msg    string
		}{
			{"/empty.Svc/Call", codes.Unavailable, "no backend available for service nothing"},
			{"/other.Svc/Call", codes.Unimplemented, "no route"},
			{"/slow.Svc/Wait", codes.DeadlineExceeded, "did not answer in time"},
		} {
			ctx, cancel := context.WithCancel(context.Background())
			// No deadline on the call: the edge's --response-timeout applies.
			done := time.AfterFunc(10*time.Second, cancel)
			err := cc.Invoke(ctx, tc.method, &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
			done.Stop()
			cancel()
			if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Errorf("%s: %v, want %v with %q", tc.method, err, tc.code, tc.msg)
			}
		}
	})
}

// TestGRPCRetriesOnlyUnreachedBackends: a backend that refuses
// connections is skipped (the call never reached it), so every call
// succeeds on the live one and the dead one is counted as failing.
func TestGRPCRetriesOnlyUnreachedBackends(t *testing.T) {
	a := startGRPCBackend(t, "a")
	dead := refusingAddr(t)
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - {name: grpc, addresses: [%q, %q]}\n", dead, a.addr))
	hc := healthpb.NewHealthClient(grpcClient(t, inst.Addrs["http"]))
	for i := 0; i < 4; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	m := metricsText(t, inst)
	if want := `switchboard_edge_backend_failures_total{backend="` + dead + `",service="static:grpc"}`; !strings.Contains(m, want) {
		t.Fatalf("metrics lack %s", want)
	}
}

// refusingAddr returns a loopback address that refuses connections: a TCP
// socket bound to 127.0.0.1:0 but not listening. Holding the port keeps
// other tests' listeners off it.
func refusingAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// TestGRPCBackendDiesMidStream: when the backend goes away during a
// stream, the client gets UNAVAILABLE from the edge in the trailers.
func TestGRPCBackendDiesMidStream(t *testing.T) {
	a := startGRPCBackend(t, "a")
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - {name: grpc, addresses: [%q]}\n", a.addr))
	hc := healthpb.NewHealthClient(grpcClient(t, inst.Addrs["http"]))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	a.srv.Stop()
	_, err = st.Recv()
	if s := status.Convert(err); s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "edge:") {
		t.Fatalf("after the backend stopped: %v, want Unavailable from the edge", err)
	}
}

// TestGRPCOverTLS: gRPC on the HTTPS listener (ALPN h2) goes to a
// cleartext backend.
func TestGRPCOverTLS(t *testing.T) {
	a := startGRPCBackend(t, "a")
	cert, key := writeCert(t, t.TempDir(), "grpc.example")
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - {name: grpc, addresses: [%q]}\n", a.addr),
		"--https-addr=127.0.0.1:0", "--https-cert="+cert, "--https-key="+key)
	pem, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "grpc.example"})
	cc, err := grpc.NewClient("passthrough:///"+inst.Addrs["https"], grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var hdr metadata.MD
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr))
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check over TLS: %v %v", resp, err)
	}
	if got := hdr.Get("x-backend"); len(got) != 1 || got[0] != "a" {
		t.Fatalf("x-backend %q", got)
	}
}

// TestGRPCurlThroughEdge lists a backend's services with the real grpcurl
// through the edge's plain HTTP port.
func TestGRPCurlThroughEdge(t *testing.T) {
	grpcurl := servicetest.Tool(t, "grpcurl")
	a := startGRPCBackend(t, "a")
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - {name: grpc, addresses: [%q]}\n", a.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, grpcurl, "-plaintext", inst.Addrs["http"], "list").CombinedOutput()
	if err != nil {
		t.Fatalf("grpcurl list: %v\n%s", err, out)
	}
	for _, want := range []string{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("grpcurl list lacks %s:\n%s", want, out)
		}
	}
	out, err = exec.CommandContext(ctx, grpcurl, "-plaintext", inst.Addrs["http"], "grpc.health.v1.Health/Check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SERVING") {
		t.Fatalf("grpcurl Check: %v\n%s", err, out)
	}
}

// TestGRPCSpans: with trace export on, a gRPC call through the edge is a
// span in the caller's trace and the backend sees the edge's span as
// parent.
func TestGRPCSpans(t *testing.T) {
	col := servicetest.StartCollector(t)
	env := col.Env
	a := startGRPCBackend(t, "a")
	inst, _ := startEdgeEnv(t, env, fmt.Sprintf("routes:\n  - {name: grpc, addresses: [%q]}\n", a.addr))
	hc := healthpb.NewHealthClient(grpcClient(t, inst.Addrs["http"]))
	const traceID = "6bf92f3577b34da6a3ce929d0e0e4738"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	var hdr metadata.MD
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if tp := strings.Join(hdr.Get("x-got-traceparent"), ","); !strings.HasPrefix(tp, "00-"+traceID+"-") || strings.Contains(tp, "00f067aa0ba902b7") {
		t.Fatalf("the backend saw traceparent %q, want the caller's trace with the edge's span as parent", tp)
	}
	if err := inst.Stop(); err != nil { // flushes spans
		t.Fatal(err)
	}
	if names := col.Spans(traceID); !strings.Contains(strings.Join(names, ","), "POST grpc") {
		t.Fatalf("spans in the trace: %v", names)
	}
}
