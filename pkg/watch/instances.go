package watch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// MaxPending bounds the messages of one snapshot or update that Catalog
// holds before its last part arrives; a stream that sends more is broken.
const MaxPending = 1 << 16

// Catalog assembles the messages of an incremental registry Watch (a
// snapshot, possibly in parts, then updates of added, changed and removed
// instances) into the whole set of watched instances. The zero value is
// ready; it is used by one goroutine.
type Catalog struct {
	services map[string][]*registryv1.Instance // sorted by id
	index    uint64
	stale    bool
	synced   bool // a whole snapshot has been applied

	pending []*registryv1.WatchResponse // parts of the update in progress
	all     []*registryv1.Instance      // cache of Instances; nil when out of date
}

// Apply takes the next message of the stream. It reports true when the
// message completes a snapshot or an update, which is then in effect. It
// fails when the stream breaks the protocol: an update before any
// snapshot, parts of two indexes mixed, or more than MaxPending parts.
func (c *Catalog) Apply(m *registryv1.WatchResponse) (bool, error) {
	if len(c.pending) > 0 && (m.GetIndex() != c.pending[0].GetIndex() || m.GetSnapshot()) {
		return false, fmt.Errorf("watch: part of index %d (snapshot %v) arrived before the last part of index %d", m.GetIndex(), m.GetSnapshot(), c.pending[0].GetIndex())
	}
	if len(c.pending) == 0 && !m.GetSnapshot() && !c.synced {
		return false, errors.New("watch: an update arrived before the first snapshot")
	}
	if len(c.pending) >= MaxPending {
		return false, fmt.Errorf("watch: more than %d parts of index %d", MaxPending, m.GetIndex())
	}
	c.pending = append(c.pending, m)
	if m.GetMore() {
		return false, nil
	}
	parts := c.pending
	c.pending = nil
	if parts[0].GetSnapshot() {
		c.services = map[string][]*registryv1.Instance{}
		c.synced = true
	}
	if c.services == nil {
		c.services = map[string][]*registryv1.Instance{}
	}
	changed := map[string]map[string]*registryv1.Instance{} // service -> id -> instance, nil: removed
	for _, p := range parts {
		for _, in := range p.GetInstances() {
			if changed[in.GetService()] == nil {
				changed[in.GetService()] = map[string]*registryv1.Instance{}
			}
			changed[in.GetService()][in.GetId()] = in
		}
		for _, r := range p.GetRemoved() {
			if changed[r.GetService()] == nil {
				changed[r.GetService()] = map[string]*registryv1.Instance{}
			}
			changed[r.GetService()][r.GetId()] = nil
		}
	}
	for name, byID := range changed {
		next := make([]*registryv1.Instance, 0, len(c.services[name])+len(byID))
		for _, in := range c.services[name] {
			if _, ok := byID[in.GetId()]; !ok {
				next = append(next, in)
			}
		}
		for _, in := range byID {
			if in != nil {
				next = append(next, in)
			}
		}
		slices.SortFunc(next, func(a, b *registryv1.Instance) int { return strings.Compare(a.GetId(), b.GetId()) })
		if len(next) == 0 {
			delete(c.services, name)
		} else {
			c.services[name] = next
		}
	}
	if len(changed) > 0 || parts[0].GetSnapshot() {
		c.all = nil
	}
	c.index = m.GetIndex()
	c.stale = m.GetStale()
	return true, nil
}

// Index is the index of the last snapshot or update applied.
func (c *Catalog) Index() uint64 { return c.index }

// Stale reports the staleness of the last snapshot or update applied.
func (c *Catalog) Stale() bool { return c.stale }

// Instances returns every instance held, sorted by service then id. The
// slice is shared until the next update that changes it; do not modify it.
func (c *Catalog) Instances() []*registryv1.Instance {
	if c.all != nil {
		return c.all
	}
	names := make([]string, 0, len(c.services))
	n := 0
	for name, list := range c.services {
		names = append(names, name)
		n += len(list)
	}
	slices.Sort(names)
	c.all = make([]*registryv1.Instance, 0, n)
	for _, name := range names {
		c.all = append(c.all, c.services[name]...)
	}
	return c.all
}

// WatchFunc opens a registry Watch, as registryv1.RegistryClient.Watch.
type WatchFunc func(ctx context.Context, in *registryv1.WatchRequest, opts ...grpc.CallOption) (registryv1.Registry_WatchClient, error)

// Instances makes a run function for Follow over an incremental registry
// Watch: it opens the watch of req with incremental set, assembles
// snapshots and updates with a Catalog, and hands apply each whole result
// as a snapshot (index, every watched instance sorted by service then id,
// staleness), so a consumer written for whole snapshots keeps working
// while the stream carries only the changes. Each stream starts from a
// fresh snapshot.
func Instances(open WatchFunc, req *registryv1.WatchRequest, apply func(*registryv1.WatchResponse)) func(ctx context.Context, delivered func()) error {
	return func(ctx context.Context, delivered func()) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		r := &registryv1.WatchRequest{Service: req.GetService(), IncludeUnhealthy: req.GetIncludeUnhealthy(), Incremental: true}
		st, err := open(ctx, r)
		if err != nil {
			return err
		}
		var c Catalog
		for {
			m, err := st.Recv()
			if err != nil {
				return err
			}
			done, err := c.Apply(m)
			if err != nil {
				return err
			}
			if done {
				delivered()
				apply(&registryv1.WatchResponse{Index: c.Index(), Instances: c.Instances(), Stale: c.Stale()})
			}
		}
	}
}
