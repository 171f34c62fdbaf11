package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	edgev1 "github.com/switchboard-net/switchboard/proto/switchboard/edge/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// registrar registers, reads back and follows the backends' health, all
// through the registry.
type registrar struct {
	r     *run
	cc    *grpc.ClientConn
	c     registryv1.RegistryClient
	runID string
	// Optional: the balancer's and the edge's view of the backend service.
	bc, ec   *grpc.ClientConn
	balancer balancerv1.BalancerClient
	edge     edgev1.EdgeClient
}

// bearer is the operator token on every call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

func newRegistrar(r *run) (*registrar, error) {
	read := func(name string) ([]byte, error) { return os.ReadFile(filepath.Join(*secretsDir, name)) }
	caPEM, err := read("ca.pem")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s: no certificate", filepath.Join(*secretsDir, "ca.pem"))
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(*secretsDir, "client.pem"), filepath.Join(*secretsDir, "client-key.pem"))
	if err != nil {
		return nil, err
	}
	tok, err := read("operator.token")
	if err != nil {
		return nil, err
	}
	// Every service's certificate names localhost.
	tc := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	// A client that reconnects within a second of the service coming
	// back (grpc-go's default back-off grows to two minutes, which would
	// measure the client, not the stack).
	cp := grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
		MinConnectTimeout: 2 * time.Second}
	dial := func(addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(credentials.NewTLS(tc)),
			grpc.WithPerRPCCredentials(bearer(strings.TrimSpace(string(tok)))),
			grpc.WithConnectParams(cp))
	}
	g := &registrar{r: r, runID: strconv.FormatInt(time.Now().Unix(), 36)}
	if g.cc, err = dial(*registryAddr); err != nil {
		return nil, err
	}
	g.c = registryv1.NewRegistryClient(g.cc)
	if *balancerAddr != "" {
		if g.bc, err = dial(*balancerAddr); err != nil {
			return nil, err
		}
		g.balancer = balancerv1.NewBalancerClient(g.bc)
	}
	if *edgeAPIAddr != "" {
		if g.ec, err = dial(*edgeAPIAddr); err != nil {
			return nil, err
		}
		g.edge = edgev1.NewEdgeClient(g.ec)
	}
	return g, nil
}

func (g *registrar) close() {
	for _, cc := range []*grpc.ClientConn{g.cc, g.bc, g.ec} {
		if cc != nil {
			cc.Close()
		}
	}
}

func (g *registrar) service(seq int) string {
	return fmt.Sprintf("%s-%02d", *regPrefix, seq%*regServices)
}

func (g *registrar) id(seq int) string { return g.runID + "-" + strconv.Itoa(seq) }

// seqOf parses an id of this run; -1 for any other.
func (g *registrar) seqOf(id string) int {
	s, ok := strings.CutPrefix(id, g.runID+"-")
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// registerLoop starts one Register every -register-every (each in its own
// goroutine, so a slow one does not delay the next).
func (g *registrar) registerLoop(ctx context.Context) {
	t := time.NewTicker(*regEvery)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for seq := 0; ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.r.mu.Lock()
		idx := len(g.r.regs)
		g.r.regs = append(g.r.regs, regRec{seq: seq, at: g.r.now()})
		g.r.mu.Unlock()
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(context.Background(), *regTimeout)
			defer cancel()
			_, err := g.c.Register(cctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
				Service: g.service(seq), Id: g.id(seq), Address: "192.0.2.1", Port: uint32(1000 + seq%60000),
				Tags: []string{"faults"}}})
			now := g.r.now()
			g.r.mu.Lock()
			q := &g.r.regs[idx]
			q.done, q.ok, q.lat = true, err == nil, now-q.at
			if err != nil {
				q.err = status.Code(err).String()
			}
			g.r.mu.Unlock()
		})
	}
}

// readAll reads every registration service once; nil when a read failed.
func (g *registrar) readAll(ctx context.Context) map[int]bool {
	present := map[int]bool{}
	for i := range *regServices {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		resp, err := g.c.GetService(cctx, &registryv1.GetServiceRequest{Service: g.service(i), IncludeUnhealthy: true})
		cancel()
		if err != nil {
			return nil
		}
		for _, in := range resp.GetInstances() {
			if s := g.seqOf(in.GetId()); s >= 0 {
				present[s] = true
			}
		}
	}
	return present
}

func (g *registrar) pollLoop(ctx context.Context) {
	t := time.NewTicker(*pollEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		at := g.r.now()
		if p := g.readAll(ctx); p != nil {
			g.r.mu.Lock()
			g.r.reads = append(g.r.reads, readRound{at: at, present: p})
			g.r.mu.Unlock()
		}
	}
}

// finalRead is the last read, retried for up to 30 s.
func (g *registrar) finalRead() *readRound {
	end := time.Now().Add(30 * time.Second)
	for {
		at := g.r.now()
		if p := g.readAll(context.Background()); p != nil {
			return &readRound{at: at, present: p}
		}
		if time.Now().After(end) {
			fmt.Fprintln(os.Stderr, "faults-driver: the final read failed for 30 s")
			return nil
		}
		time.Sleep(time.Second)
	}
}

// healthLoop follows the backend service: its instances and their health
// in the registry, and (when given their addresses) whether the balancer
// picks one and how many healthy backends the edge has.
func (g *registrar) healthLoop(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		at := g.r.now()
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := g.c.GetService(cctx, &registryv1.GetServiceRequest{Service: *backendSvc, IncludeUnhealthy: true})
		cancel()
		if err != nil {
			if !errors.Is(ctx.Err(), context.Canceled) {
				continue
			}
			return
		}
		obs := healthObs{at: at, health: map[string]registryv1.HealthStatus{}, picked: -1, edgeHealthy: -1}
		for _, in := range resp.GetInstances() {
			obs.health[in.GetId()] = in.GetHealth()
		}
		if g.balancer != nil {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := g.balancer.Pick(cctx, &balancerv1.PickRequest{Service: *backendSvc})
			cancel()
			obs.picked = 0
			if err == nil {
				obs.picked = 1
			}
		}
		if g.edge != nil {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			resp, err := g.edge.ListBackends(cctx, &edgev1.ListBackendsRequest{Service: *backendSvc})
			cancel()
			if err == nil {
				obs.edgeHealthy = 0
				for _, b := range resp.GetBackends() {
					if b.GetHealthy() && !b.GetDisabled() {
						obs.edgeHealthy++
						continue
					}
					why := "unhealthy"
					switch {
					case b.GetDisabled():
						why = "disabled"
					case b.GetEjected():
						why = "ejected"
					case b.GetBreaker() == "open":
						why = "breaker open"
					}
					obs.edgeOut = append(obs.edgeOut, b.GetId()+" "+why)
				}
			}
		}
		g.r.mu.Lock()
		g.r.health = append(g.r.health, obs)
		g.r.mu.Unlock()
	}
}
