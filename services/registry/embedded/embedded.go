// Package embedded is the registry's default store: a bbolt file in a data
// directory, so registrations survive a restart, with the catalog held in
// memory for reads and watches.
//
// Every write is one bbolt transaction that also bumps a persisted catalog
// index, then publishes a new snapshot to watchers. TTL checks are enforced
// by a reaper goroutine: an instance whose TTL passes without a Heartbeat
// (or SetHealth) turns CRITICAL. Heartbeat times are not persisted: after a
// restart every TTL instance gets a full TTL from the moment the store
// opens.
package embedded

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
)

// FileName is the store's file inside the data directory.
const FileName = "registry.db"

var (
	bucketInstances = []byte("instances")
	bucketRecords   = []byte("records")
	bucketConfig    = []byte("config")
	bucketMeta      = []byte("meta")
	keyIndex        = []byte("index")
)

// Store is the embedded store.
type Store struct {
	db  *bolt.DB
	hub *catalog.Hub
	now func() time.Time

	mu        sync.Mutex // serialises writes, so index order is publish order
	deadlines map[string]time.Time
	closed    bool

	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// Open opens (or creates) the store in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded store: %w", err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("embedded store %s: %w", path, err)
	}
	s := &Store{db: db, now: time.Now, deadlines: map[string]time.Time{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	var (
		index uint64
		insts []*registryv1.Instance
		recs  []*registryv1.Record
		cfg   = map[string][]*registryv1.ConfigEntry{}
	)
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketInstances, bucketRecords, bucketConfig, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if v := tx.Bucket(bucketMeta).Get(keyIndex); len(v) == 8 {
			index = binary.BigEndian.Uint64(v)
		}
		if err := tx.Bucket(bucketInstances).ForEach(func(_, v []byte) error {
			in := &registryv1.Instance{}
			if err := proto.Unmarshal(v, in); err != nil {
				return err
			}
			insts = append(insts, in)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketRecords).ForEach(func(_, v []byte) error {
			r := &registryv1.Record{}
			if err := proto.Unmarshal(v, r); err != nil {
				return err
			}
			recs = append(recs, r)
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketConfig).ForEach(func(_, v []byte) error {
			e := &registryv1.ConfigEntry{}
			if err := proto.Unmarshal(v, e); err != nil {
				return err
			}
			cfg[e.Kind] = append(cfg[e.Kind], e)
			return nil
		})
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("embedded store %s: load: %w", path, err)
	}
	byService := map[string][]*registryv1.Instance{}
	start := s.now()
	for _, in := range insts {
		byService[in.Service] = append(byService[in.Service], in)
		if ttl := catalog.TTL(in); ttl > 0 && in.Health != registryv1.HealthStatus_HEALTH_STATUS_CRITICAL {
			s.deadlines[key(in.Service, in.Id)] = start.Add(ttl)
		}
	}
	// Load without bumping the index: the hub starts at the stored index.
	s.hub = catalog.NewHub(max(index, 1))
	s.hub.Update(func(u *catalog.Update) {
		for name, list := range byService {
			u.SetService(name, list)
		}
		u.SetRecords(recs)
		for kind, list := range cfg {
			u.SetConfig(kind, list)
		}
		u.AtLeast(max(index, 1))
	})
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.reap(ctx)
	return s, nil
}

func key(service, id string) string { return service + "/" + id }

// Snapshot returns the current catalog.
func (s *Store) Snapshot() *catalog.Snapshot { return s.hub.Snapshot() }

// Ping always succeeds while the store is open.
func (s *Store) Ping(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("embedded store closed: %w", catalog.ErrUnavailable)
	}
	return nil
}

// Close stops the reaper and closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	<-s.done
	return s.db.Close()
}

// commit writes one change: db changes the file, pub publishes the same
// change to watchers. Both happen under s.mu (held by the caller), so the
// persisted index and the published index agree.
func (s *Store) commit(db func(tx *bolt.Tx) error, pub func(u *catalog.Update)) error {
	if s.closed {
		return fmt.Errorf("embedded store closed: %w", catalog.ErrUnavailable)
	}
	next := s.hub.Snapshot().Index() + 1
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := db(tx); err != nil {
			return err
		}
		var buf [8]byte
		binary.BigEndian.PutUint64(buf[:], next)
		return tx.Bucket(bucketMeta).Put(keyIndex, buf[:])
	})
	if err != nil {
		return fmt.Errorf("embedded store write: %w", err)
	}
	s.hub.Update(func(u *catalog.Update) {
		pub(u)
		u.AtLeast(next)
	})
	return nil
}

func putInstance(tx *bolt.Tx, in *registryv1.Instance) error {
	v, err := proto.Marshal(in)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketInstances).Put([]byte(key(in.Service, in.Id)), v)
}

// Register adds or replaces an instance.
func (s *Store) Register(_ context.Context, in *registryv1.Instance) (*registryv1.Instance, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.commit(func(tx *bolt.Tx) error { return putInstance(tx, in) },
		func(u *catalog.Update) { u.PutInstance(in) })
	if err != nil {
		return nil, err
	}
	k := key(in.Service, in.Id)
	delete(s.deadlines, k)
	if ttl := catalog.TTL(in); ttl > 0 {
		s.setDeadline(k, s.now().Add(ttl))
	}
	return in, nil
}

func (s *Store) setDeadline(k string, t time.Time) {
	s.deadlines[k] = t
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Deregister removes an instance.
func (s *Store) Deregister(_ context.Context, service, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hub.Snapshot().Instance(service, id) == nil {
		return fmt.Errorf("instance %s/%s: %w", service, id, catalog.ErrNotFound)
	}
	delete(s.deadlines, key(service, id))
	return s.commit(func(tx *bolt.Tx) error { return tx.Bucket(bucketInstances).Delete([]byte(key(service, id))) },
		func(u *catalog.Update) { u.DeleteInstance(service, id) })
}

// setHealth changes an instance's status and output (under s.mu).
func (s *Store) setHealth(service, id string, st registryv1.HealthStatus, output string) error {
	cur := s.hub.Snapshot().Instance(service, id)
	if cur == nil {
		return fmt.Errorf("instance %s/%s: %w", service, id, catalog.ErrNotFound)
	}
	if cur.Health == st && cur.HealthOutput == output {
		return nil
	}
	next := proto.Clone(cur).(*registryv1.Instance)
	next.Health, next.HealthOutput = st, output
	return s.commit(func(tx *bolt.Tx) error { return putInstance(tx, next) },
		func(u *catalog.Update) { u.PutInstance(next) })
}

// Heartbeat marks a TTL instance alive and PASSING.
func (s *Store) Heartbeat(_ context.Context, service, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.hub.Snapshot().Instance(service, id)
	if cur == nil {
		return fmt.Errorf("instance %s/%s: %w", service, id, catalog.ErrNotFound)
	}
	ttl := catalog.TTL(cur)
	if ttl == 0 {
		return fmt.Errorf("instance %s/%s has no ttl check: %w", service, id, catalog.ErrFailedPrecondition)
	}
	if err := s.setHealth(service, id, registryv1.HealthStatus_HEALTH_STATUS_PASSING, catalog.HeartbeatOutput); err != nil {
		return err
	}
	s.setDeadline(key(service, id), s.now().Add(ttl))
	return nil
}

// SetHealth records a check result; for a TTL instance it also restarts
// the TTL.
func (s *Store) SetHealth(_ context.Context, service, id string, st registryv1.HealthStatus, output string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.setHealth(service, id, st, output); err != nil {
		return err
	}
	if ttl := catalog.TTL(s.hub.Snapshot().Instance(service, id)); ttl > 0 {
		s.setDeadline(key(service, id), s.now().Add(ttl))
	}
	return nil
}

// reap turns TTL instances CRITICAL once their deadline passes.
func (s *Store) reap(ctx context.Context) {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		now := s.now()
		next := now.Add(time.Hour)
		for k, d := range s.deadlines {
			if !d.After(now) {
				delete(s.deadlines, k)
				service, id, _ := cut(k)
				if err := s.setHealth(service, id, registryv1.HealthStatus_HEALTH_STATUS_CRITICAL, catalog.TTLExpiredOutput); err != nil && !errors.Is(err, catalog.ErrNotFound) {
					s.deadlines[k] = now.Add(time.Second) // retry a failed write
				}
				continue
			}
			if d.Before(next) {
				next = d
			}
		}
		s.mu.Unlock()
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-s.wake:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
	}
}

func cut(k string) (string, string, bool) {
	for i := 0; i < len(k); i++ {
		if k[i] == '/' {
			return k[:i], k[i+1:], true
		}
	}
	return k, "", false
}

// PutRecord stores a record.
func (s *Store) PutRecord(_ context.Context, r *registryv1.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, recs := s.hub.Snapshot().Records()
	next := make([]*registryv1.Record, 0, len(recs)+1)
	for _, c := range recs {
		if catalog.CompareRecords(c, r) != 0 {
			next = append(next, c)
		} else if proto.Equal(c, r) {
			return nil
		}
	}
	next = append(next, r)
	v, err := proto.Marshal(r)
	if err != nil {
		return err
	}
	return s.commit(func(tx *bolt.Tx) error { return tx.Bucket(bucketRecords).Put([]byte(catalog.RecordKey(r)), v) },
		func(u *catalog.Update) { u.SetRecords(next) })
}

// DeleteRecord removes the records of name and type (with data, if set).
func (s *Store) DeleteRecord(_ context.Context, name, typ, data string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, recs := s.hub.Snapshot().Records()
	var keep []*registryv1.Record
	var gone [][]byte
	for _, c := range recs {
		if c.Name == name && c.Type == typ && (data == "" || c.Data == data) {
			gone = append(gone, []byte(catalog.RecordKey(c)))
			continue
		}
		keep = append(keep, c)
	}
	if len(gone) == 0 {
		return 0, nil
	}
	err := s.commit(func(tx *bolt.Tx) error {
		for _, k := range gone {
			if err := tx.Bucket(bucketRecords).Delete(k); err != nil {
				return err
			}
		}
		return nil
	}, func(u *catalog.Update) { u.SetRecords(keep) })
	if err != nil {
		return 0, err
	}
	return len(gone), nil
}

// PutConfig stores a configuration entry.
func (s *Store) PutConfig(_ context.Context, e *registryv1.ConfigEntry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := proto.Marshal(e)
	if err != nil {
		return err
	}
	return s.commit(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketConfig).Put([]byte(catalog.ConfigKey(e.Kind, e.Key)), v)
	},
		func(u *catalog.Update) { u.PutConfig(e) })
}

// DeleteConfig removes a configuration entry.
func (s *Store) DeleteConfig(_ context.Context, kind, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hub.Snapshot().ConfigEntry(kind, key) == nil {
		return fmt.Errorf("%s %q: %w", kind, key, catalog.ErrNotFound)
	}
	return s.commit(func(tx *bolt.Tx) error { return tx.Bucket(bucketConfig).Delete([]byte(catalog.ConfigKey(kind, key))) },
		func(u *catalog.Update) { u.DeleteConfig(kind, key) })
}
