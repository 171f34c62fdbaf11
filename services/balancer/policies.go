package balancer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-net/switchboard/pkg/balance"
	"github.com/switchboard-net/switchboard/pkg/watch"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// policyKind is the registry's configuration kind of balancer policies.
const policyKind = "policy"

// policyWriteTimeout bounds a SetPolicy's write to the registry.
const policyWriteTimeout = 5 * time.Second

// policyRegistry is the part of the registry that keeps the policies.
type policyRegistry interface {
	PutConfig(ctx context.Context, in *registryv1.PutConfigRequest, opts ...grpc.CallOption) (*registryv1.PutConfigResponse, error)
	WatchConfig(ctx context.Context, in *registryv1.WatchConfigRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[registryv1.WatchConfigResponse], error)
}

// errRegistry marks a policy write the registry did not take.
var errRegistry = errors.New("registry")

// setPolicy validates a service's policy and stores it in the registry,
// where every balancer replica's policy watch picks it up. It returns once
// this balancer's own watch has brought it back (so a later, older message
// of the watch cannot undo it), or applies it itself when the watch is
// slower than the write's deadline.
func (b *Balancer) setPolicy(ctx context.Context, name string, p *balancerv1.Policy) (*balancerv1.Policy, error) {
	cfg, err := toConfig(p)
	if err != nil {
		return nil, err
	}
	stored := fromConfig(cfg)
	if b.reg == nil {
		return nil, fmt.Errorf("%w: no registry to store the policy in", errRegistry)
	}
	v, err := proto.Marshal(stored)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, policyWriteTimeout)
	defer cancel()
	if _, err := b.reg.PutConfig(ctx, &registryv1.PutConfigRequest{Entry: &registryv1.ConfigEntry{Kind: policyKind, Key: name, Value: v}}); err != nil {
		return nil, fmt.Errorf("%w: %w", errRegistry, err)
	}
	for {
		b.mu.RLock()
		done, wake := proto.Equal(b.polApplied[name], stored), b.changed
		b.mu.RUnlock()
		if done {
			return stored, nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			b.mu.Lock()
			if b.polApplied == nil {
				b.polApplied = map[string]*balancerv1.Policy{}
			}
			b.polApplied[name] = stored
			b.applyPolicyLocked(name, stored)
			b.notifyLocked()
			b.mu.Unlock()
			return stored, nil
		}
	}
}

// followPolicies applies the registry's policy set until ctx ends,
// reconnecting with back-off. Until the first set arrives, and while the
// watch is lost, the policies in force are the last known ones (at start,
// the local cache) and GetPolicy says they are stale.
func (b *Balancer) followPolicies(ctx context.Context) error {
	watch.Follow(ctx, watch.Stream(func(ctx context.Context) (watch.Receiver[*registryv1.WatchConfigResponse], error) {
		return b.reg.WatchConfig(ctx, &registryv1.WatchConfigRequest{Kind: policyKind})
	}, b.applyPolicies), func(error, time.Duration) {
		b.mu.Lock()
		b.polStale = true
		b.mu.Unlock()
	}, watch.WithLogger(b.log, "registry policies"))
	return nil
}

// applyPolicies installs the registry's policy set: each service's policy,
// the default for a service whose policy was removed. An entry that does
// not decode or validate keeps the service on the default and is logged.
func (b *Balancer) applyPolicies(resp *registryv1.WatchConfigResponse) {
	set := make(map[string]*balancerv1.Policy, len(resp.GetEntries()))
	for _, e := range resp.GetEntries() {
		if validService("service", e.GetKey()) != nil {
			continue
		}
		p := &balancerv1.Policy{}
		if err := proto.Unmarshal(e.GetValue(), p); err != nil {
			b.log.Warn("registry policy does not decode; using the default", "service", e.GetKey(), "err", err)
			continue
		}
		cfg, err := toConfig(p)
		if err != nil {
			b.log.Warn("registry policy is invalid; using the default", "service", e.GetKey(), "err", err)
			continue
		}
		set[e.GetKey()] = fromConfig(cfg)
	}
	if err := b.policies.replace(set); err != nil {
		b.log.Warn("policy cache not written (the policies are in force; only a start-up without the registry would miss them)", "err", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for name := range b.polApplied {
		if set[name] == nil {
			b.applyPolicyLocked(name, nil)
		}
	}
	for name, p := range set {
		b.applyPolicyLocked(name, p)
	}
	b.polApplied = set
	b.polSynced = true
	b.polStale = resp.GetStale()
	b.notifyLocked()
}

// applyPolicyLocked puts p (nil: the default) in force for a service that
// has state; a service without state takes its policy when it appears.
// b.mu is held for writing.
func (b *Balancer) applyPolicyLocked(name string, p *balancerv1.Policy) {
	s := b.services[name]
	if s == nil {
		return
	}
	cfg := balance.DefaultConfig()
	if p != nil {
		c, err := toConfig(p)
		if err != nil {
			return
		}
		cfg = c
	}
	if proto.Equal(fromConfig(s.set.Config()), fromConfig(cfg)) {
		return
	}
	if err := s.set.SetConfig(cfg); err != nil {
		b.log.Warn("policy not applied", "service", name, "err", err)
		return
	}
	s.mu.Lock()
	s.version++
	s.shape = shapeOf(s.set)
	s.mu.Unlock()
}

// storedPolicy is a service's policy as last known: the registry's set
// once it arrived, else the start-up cache.
func (b *Balancer) storedPolicy(name string) *balancerv1.Policy {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.storedPolicyLocked(name)
}

// storedPolicyLocked is storedPolicy with b.mu held.
func (b *Balancer) storedPolicyLocked(name string) *balancerv1.Policy {
	if b.polSynced {
		return b.polApplied[name]
	}
	return b.policies.get(name)
}

// policiesStale reports whether the policies in force may be out of date:
// the registry's set has not arrived or its watch is lost.
func (b *Balancer) policiesStale() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return !b.polSynced || b.polStale
}
