package resolver

import (
	"context"
	"time"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// Reconnect backoff for the registry's watch streams.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// follow runs one watch stream after another until ctx ends: each stream
// is opened by open and read by recv until it fails, then, after a backoff
// that grows while streams fail without delivering anything, a new one
// starts from a full snapshot.
func follow(ctx context.Context, s *server, what string, run func(ctx context.Context, got func()) error) error {
	backoff := minBackoff
	for {
		err := run(ctx, func() { backoff = minBackoff })
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Warn("registry watch ended; reconnecting", "watch", what, "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// watchServices follows the registry's Watch of every service and keeps
// the service zone in step with the healthy instances.
func (s *server) watchServices(ctx context.Context, reg registryv1.RegistryClient) error {
	return follow(ctx, s, "services", func(ctx context.Context, got func()) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := reg.Watch(ctx, &registryv1.WatchRequest{})
		if err != nil {
			return err
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				return err
			}
			got()
			if resp.GetStale() {
				s.log.Warn("registry snapshot is stale (its backend is unreachable)", "index", resp.GetIndex())
			}
			s.setInstances(resp.GetIndex(), resp.GetInstances())
		}
	})
}

// watchRecords follows the registry's WatchRecords: the managed records.
func (s *server) watchRecords(ctx context.Context, reg registryv1.RegistryClient) error {
	return follow(ctx, s, "records", func(ctx context.Context, got func()) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := reg.WatchRecords(ctx, &registryv1.WatchRecordsRequest{})
		if err != nil {
			return err
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				return err
			}
			got()
			s.setManaged(resp.GetRecords())
		}
	})
}
