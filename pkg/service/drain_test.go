package service_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
)

// readyz returns the status code of the admin port's /readyz.
func readyz(t *testing.T, admin string) int {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + admin + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// echoListener opens the service's "web" listener and answers "ok\n" on
// every connection it accepts, until Stopping() ends.
func echoListener(rt *service.Runtime) error {
	ln, err := rt.Listen("web", "127.0.0.1:0")
	if err != nil {
		return err
	}
	rt.Go("web", func(ctx context.Context) error {
		stop := context.AfterFunc(ctx, func() { ln.Close() })
		defer stop()
		for {
			c, err := ln.Accept()
			if err != nil {
				return nil
			}
			io.WriteString(c, "ok\n")
			c.Close()
		}
	})
	return nil
}

func answers(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b) == "ok\n"
}

// TestDrainDelayKeepsAccepting: during the drain delay readiness is off
// (/readyz 503, grpc.health.v1 NOT_SERVING), the service's enter hook has
// run, and its listeners still accept; they close after it.
func TestDrainDelayKeepsAccepting(t *testing.T) {
	const delay = 3 * time.Second // the checks below take milliseconds
	entered := make(chan struct{})
	var stoppingEarly atomic.Bool
	spec := service.Spec{Name: "delayed", Start: func(_ context.Context, rt *service.Runtime) error {
		rt.DrainDelay(delay, func() {
			// Stopping() has not ended: the window is still serving.
			stoppingEarly.Store(rt.Stopping().Err() != nil)
			close(entered)
		})
		return echoListener(rt)
	}}
	inst := servicetest.Start(t, spec)
	if code := readyz(t, inst.Addrs["admin"]); code != http.StatusOK {
		t.Fatalf("/readyz before shutdown = %d", code)
	}
	t0 := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- inst.Stop() }()
	<-entered
	if stoppingEarly.Load() {
		t.Error("Stopping() ended before the drain delay")
	}
	if code := readyz(t, inst.Addrs["admin"]); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the drain delay = %d, want 503", code)
	}
	resp, err := healthpb.NewHealthClient(inst.Conn(t)).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health during the drain delay = %v, %v; want NOT_SERVING", resp.GetStatus(), err)
	}
	if !answers(inst.Addrs["web"]) {
		t.Error("a listener refused a connection during the drain delay")
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if d := time.Since(t0); d < delay {
		t.Errorf("shutdown took %v, less than the drain delay %v", d, delay)
	}
	if answers(inst.Addrs["web"]) {
		t.Error("still accepting after shutdown")
	}
}

// TestNoDrainDelayUnchanged: a service that does not opt in stops as
// before: listeners close during shutdown with no delay.
func TestNoDrainDelayUnchanged(t *testing.T) {
	inst := servicetest.Start(t, service.Spec{Name: "plain", Start: func(_ context.Context, rt *service.Runtime) error {
		return echoListener(rt)
	}})
	t0 := time.Now()
	if err := inst.Stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 4*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if answers(inst.Addrs["web"]) {
		t.Error("still accepting after shutdown")
	}
}

// TestRetireClosesListenersFirst: on Retire the runtime closes every
// listener before the drain hooks run (a successor holds the sockets),
// keeps readiness on, and Run returns nil.
func TestRetireClosesListenersFirst(t *testing.T) {
	type seen struct {
		retiring, accepting bool
	}
	hook := make(chan seen, 1)
	var rtp atomic.Pointer[service.Runtime]
	var web atomic.Value
	spec := service.Spec{Name: "retiree", Start: func(_ context.Context, rt *service.Runtime) error {
		rtp.Store(rt)
		if err := echoListener(rt); err != nil {
			return err
		}
		rt.OnShutdown(func(context.Context) error {
			hook <- seen{retiring: rt.Retiring(), accepting: answers(web.Load().(string))}
			return nil
		})
		return nil
	}}
	readyCalled := make(chan struct{})
	inst := servicetest.Start(t, service.Spec{Name: spec.Name, Start: func(ctx context.Context, rt *service.Runtime) error {
		rt.OnReady(func() { close(readyCalled) })
		return spec.Start(ctx, rt)
	}})
	<-readyCalled
	web.Store(inst.Addrs["web"])
	rt := rtp.Load()
	if rt.Retiring() {
		t.Fatal("Retiring before Retire")
	}

	h, err := rt.HandOver()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range h.Sockets() {
		names = append(names, s.Name+" "+s.Network+" "+s.Addr)
	}
	h.Close()
	sort.Strings(names)
	if got := strings.Join(names, ", "); got != "admin tcp 127.0.0.1:0, grpc tcp 127.0.0.1:0, web tcp 127.0.0.1:0" {
		t.Errorf("HandOver sockets = %s", got)
	}

	rt.Retire()
	s := <-hook
	if !s.retiring || s.accepting {
		t.Errorf("in the drain hook: Retiring %v, still accepting %v; want true, false", s.retiring, s.accepting)
	}
	if err := inst.Stop(); err != nil {
		t.Fatalf("Run after Retire = %v, want nil", err)
	}
}
