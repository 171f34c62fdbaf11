// Package grpcbalance plugs pkg/balance into grpc-go, so Go gRPC clients
// pick with exactly the policies the edge and the balancer use.
//
// Every built-in policy is registered with grpc-go under Name(policy)
// ("switchboard_p2c", ...) with balance.DefaultConfig; choose one with a
// service config:
//
//	grpc.NewClient(target, grpc.WithDefaultServiceConfig(
//		`{"loadBalancingConfig":[{"switchboard_p2c":{}}]}`))
//
// Register adds a name with a configuration of your own (for example
// consistent_hash keyed by a metadata header). Each ClientConn gets its
// own balance.Set, fed with the ready subchannels; RPC outcomes and
// latencies go back to it through PickResult.Done.
package grpcbalance

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchboard-net/switchboard/pkg/balance"
)

// Prefix is put before a policy's name to make its gRPC balancer name.
const Prefix = "switchboard_"

// Name returns the gRPC balancer name of a pkg/balance policy.
func Name(policy string) string { return Prefix + policy }

func init() {
	for _, p := range balance.Names() {
		cfg := balance.DefaultConfig()
		cfg.Policy = p
		if err := Register(Name(p), cfg); err != nil {
			panic(err)
		}
	}
}

// Register registers a gRPC balancer called name that balances with cfg.
// For consistent_hash, cfg.HashOn must be "header:<Name>": the key is that
// gRPC metadata entry of the outgoing context (lower-cased); without it,
// or with client_ip (meaningless on a client), calls are spread at random.
// Like balancer.Register, call it from an init function.
func Register(name string, cfg balance.Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("grpcbalance: %s: %w", name, err)
	}
	b := &builder{name: name, cfg: cfg}
	if cfg.HashOn != "" {
		h, _ := balance.ParseHashOn(cfg.HashOn) // checked by Validate
		if h.Source == balance.HashHeader {
			b.header = strings.ToLower(h.Name)
		}
	}
	balancer.Register(b)
	return nil
}

type builder struct {
	name   string
	cfg    balance.Config
	header string // metadata key for consistent_hash, lower case
}

var _ balancer.Builder = (*builder)(nil)

func (b *builder) Name() string { return b.name }

// Build gives each ClientConn its own Set inside grpc-go's base balancer,
// which manages the subchannels and hands us the ready ones.
func (b *builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	set, err := balance.New(b.cfg)
	if err != nil { // validated by Register; cannot happen
		panic(err)
	}
	pb := &pickerBuilder{set: set, header: b.header}
	return base.NewBalancerBuilder(b.name, pb, base.Config{HealthCheck: true}).Build(cc, opts)
}

type pickerBuilder struct {
	set    *balance.Set
	header string
	// weigh, when set, fills in an endpoint's weight and health before
	// the update (StreamPolicy takes them from the balancer's stream).
	weigh func(*balance.Endpoint)
}

var _ base.PickerBuilder = (*pickerBuilder)(nil)

// Build is called by the base balancer, serially, whenever the set of
// ready subchannels changes.
func (pb *pickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	if len(info.ReadySCs) == 0 {
		return base.NewErrPicker(balancer.ErrNoSubConnAvailable)
	}
	byID := make(map[string]balancer.SubConn, len(info.ReadySCs))
	for sc, sci := range info.ReadySCs {
		id := sci.Address.Addr
		if sci.Address.ServerName != "" {
			id += "/" + sci.Address.ServerName
		}
		if _, dup := byID[id]; !dup {
			byID[id] = sc
		}
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	eps := make([]balance.Endpoint, len(ids))
	for i, id := range ids {
		addr, _, _ := strings.Cut(id, "/")
		eps[i] = balance.Endpoint{ID: id, Addr: addr}
		if pb.weigh != nil {
			pb.weigh(&eps[i])
		}
	}
	if err := pb.set.Update(eps); err != nil {
		return base.NewErrPicker(status.Error(codes.Internal, err.Error()))
	}
	p := &picker{set: pb.set, header: pb.header, subconns: make(map[*balance.EndpointState]balancer.SubConn, len(eps))}
	for _, es := range pb.set.Endpoints() {
		p.subconns[es] = byID[es.ID()]
	}
	return p
}

type picker struct {
	set      *balance.Set
	header   string
	subconns map[*balance.EndpointState]balancer.SubConn
}

var _ balancer.Picker = (*picker)(nil)

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	var pi balance.PickInfo
	if p.header != "" {
		if md, ok := metadata.FromOutgoingContext(info.Ctx); ok {
			if v := md[p.header]; len(v) > 0 {
				pi = balance.PickInfo{Hash: balance.HashString(v[0]), HasHash: true}
			}
		}
	}
	sel, err := p.set.Pick(pi)
	switch {
	case errors.Is(err, balance.ErrNoHealthy):
		// Everything is ejected or broken and panic mode is off: fail the
		// call rather than wait for a new picker.
		return balancer.PickResult{}, status.Error(codes.Unavailable, err.Error())
	case err != nil:
		return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
	}
	sc, ok := p.subconns[sel.Endpoint]
	if !ok { // a newer picker has replaced this one
		sel.Done(balance.Ignore, 0)
		return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
	}
	start := time.Now()
	return balancer.PickResult{SubConn: sc, Done: func(di balancer.DoneInfo) {
		sel.Done(Outcome(di.Err), time.Since(start))
	}}, nil
}

// Outcome classifies an RPC's error for the balancer: no error or an
// application error (the endpoint answered) is a Success; Unavailable,
// DeadlineExceeded and ResourceExhausted are the endpoint's Failure;
// Canceled says nothing about the endpoint (Ignore).
func Outcome(err error) balance.Outcome {
	if err == nil {
		return balance.Success
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return balance.Failure
	case codes.Canceled:
		return balance.Ignore
	}
	return balance.Success
}
