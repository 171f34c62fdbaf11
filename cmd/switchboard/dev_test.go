package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
)

// syncBuffer is a bytes.Buffer safe for the dev command's writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDevStack runs `switchboard dev` as a newcomer would and uses what the
// banner prints: curl through the edge reaches both demo instances, dig
// finds the demo app, grpcurl lists every service; Ctrl-C stops it cleanly.
func TestDevStack(t *testing.T) {
	dig := servicetest.Tool(t, "dig")
	grpcurl := servicetest.Tool(t, "grpcurl")
	ready := make(chan *devStack, 1)
	devReady = func(s *devStack) { ready <- s }
	defer func() { devReady = nil }()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	code := make(chan int, 1)
	go func() { code <- run(ctx, []string{"dev", "--random-ports", "--data-dir", t.TempDir()}, &out, &errOut) }()
	var s *devStack
	select {
	case s = <-ready:
	case c := <-code:
		t.Fatalf("dev exited %d:\n%s", c, errOut.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("dev did not start:\n%s", errOut.String())
	}
	banner := out.String()
	for _, want := range []string{"curl -s http://" + s.addrs["edge"]["http"], "dig @127.0.0.1 -p", "grpcurl -plaintext " + s.addrs["registry"]["grpc"]} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}

	// Through the edge: both demo instances answer (the prober has to
	// pass their checks and the balancer to stream them first).
	seen := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	client := &http.Client{Timeout: 3 * time.Second}
	for len(seen) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("through the edge saw only %v\n%s", seen, errOut.String())
		}
		resp, err := client.Get("http://" + s.addrs["edge"]["http"] + "/")
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			seen[resp.Header.Get("X-Demo-Instance")] = strings.HasPrefix(string(body), "hello from demo-")
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}

	host, port, _ := net.SplitHostPort(s.addrs["resolver"]["dns"])
	digOut, err := exec.Command(dig, "@"+host, "-p", port, "+time=2", "+tries=2", "demo.service.switchboard.", "A").CombinedOutput()
	if err != nil || !strings.Contains(string(digOut), "status: NOERROR") || !strings.Contains(string(digOut), "127.0.0.1") {
		t.Fatalf("dig: %v\n%s", err, digOut)
	}
	for name, svc := range map[string]string{
		"registry": "switchboard.registry.v1.Registry",
		"balancer": "switchboard.balancer.v1.Balancer",
		"resolver": "switchboard.resolver.v1.Resolver",
		"prober":   "switchboard.prober.v1.Prober",
		"edge":     "switchboard.edge.v1.Edge",
	} {
		list, err := exec.Command(grpcurl, "-plaintext", "-max-time", "10", s.addrs[name]["grpc"], "list").CombinedOutput()
		if err != nil || !strings.Contains(string(list), svc) || !strings.Contains(string(list), "grpc.health.v1.Health") {
			t.Errorf("grpcurl list %s: %v\n%s", name, err, list)
		}
	}

	// switchboard connect carries local connections to the demo app over
	// one wire session to the edge.
	connReady := make(chan string, 1)
	connectReady = func(a string) { connReady <- a }
	defer func() { connectReady = nil }()
	var cout, cerr syncBuffer
	connCode := make(chan int, 1)
	go func() {
		connCode <- run(ctx, []string{"connect", "demo", "--edge", s.addrs["edge"]["wire"]}, &cout, &cerr)
	}()
	var local string
	select {
	case local = <-connReady:
	case c := <-connCode:
		t.Fatalf("connect exited %d: %s", c, cerr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("connect did not start")
	}
	viaWire := map[string]bool{}
	for i := 0; i < 4; i++ {
		resp, err := client.Get("http://" + local + "/")
		if err != nil {
			t.Fatalf("through connect: %v (%s)", err, cerr.String())
		}
		resp.Body.Close()
		viaWire[resp.Header.Get("X-Demo-Instance")] = true
	}
	if len(viaWire) != 2 {
		t.Errorf("through connect reached %v, want both demo instances", viaWire)
	}

	// The dashboard on the edge's admin port shows the demo service and,
	// soon, the scheduled probe's RTT.
	until := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("http://" + s.addrs["edge"]["admin"] + "/dashboard/api/state")
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Services []struct {
				Name      string
				Instances []struct{ ID, Health string }
			}
			Probes []struct {
				Name  string
				RTTms float64 `json:"rtt_ms"`
			}
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		demo, probe := 0, false
		for _, sv := range st.Services {
			if sv.Name == demoService {
				demo = len(sv.Instances)
			}
		}
		for _, p := range st.Probes {
			probe = probe || (p.Name == "demo-http" && p.RTTms > 0)
		}
		if demo == 2 && probe {
			break
		}
		if time.Now().After(until) {
			t.Fatalf("dashboard state: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}

	cancel()
	if c := <-connCode; c != 0 {
		t.Errorf("connect exited %d: %s", c, cerr.String())
	}
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("dev exited %d after Ctrl-C:\n%s", c, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not stop within 30s of Ctrl-C")
	}
}
