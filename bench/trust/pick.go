package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/balancer"
	"github.com/switchboard-net/switchboard/services/registry"
)

// stack is a registry (embedded store) and a balancer following it, and a
// client connection to the balancer.
type stack struct {
	reg, bal *proc
	cc       *grpc.ClientConn
	pick     balancerv1.BalancerClient
}

// startStack starts the stack in plaintext, or (secure) with mTLS and the
// ACL on both services, the balancer calling the registry with its token.
func startStack(e *env, name string, secure bool) (*stack, error) {
	dir := filepath.Join(e.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var regArgs, balArgs []string
	var tc *tls.Config
	clientTok, deployTok := "", ""
	if secure {
		var err error
		if regArgs, err = e.secure(name + "-registry"); err != nil {
			return nil, err
		}
		if balArgs, err = e.secure(name + "-balancer"); err != nil {
			return nil, err
		}
		balArgs = append(balArgs, "--token="+e.balancerTok)
		tc, clientTok, deployTok = e.clientTLS, e.clientTok, e.deployerTok
	}
	s := &stack{}
	var err error
	s.reg, err = startService(registry.Spec(), append(regArgs, "--data-dir="+filepath.Join(dir, "registry"))...)
	if err != nil {
		return nil, err
	}
	s.bal, err = startService(balancer.Spec(), append(balArgs, "--registry-addr="+s.reg.addrs["grpc"], "--data-dir="+filepath.Join(dir, "balancer"))...)
	if err != nil {
		_ = s.reg.stop()
		return nil, err
	}
	if err := s.setUp(tc, clientTok, deployTok, secure); err != nil {
		s.stop()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return s, nil
}

// setUp registers web-1..3, connects the client and waits (15 s at most)
// until Pick answers. A secured stack must refuse an anonymous Pick.
func (s *stack) setUp(tc *tls.Config, clientTok, deployTok string, secure bool) error {
	rcc, err := dial(s.reg.addrs["grpc"], tc, deployTok)
	if err != nil {
		return err
	}
	defer rcc.Close()
	rc := registryv1.NewRegistryClient(rcc)
	for i := 1; i <= 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		_, err := rc.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
			Service: "web", Id: fmt.Sprintf("web-%d", i), Address: "127.0.0.1", Port: uint32(8080 + i)}})
		cancel()
		if err != nil {
			return fmt.Errorf("register web-%d: %w", i, err)
		}
	}
	if s.cc, err = dial(s.bal.addrs["grpc"], tc, clientTok); err != nil {
		return err
	}
	s.pick = balancerv1.NewBalancerClient(s.cc)
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		_, err := s.pick.Pick(ctx, &balancerv1.PickRequest{Service: "web"})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pick web never succeeded: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if secure {
		if err := expectRefused(s.bal.addrs["grpc"], tc, func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := balancerv1.NewBalancerClient(cc).Pick(ctx, &balancerv1.PickRequest{Service: "web"})
			return err
		}); err != nil {
			return fmt.Errorf("anonymous pick: %w", err)
		}
	}
	return nil
}

func (s *stack) stop() {
	if s.cc != nil {
		_ = s.cc.Close()
	}
	if s.bal != nil {
		if err := s.bal.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "trust-bench:", err)
		}
	}
	if err := s.reg.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "trust-bench:", err)
	}
}

// expectRefused makes call without a token (over tc when set) and wants
// Unauthenticated or PermissionDenied: proof that the ACL is in force.
func expectRefused(addr string, tc *tls.Config, call func(context.Context, *grpc.ClientConn) error) error {
	cc, err := dial(addr, tc, "")
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	err = call(ctx, cc)
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied:
		return nil
	case codes.OK:
		return errors.New("was allowed: the ACL is not in force")
	}
	return fmt.Errorf("want Unauthenticated or PermissionDenied, got %w", err)
}

// figurePick is figure 1: Pick RPCs/s, mTLS + ACL vs plaintext.
func figurePick(e *env) error {
	plain, err := startStack(e, "pick-plain", false)
	if err != nil {
		return err
	}
	defer plain.stop()
	secure, err := startStack(e, "pick-secure", true)
	if err != nil {
		return err
	}
	defer secure.stop()
	stacks := []*stack{plain, secure}
	measure := func(s *stack, d time.Duration) (sample, error) {
		req := &balancerv1.PickRequest{Service: "web"}
		return load(*conc, d, func(ctx context.Context, _, _ int) error {
			_, err := s.pick.Pick(ctx, req)
			return err
		})
	}
	for _, s := range stacks { // warm-up, not reported
		if _, err := measure(s, min(time.Second, *duration)); err != nil {
			return fmt.Errorf("pick warm-up: %w", err)
		}
	}
	var results [][]sample
	var orders [][]int
	for r := range *rounds {
		row := make([]sample, len(stacks))
		ord := order(len(stacks), r)
		for _, i := range ord {
			s, err := measure(stacks[i], *duration)
			if err != nil {
				return fmt.Errorf("pick round %d: %w", r+1, err)
			}
			row[i] = s
			fmt.Fprintf(os.Stderr, "pick round %d setup %c: %.0f/s p99 %v (load %s)\n", r+1, 'A'+i, s.rate, s.p99, loadavg())
		}
		results = append(results, row)
		orders = append(orders, ord)
	}
	table(fmt.Sprintf("Figure 1: balancer Pick RPCs/s, %d callers on one connection, %v per measurement (3 instances of web)", *conc, *duration),
		"Pick/s", []string{"plaintext", "mTLS+ACL"}, results, orders)
	return nil
}
