package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"

	edgev1 "github.com/switchboard-net/switchboard/proto/switchboard/edge/v1"
	"github.com/switchboard-net/switchboard/services/edge"
)

// startBackend serves a fixed 13-byte body with keep-alive on loopback.
func startBackend() (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	body := []byte("hello, world\n")
	clen := strconv.Itoa(len(body))
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header()["Content-Type"] = []string{"text/plain"}
			w.Header()["Content-Length"] = []string{clen}
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
	}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// startEdge runs an edge with one static route to backend, its control
// plane in plaintext or (secure) behind mTLS and the ACL. The balancer,
// registry, prober, wire listener and runtime socket are off.
func startEdge(e *env, name, backend string, secure bool) (*proc, error) {
	dir := filepath.Join(e.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "routes:\n  - name: bench\n    addresses: [%q]\n", backend), 0o600); err != nil {
		return nil, err
	}
	args := []string{"--config=" + cfg, "--http-addr=127.0.0.1:0", "--wire-addr=", "--balancer-addr=",
		"--registry-addr=", "--prober-addr=", "--runtime-socket=", "--data-dir=" + filepath.Join(dir, "data")}
	var tc *tls.Config
	if secure {
		f, err := e.secure(name)
		if err != nil {
			return nil, err
		}
		args = append(args, f...)
		tc = e.clientTLS
	}
	p, err := startService(edge.Spec(), args...)
	if err != nil {
		return nil, err
	}
	if err := checkEdge(e, p, tc, secure); err != nil {
		_ = p.stop()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// checkEdge proves the setup: the control plane answers ListRoutes (with
// the client's token and certificate when secure), a secured one refuses
// an anonymous call, and the data plane answers 200.
func checkEdge(e *env, p *proc, tc *tls.Config, secure bool) error {
	listRoutes := func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := edgev1.NewEdgeClient(cc).ListRoutes(ctx, &edgev1.ListRoutesRequest{})
		return err
	}
	token := ""
	if secure {
		token = e.clientTok
		if err := expectRefused(p.addrs["grpc"], tc, listRoutes); err != nil {
			return fmt.Errorf("anonymous ListRoutes: %w", err)
		}
	}
	cc, err := dial(p.addrs["grpc"], tc, token)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := listRoutes(ctx, cc); err != nil {
		return fmt.Errorf("ListRoutes: %w", err)
	}
	return get(ctx, http.DefaultClient, "http://"+p.addrs["http"]+"/")
}

// get makes one request and wants 200.
func get(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// wrk measures addr with `wrk -t1 -c<conns> -d<d> --latency`.
func wrk(bin, addr string, d time.Duration) (sample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	secs := int(d.Round(time.Second) / time.Second)
	cpu0, err := cpuTime()
	if err != nil {
		return sample{}, err
	}
	out, err := exec.CommandContext(ctx, bin, "-t1", "-c"+strconv.Itoa(*wrkConns), "-d"+strconv.Itoa(secs)+"s", "--latency", "http://"+addr+"/").CombinedOutput()
	if err != nil {
		return sample{}, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	var s sample
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			s.rate, err = strconv.ParseFloat(f[1], 64)
		case len(f) == 2 && f[0] == "50%":
			s.p50, err = time.ParseDuration(f[1])
		case len(f) == 2 && f[0] == "99%":
			s.p99, err = time.ParseDuration(f[1])
		case len(f) > 0 && f[0] == "Non-2xx":
			err = errors.New("answers other than 2xx")
		case len(f) > 0 && f[0] == "Socket":
			fmt.Fprintf(os.Stderr, "wrk %s: %s\n", addr, sc.Text())
		}
		if err != nil {
			return sample{}, fmt.Errorf("wrk %q: %w\n%s", sc.Text(), err, out)
		}
	}
	if s.rate == 0 || s.p99 == 0 {
		return sample{}, fmt.Errorf("wrk: no rate or p99 in its output:\n%s", out)
	}
	// wrk's own CPU is not ours: this is the edge's and the backend's.
	cpu1, err := cpuTime()
	if err != nil {
		return sample{}, err
	}
	s.cpu = time.Duration(float64(cpu1-cpu0) / (s.rate * float64(secs)))
	return s, nil
}

// goLoad is the fallback without wrk: keep-alive GETs from *wrkConns callers.
func goLoad(addr string, d time.Duration) (sample, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: *wrkConns, MaxConnsPerHost: *wrkConns, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: callTimeout}
	url := "http://" + addr + "/"
	return load(*wrkConns, d, func(ctx context.Context, _, _ int) error { return get(ctx, c, url) })
}

// figureEdge is figure 3: the edge's HTTP req/s with and without mTLS and
// the ACL on its control plane.
func figureEdge(e *env) error {
	backend, stopBackend, err := startBackend()
	if err != nil {
		return err
	}
	defer stopBackend()
	plain, err := startEdge(e, "edge-plain", backend, false)
	if err != nil {
		return err
	}
	defer func() { _ = plain.stop() }()
	secure, err := startEdge(e, "edge-secure", backend, true)
	if err != nil {
		return err
	}
	defer func() { _ = secure.stop() }()

	tool := fmt.Sprintf("wrk -t1 -c%d -d%v", *wrkConns, wrkDur.Round(time.Second))
	measure := goLoad
	if bin, err := exec.LookPath("wrk"); err == nil {
		measure = func(addr string, d time.Duration) (sample, error) { return wrk(bin, addr, d) }
	} else {
		tool = fmt.Sprintf("a Go load loop (wrk not found), %d keep-alive connections, %v", *wrkConns, *wrkDur)
	}
	edges := []*proc{plain, secure}
	for _, p := range edges { // warm-up, not reported
		if _, err := measure(p.addrs["http"], time.Second); err != nil {
			return fmt.Errorf("edge warm-up: %w", err)
		}
	}
	var results [][]sample
	var orders [][]int
	for r := range *rounds {
		row := make([]sample, len(edges))
		ord := order(len(edges), r)
		for _, i := range ord {
			s, err := measure(edges[i].addrs["http"], *wrkDur)
			if err != nil {
				return fmt.Errorf("edge round %d: %w", r+1, err)
			}
			row[i] = s
			fmt.Fprintf(os.Stderr, "edge round %d setup %c: %.0f req/s p99 %v (load %s)\n", r+1, 'A'+i, s.rate, s.p99, loadavg())
		}
		results = append(results, row)
		orders = append(orders, ord)
	}
	table(fmt.Sprintf("Figure 3: edge HTTP req/s through a static route to an in-process backend, %s per measurement;\n"+
		"the edge's control plane (gRPC, admin) in plaintext vs behind mTLS + ACL; HTTP is plain in both", tool),
		"req/s", []string{"plain", "mTLS+ACL"}, results, orders)
	return nil
}
