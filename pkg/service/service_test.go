package service_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/switchboard-net/switchboard/pkg/access"
	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
)

// waitDesc is a one-method test service: Wait sleeps for the given duration
// (or until its context ends) and returns.
var waitDesc = grpc.ServiceDesc{
	ServiceName: "switchboard.test.v1.Waiter",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Wait",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var d durationpb.Duration
			if err := dec(&d); err != nil {
				return nil, err
			}
			srv.(*waiter).started <- struct{}{}
			select {
			case <-time.After(d.AsDuration()):
				return &emptypb.Empty{}, nil
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		},
	}},
}

type waiter struct{ started chan struct{} }

func waitSpec(w *waiter) service.Spec {
	return service.Spec{
		Name:    "waiter",
		Methods: access.Methods{"/switchboard.test.v1.Waiter/Wait": access.Public},
		Start: func(_ context.Context, rt *service.Runtime) error {
			rt.GRPC.RegisterService(&waitDesc, w)
			return nil
		},
	}
}

func TestHealthAndReflectionWithGrpcurl(t *testing.T) {
	grpcurl := servicetest.Tool(t, "grpcurl")
	inst := servicetest.Start(t, waitSpec(&waiter{started: make(chan struct{}, 1)}))
	out, err := exec.Command(grpcurl, "-plaintext", "-max-time", "10", inst.Addrs["grpc"], "list").CombinedOutput()
	if err != nil {
		t.Fatalf("grpcurl list: %v\n%s", err, out)
	}
	for _, want := range []string{"grpc.health.v1.Health", "switchboard.test.v1.Waiter", "grpc.reflection.v1.ServerReflection"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("grpcurl list lacks %s:\n%s", want, out)
		}
	}
	out, err = exec.Command(grpcurl, "-plaintext", "-max-time", "10", inst.Addrs["grpc"], "grpc.health.v1.Health/Check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"SERVING"`) {
		t.Fatalf("health check: %v\n%s", err, out)
	}
}

func TestAdminEndpoints(t *testing.T) {
	inst := servicetest.Start(t, waitSpec(&waiter{started: make(chan struct{}, 1)}))
	base := "http://" + inst.Addrs["admin"]
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ready",
		"/metrics": "grpc_server_handled_total",
	} {
		code, body := get(t, base+path)
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s = %d %q, want 200 containing %q", path, code, trim(body), want)
		}
	}
}

func TestReadyCheckFailureMakesReadyz503(t *testing.T) {
	spec := service.Spec{Name: "dep", Start: func(_ context.Context, rt *service.Runtime) error {
		rt.AddReadyCheck("backend", func(context.Context) error { return errors.New("consul unreachable") })
		return nil
	}}
	inst := servicetest.Start(t, spec)
	code, body := get(t, "http://"+inst.Addrs["admin"]+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "backend: consul unreachable") {
		t.Fatalf("GET /readyz = %d %q, want 503 naming the failing check", code, body)
	}
}

// TestReadyLoggedOnlyWhenReady: a service whose readiness check fails logs
// that it serves but is not ready (with the reason), and "ready" only once
// /readyz would answer 200.
func TestReadyLoggedOnlyWhenReady(t *testing.T) {
	var up atomic.Bool
	spec := service.Spec{Name: "dep", Start: func(_ context.Context, rt *service.Runtime) error {
		rt.AddReadyCheck("backend", func(context.Context) error {
			if !up.Load() {
				return errors.New("consul unreachable")
			}
			return nil
		})
		return nil
	}}
	inst := servicetest.Start(t, spec)
	waitLog := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(inst.Logs(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log:\n%s", want, inst.Logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitLog(`reason="backend: consul unreachable"`)
	if strings.Contains(inst.Logs(), "msg=ready") {
		t.Fatalf("logged ready while /readyz says 503:\n%s", inst.Logs())
	}
	up.Store(true)
	waitLog("msg=ready")
}

func TestGracefulShutdownDrainsInFlightRPC(t *testing.T) {
	w := &waiter{started: make(chan struct{}, 1)}
	inst := servicetest.Start(t, waitSpec(w))
	cc := inst.Conn(t)

	callErr := make(chan error, 1)
	go func() {
		callErr <- cc.Invoke(context.Background(), "/switchboard.test.v1.Waiter/Wait", durationpb.New(300*time.Millisecond), new(emptypb.Empty))
	}()
	<-w.started
	stopErr := make(chan error, 1)
	go func() { stopErr <- inst.Stop() }()

	if err := <-callErr; err != nil {
		t.Fatalf("in-flight RPC failed during shutdown: %v", err)
	}
	if err := <-stopErr; err != nil {
		t.Fatalf("Run returned %v on a clean shutdown", err)
	}
	// The server is gone: a new call fails.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := cc.Invoke(ctx, "/switchboard.test.v1.Waiter/Wait", durationpb.New(0), new(emptypb.Empty))
	if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
		t.Fatalf("call after shutdown = %v, want Unavailable", err)
	}
}

func TestShutdownGraceBoundsSlowRPC(t *testing.T) {
	w := &waiter{started: make(chan struct{}, 1)}
	inst := servicetest.Start(t, waitSpec(w), "--shutdown-grace=200ms")
	cc := inst.Conn(t)
	callErr := make(chan error, 1)
	go func() {
		callErr <- cc.Invoke(context.Background(), "/switchboard.test.v1.Waiter/Wait", durationpb.New(time.Minute), new(emptypb.Empty))
	}()
	<-w.started
	start := time.Now()
	if err := inst.Stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("shutdown took %v with a 200ms grace", took)
	}
	if err := <-callErr; err == nil {
		t.Fatal("a call longer than the grace period succeeded")
	}
}

func TestBadFlagsAreFlagErrors(t *testing.T) {
	for _, args := range [][]string{{"--nope"}, {"--log-format=xml"}, {"--shutdown-grace=-1s"},
		{"--max-watches=0"}, {"--max-watches-per-client=-1"}, {"--max-streams-per-conn=0"}} {
		err := service.Run(context.Background(), service.Spec{Name: "x"}, args, service.WithLogOutput(io.Discard))
		var fe *service.FlagError
		if !errors.As(err, &fe) {
			t.Errorf("Run(%v) = %v, want a *FlagError", args, err)
		}
	}
}

func TestStartFailureIsReturned(t *testing.T) {
	spec := service.Spec{Name: "broken", Start: func(context.Context, *service.Runtime) error { return errors.New("no disk") }}
	err := service.Run(context.Background(), spec, []string{"--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0"}, service.WithLogOutput(io.Discard))
	if err == nil || !strings.Contains(err.Error(), "no disk") {
		t.Fatalf("Run = %v, want the start error", err)
	}
}

// TestTraceSpansTwoServices checks that a call from one service to another
// is one trace with spans from both, exported over OTLP.
func TestTraceSpansTwoServices(t *testing.T) {
	col := servicetest.StartCollector(t)
	env := col.Env

	back := servicetest.StartEnv(t, service.Spec{Name: "back"}, env)
	// front's Relay method calls back's health check.
	relay := grpc.ServiceDesc{
		ServiceName: "switchboard.test.v1.Relay",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Call",
			Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				if err := dec(new(emptypb.Empty)); err != nil {
					return nil, err
				}
				cc := srv.(*grpc.ClientConn)
				if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					return nil, err
				}
				return &emptypb.Empty{}, nil
			},
		}},
	}
	front := servicetest.StartEnv(t, service.Spec{Name: "front", Methods: access.Methods{"/switchboard.test.v1.Relay/Call": access.Public}, Start: func(_ context.Context, rt *service.Runtime) error {
		cc, err := rt.Dial(back.Addrs["grpc"])
		if err != nil {
			return err
		}
		rt.OnShutdown(func(context.Context) error { return cc.Close() })
		rt.GRPC.RegisterService(&relay, cc)
		return nil
	}}, env)

	cc, err := grpc.NewClient(front.Addrs["grpc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if err := cc.Invoke(context.Background(), "/switchboard.test.v1.Relay/Call", new(emptypb.Empty), new(emptypb.Empty)); err != nil {
		t.Fatal(err)
	}
	// Stopping flushes both exporters.
	if err := front.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := back.Stop(); err != nil {
		t.Fatal(err)
	}
	traces := col.Traces()
	for _, spans := range traces {
		joined := strings.Join(spans, " ")
		if strings.Contains(joined, "switchboard-front/switchboard.test.v1.Relay/Call") &&
			strings.Contains(joined, "switchboard-front/grpc.health.v1.Health/Check") &&
			strings.Contains(joined, "switchboard-back/grpc.health.v1.Health/Check") {
			return
		}
	}
	t.Fatalf("no trace holds spans of both services: %v", traces)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func trim(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

func TestEveryRunsUntilStop(t *testing.T) {
	var mu sync.Mutex
	n := 0
	ticked := make(chan struct{}, 1)
	inst := servicetest.Start(t, service.Spec{Name: "ticker", Start: func(_ context.Context, rt *service.Runtime) error {
		rt.Every("tick", 5*time.Millisecond, func() {
			mu.Lock()
			n++
			mu.Unlock()
			select {
			case ticked <- struct{}{}:
			default:
			}
		})
		return nil
	}})
	for i := 0; i < 3; i++ {
		<-ticked
	}
	if err := inst.Stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	after := n
	mu.Unlock()
	time.Sleep(30 * time.Millisecond) // would be ~6 ticks if it still ran
	mu.Lock()
	defer mu.Unlock()
	if n != after {
		t.Fatalf("fn ran %d more times after the service stopped", n-after)
	}
}
