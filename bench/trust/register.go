package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/grpc"

	"github.com/switchboard-net/switchboard/pkg/access"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry"
)

// regSetup is one way of running the registry for figure 2.
type regSetup struct {
	name   string
	acl    bool // --acl-file, and the client sends the deployer's token
	mtls   bool // --tls-cert/--tls-key/--tls-ca, and the client presents its certificate
	tlsArg []string
}

// measureRegister starts a fresh registry (empty embedded store) for one
// measurement, so every setup starts from the same empty store, and counts
// registrations of distinct instances for the duration.
func measureRegister(e *env, s regSetup, round int) (sample, error) {
	dir, err := os.MkdirTemp(e.dir, "register-")
	if err != nil {
		return sample{}, err
	}
	defer os.RemoveAll(dir)
	args := []string{"--data-dir=" + filepath.Join(dir, "data")}
	var tc *tls.Config
	token := ""
	if s.mtls {
		args = append(args, s.tlsArg...)
		tc = e.clientTLS
	}
	if s.acl {
		args = append(args, "--acl-file="+e.aclFile)
		token = e.deployerTok
	}
	p, err := startService(registry.Spec(), args...)
	if err != nil {
		return sample{}, err
	}
	defer func() {
		if err := p.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "trust-bench:", err)
		}
	}()
	addr := p.addrs["grpc"]
	if s.acl {
		if err := expectRefused(addr, tc, func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := registryv1.NewRegistryClient(cc).Register(ctx, instance(round, -1, 0))
			return err
		}); err != nil {
			return sample{}, fmt.Errorf("%s: anonymous register: %w", s.name, err)
		}
	}
	cc, err := dial(addr, tc, token)
	if err != nil {
		return sample{}, err
	}
	defer cc.Close()
	c := registryv1.NewRegistryClient(cc)
	// One call first, so the connection (and its handshake) is up.
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	_, err = c.Register(ctx, instance(round, -2, 0))
	cancel()
	if err != nil {
		return sample{}, fmt.Errorf("%s: first register: %w", s.name, err)
	}
	return load(*conc, *duration, func(ctx context.Context, w, i int) error {
		_, err := c.Register(ctx, instance(round, w, i))
		return err
	})
}

// regServices is how many services the registrations are spread over. A
// registration copies its service's instance list (catalog.Update), so one
// service growing by thousands would make a call's cost depend on how many
// calls came before it, and the faster setup would pay more per call.
const regServices = 64

// instance is a registration with an id distinct per round, caller and call.
func instance(round, worker, i int) *registryv1.RegisterRequest {
	id := "r" + strconv.Itoa(round) + "-w" + strconv.Itoa(worker) + "-" + strconv.Itoa(i)
	svc := "tput-" + strconv.Itoa((i*(*conc)+worker+regServices)%regServices)
	return &registryv1.RegisterRequest{Instance: &registryv1.Instance{
		Service: svc, Id: id, Address: "127.0.0.1", Port: uint32(1000 + i%50000), Tags: []string{"bench"}}}
}

// aclChecks is how many checks aclCost times.
const aclChecks = 200_000

// aclCost times what the ACL adds to a call in the interceptor: the
// caller's identity from its bearer token (SHA-256 and a map lookup) and
// the check of the permission a Register needs. Without an ACL the
// interceptor makes an open caller instead, whose check returns at once.
func aclCost(e *env) (time.Duration, error) {
	src, err := access.Load(e.aclFile)
	if err != nil {
		return 0, err
	}
	acl := src.ACL()
	need := access.Service("tput-7", access.Write)
	denied := 0
	start := time.Now()
	for range aclChecks {
		c, err := acl.Identify(e.deployerTok, nil)
		if err != nil {
			return 0, err
		}
		if !c.Allows(need) {
			denied++
		}
	}
	took := time.Since(start)
	if denied > 0 {
		return 0, fmt.Errorf("the deployer token was denied %s", need)
	}
	return took / aclChecks, nil
}

// figureRegister is figure 2: registrations/s on the embedded store
// without an ACL, with one (both plaintext: only the ACL differs), and with
// one over mTLS.
func figureRegister(e *env) error {
	tlsArg, err := e.tlsFlags("register-registry")
	if err != nil {
		return err
	}
	setups := []regSetup{
		{name: "no ACL"},
		{name: "ACL", acl: true},
		{name: "mTLS+ACL", acl: true, mtls: true, tlsArg: tlsArg},
	}
	var results [][]sample
	var orders [][]int
	var checks []time.Duration
	for r := range *rounds {
		d, err := aclCost(e)
		if err != nil {
			return err
		}
		checks = append(checks, d)
		row := make([]sample, len(setups))
		ord := order(len(setups), r)
		for _, i := range ord {
			s, err := measureRegister(e, setups[i], r+1)
			if err != nil {
				return fmt.Errorf("register round %d: %w", r+1, err)
			}
			row[i] = s
			fmt.Fprintf(os.Stderr, "register round %d setup %c: %.0f/s p99 %v (load %s)\n", r+1, 'A'+i, s.rate, s.p99, loadavg())
		}
		results = append(results, row)
		orders = append(orders, ord)
	}
	names := make([]string, len(setups))
	for i, s := range setups {
		names[i] = s.name
	}
	table(fmt.Sprintf("Figure 2: registry Register calls/s, embedded store (a fresh one per measurement), distinct ids over %d services, %d callers, %v per measurement", regServices, *conc, *duration),
		"reg/s", names, results, orders)
	var base []time.Duration
	for _, row := range results {
		base = append(base, row[0].cpu)
	}
	fmt.Printf("ACL identify + permission check alone, %d times in a loop before each round: %s per call in rounds 1..%d,\n", aclChecks, fmtDurs(checks), len(checks))
	fmt.Printf("median %s = %.2f%% of the median CPU time of a Register without ACL (%s)\n",
		fmtDur(medianDur(checks)), 100*float64(medianDur(checks))/float64(medianDur(base)), fmtDur(medianDur(base)))
	return nil
}
