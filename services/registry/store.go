package registry

import (
	"context"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
)

// Store is a catalog backend (embedded, consul, etcd). The server validates
// and normalises input (catalog.Prepare, catalog.PrepareRecord) before it
// calls a Store. Errors wrap catalog.ErrNotFound, catalog.ErrUnavailable or
// catalog.ErrFailedPrecondition.
//
// Reads come from Snapshot: the backend keeps it current from one watch of
// its own, and every gRPC watcher waits on the snapshot's Changed channel.
// A successful write is visible in Snapshot when the call returns.
type Store interface {
	// Register adds or replaces a prepared instance and returns it as stored.
	Register(ctx context.Context, inst *registryv1.Instance) (*registryv1.Instance, error)
	// Deregister removes an instance.
	Deregister(ctx context.Context, service, id string) error
	// Heartbeat marks an instance with a TTL check alive (and PASSING).
	Heartbeat(ctx context.Context, service, id string) error
	// SetHealth records a check result for an instance.
	SetHealth(ctx context.Context, service, id string, status registryv1.HealthStatus, output string) error
	// PutRecord stores a prepared record.
	PutRecord(ctx context.Context, rec *registryv1.Record) error
	// DeleteRecord removes the records of name and type (only the one with
	// data when data is not empty) and returns how many went.
	DeleteRecord(ctx context.Context, name, typ, data string) (int, error)
	// PutConfig stores a prepared configuration entry (catalog.PrepareConfig),
	// replacing the entry of the same kind and key.
	PutConfig(ctx context.Context, e *registryv1.ConfigEntry) error
	// DeleteConfig removes one configuration entry; it wraps
	// catalog.ErrNotFound when there is none.
	DeleteConfig(ctx context.Context, kind, key string) error
	// Snapshot returns the current catalog.
	Snapshot() *catalog.Snapshot
	// Ping reports whether the backend is reachable.
	Ping(ctx context.Context) error
	// Close stops the store's background work and releases the backend.
	Close() error
}
