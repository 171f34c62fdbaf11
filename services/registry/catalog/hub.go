package catalog

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// Snapshot is an immutable view of the whole catalog at one index. Its
// instances and records are shared and must not be modified. Changed is
// closed once a newer snapshot exists, so any number of watchers wait on
// one channel instead of one backend query each.
type Snapshot struct {
	index     uint64 // bumps on every change of content
	instIndex uint64 // last change of any instance
	recIndex  uint64 // last change of any record
	base      uint64 // index of services never seen by this process
	stale     bool
	services  map[string]*serviceSet
	records   []*registryv1.Record
	config    map[string]*configSet // by kind
	done      chan struct{}

	allOnce sync.Once
	all     []*registryv1.Instance
}

type serviceSet struct {
	index uint64
	insts []*registryv1.Instance // sorted by id; empty for a removed service
}

// Index is the catalog index: it increases on every change.
func (s *Snapshot) Index() uint64 { return s.index }

// Stale reports that the backend is unreachable and this is the last
// snapshot known.
func (s *Snapshot) Stale() bool { return s.stale }

// Changed is closed when a newer snapshot (or a change of staleness)
// exists.
func (s *Snapshot) Changed() <-chan struct{} { return s.done }

// Service returns a service's instances sorted by id and the index of its
// last change (for a service this process never saw, the index at start).
func (s *Snapshot) Service(name string) (uint64, []*registryv1.Instance) {
	if set, ok := s.services[name]; ok {
		return set.index, set.insts
	}
	return s.base, nil
}

// Instance returns one instance, or nil.
func (s *Snapshot) Instance(service, id string) *registryv1.Instance {
	set := s.services[service]
	if set == nil {
		return nil
	}
	i, ok := slices.BinarySearchFunc(set.insts, id, func(in *registryv1.Instance, id string) int { return strings.Compare(in.Id, id) })
	if !ok {
		return nil
	}
	return set.insts[i]
}

// All returns every instance, sorted by service then id, and the index of
// the last change of any instance.
func (s *Snapshot) All() (uint64, []*registryv1.Instance) {
	s.allOnce.Do(func() {
		for _, name := range s.ServiceNames() {
			s.all = append(s.all, s.services[name].insts...)
		}
	})
	return max(s.instIndex, s.base), s.all
}

// ServiceNames returns the names of services with instances, sorted.
func (s *Snapshot) ServiceNames() []string {
	names := make([]string, 0, len(s.services))
	for name, set := range s.services {
		if len(set.insts) > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// Records returns every record sorted by name, type and data, and the index
// of their last change.
func (s *Snapshot) Records() (uint64, []*registryv1.Record) {
	return max(s.recIndex, s.base), s.records
}

// Hub holds the current snapshot and publishes new ones. Backends feed it
// from their single watch of the backend; readers take Snapshot and wait on
// its Changed channel.
type Hub struct {
	mu  sync.Mutex
	cur *Snapshot
}

// NewHub returns a hub whose first snapshot has index base.
func NewHub(base uint64) *Hub {
	return &Hub{cur: &Snapshot{index: base, base: base, services: map[string]*serviceSet{}, done: make(chan struct{})}}
}

// Snapshot returns the current snapshot.
func (h *Hub) Snapshot() *Snapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur
}

// Wait blocks until pred holds for the current snapshot or ctx ends.
func (h *Hub) Wait(ctx context.Context, pred func(*Snapshot) bool) error {
	for {
		s := h.Snapshot()
		if pred(s) {
			return nil
		}
		select {
		case <-s.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Update applies fn's changes as one step and publishes a new snapshot if
// anything changed. It returns the index of the resulting snapshot.
func (h *Hub) Update(fn func(u *Update)) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	u := &Update{old: h.cur, stale: h.cur.stale}
	fn(u)
	if !u.instChanged && !u.recChanged && u.config == nil {
		if u.stale == h.cur.stale {
			return h.cur.index
		}
		c := h.cur
		h.publish(&Snapshot{
			index: c.index, instIndex: c.instIndex, recIndex: c.recIndex, base: c.base,
			stale: u.stale, services: c.services, records: c.records, config: c.config, done: make(chan struct{}),
		})
		return c.index
	}
	idx := max(h.cur.index+1, u.floor)
	for _, f := range u.setFloor {
		idx = max(idx, f)
	}
	if u.recChanged {
		idx = max(idx, u.recFloor)
	}
	for _, set := range u.config {
		idx = max(idx, set.index)
	}
	next := &Snapshot{
		index: idx, instIndex: h.cur.instIndex, recIndex: h.cur.recIndex, base: h.cur.base,
		stale: u.stale, services: h.cur.services, records: h.cur.records, config: h.cur.config, done: make(chan struct{}),
	}
	if u.config != nil {
		next.config = maps.Clone(h.cur.config)
		if next.config == nil {
			next.config = map[string]*configSet{}
		}
		for kind, set := range u.config {
			prev, _ := h.cur.Config(kind)
			// The backend's own index of the kind (when given), kept
			// monotonic; else the catalog index.
			setIdx := idx
			if set.index != 0 {
				setIdx = max(set.index, prev+1)
			}
			next.config[kind] = &configSet{index: setIdx, entries: set.entries}
		}
	}
	if u.instChanged {
		next.instIndex = idx
		next.services = u.services
		for name := range u.touched {
			set := next.services[name]
			setIdx := idx
			if f, ok := u.setFloor[name]; ok {
				// The backend's own index of this service, kept monotonic.
				prev, _ := h.cur.Service(name)
				setIdx = max(f, prev+1)
			}
			next.services[name] = &serviceSet{index: setIdx, insts: set.insts}
		}
	}
	if u.recChanged {
		next.recIndex = idx
		if u.recFloor != 0 {
			next.recIndex = max(u.recFloor, h.cur.recIndex+1)
		}
		next.records = u.records
	}
	h.publish(next)
	return idx
}

func (h *Hub) publish(next *Snapshot) {
	old := h.cur
	h.cur = next
	close(old.done)
}

// Update collects the changes of one Hub.Update.
type Update struct {
	old         *Snapshot
	services    map[string]*serviceSet // copy-on-write of old.services
	touched     map[string]bool
	records     []*registryv1.Record
	instChanged bool
	recChanged  bool
	stale       bool
	floor       uint64
	setFloor    map[string]uint64
	recFloor    uint64
	config      map[string]*configSet // kinds that changed: entries, and the backend's index (0: none)
}

// SetServiceAt is SetService with the backend's own index of the service
// (for example Consul's X-Consul-Index of its health query): if the set
// changes, its index becomes max(idx, previous index + 1) instead of the
// catalog index, so registries sharing a backend report the same index.
func (u *Update) SetServiceAt(name string, insts []*registryv1.Instance, idx uint64) {
	if u.setFloor == nil {
		u.setFloor = map[string]uint64{}
	}
	u.setFloor[name] = idx
	u.SetService(name, insts)
}

// SetRecordsAt is SetRecords with the backend's own index of the records.
func (u *Update) SetRecordsAt(recs []*registryv1.Record, idx uint64) {
	u.recFloor = idx
	u.SetRecords(recs)
}

// Snapshot returns the snapshot the update starts from.
func (u *Update) Snapshot() *Snapshot { return u.old }

// AtLeast makes the new snapshot's index at least idx (a backend's own
// index), if anything changes.
func (u *Update) AtLeast(idx uint64) { u.floor = max(u.floor, idx) }

// SetStale marks whether the backend is unreachable.
func (u *Update) SetStale(stale bool) { u.stale = stale }

func (u *Update) current(name string) []*registryv1.Instance {
	if u.services != nil {
		if set := u.services[name]; set != nil {
			return set.insts
		}
		return nil
	}
	if set := u.old.services[name]; set != nil {
		return set.insts
	}
	return nil
}

func (u *Update) set(name string, insts []*registryv1.Instance) {
	if u.services == nil {
		u.services = maps.Clone(u.old.services)
		u.touched = map[string]bool{}
	}
	u.services[name] = &serviceSet{insts: insts}
	u.touched[name] = true
	u.instChanged = true
}

// SetService replaces a service's instances (any order; nil removes the
// service). Nothing changes if the set is equal to the current one.
func (u *Update) SetService(name string, insts []*registryv1.Instance) {
	sorted := slices.Clone(insts)
	slices.SortFunc(sorted, func(a, b *registryv1.Instance) int { return strings.Compare(a.Id, b.Id) })
	cur := u.current(name)
	if slices.EqualFunc(cur, sorted, func(a, b *registryv1.Instance) bool { return a == b || proto.Equal(a, b) }) {
		return
	}
	u.set(name, sorted)
}

// Services returns the names of every service the update currently holds
// (with instances).
func (u *Update) Services() []string {
	m := u.old.services
	if u.services != nil {
		m = u.services
	}
	var names []string
	for name, set := range m {
		if len(set.insts) > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// PutInstance adds or replaces one instance.
func (u *Update) PutInstance(inst *registryv1.Instance) {
	cur := u.current(inst.Service)
	next := make([]*registryv1.Instance, 0, len(cur)+1)
	for _, c := range cur {
		if c.Id != inst.Id {
			next = append(next, c)
		}
	}
	u.SetService(inst.Service, append(next, inst))
}

// DeleteInstance removes one instance; it reports whether it existed.
func (u *Update) DeleteInstance(service, id string) bool {
	cur := u.current(service)
	next := make([]*registryv1.Instance, 0, len(cur))
	for _, c := range cur {
		if c.Id != id {
			next = append(next, c)
		}
	}
	if len(next) == len(cur) {
		return false
	}
	u.SetService(service, next)
	return true
}

// Instance returns an instance as the update currently holds it, or nil.
func (u *Update) Instance(service, id string) *registryv1.Instance {
	for _, c := range u.current(service) {
		if c.Id == id {
			return c
		}
	}
	return nil
}

// SetRecords replaces the whole record set (any order).
func (u *Update) SetRecords(recs []*registryv1.Record) {
	sorted := slices.Clone(recs)
	slices.SortFunc(sorted, CompareRecords)
	cur := u.old.records
	if u.recChanged {
		cur = u.records
	}
	if slices.EqualFunc(cur, sorted, func(a, b *registryv1.Record) bool { return a == b || proto.Equal(a, b) }) {
		return
	}
	u.records = sorted
	u.recChanged = true
}

// CompareRecords orders records by name, type, then data.
func CompareRecords(a, b *registryv1.Record) int {
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	if c := strings.Compare(a.Type, b.Type); c != 0 {
		return c
	}
	return strings.Compare(a.Data, b.Data)
}

// ChangedServices returns, sorted, the names of the services whose
// instances differ between prev and s. It compares the services' sets by
// identity (an unchanged set is shared between snapshots), so its cost is
// the number of services, not of instances; a set that was replaced by an
// equal one may be reported, never a changed one missed.
func (s *Snapshot) ChangedServices(prev *Snapshot) []string {
	if prev == s || (prev.instIndex == s.instIndex && prev.base == s.base) {
		return nil
	}
	var names []string
	for name, set := range s.services {
		if p := prev.services[name]; p != set && (len(set.insts) > 0 || (p != nil && len(p.insts) > 0)) {
			names = append(names, name)
		}
	}
	for name, p := range prev.services {
		if _, ok := s.services[name]; !ok && len(p.insts) > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// SameService reports whether a service's instances are the same set (by
// identity) in prev and s.
func (s *Snapshot) SameService(prev *Snapshot, name string) bool {
	return s.services[name] == prev.services[name]
}
