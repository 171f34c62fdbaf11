package resolver

import (
	"context"
	"time"

	"github.com/switchboard-net/switchboard/pkg/watch"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// follow runs one registry watch stream after another until ctx ends,
// logging each reconnect.
func follow(ctx context.Context, s *server, what string, run func(ctx context.Context, delivered func()) error) error {
	watch.Follow(ctx, run, func(err error, wait time.Duration) {
		s.log.Debug("registry watch ended; reconnecting", "watch", what, "err", err, "in", wait)
	}, watch.WithLogger(s.log, "registry "+what))
	return ctx.Err()
}

// watchServices follows the registry's Watch of every service and keeps
// the service zone in step with the healthy instances.
func (s *server) watchServices(ctx context.Context, reg registryv1.RegistryClient) error {
	return follow(ctx, s, "services", watch.Instances(reg.Watch, &registryv1.WatchRequest{}, func(resp *registryv1.WatchResponse) {
		if resp.GetStale() {
			s.log.Warn("registry snapshot is stale (its backend is unreachable)", "index", resp.GetIndex())
		}
		s.setInstances(resp.GetIndex(), resp.GetInstances())
	}))
}

// watchRecords follows the registry's WatchRecords: the managed records.
func (s *server) watchRecords(ctx context.Context, reg registryv1.RegistryClient) error {
	return follow(ctx, s, "records", watch.Stream(func(ctx context.Context) (watch.Receiver[*registryv1.WatchRecordsResponse], error) {
		return reg.WatchRecords(ctx, &registryv1.WatchRecordsRequest{})
	}, func(resp *registryv1.WatchRecordsResponse) {
		s.setManaged(resp.GetIndex(), resp.GetRecords())
	}))
}
