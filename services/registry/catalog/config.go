package catalog

import (
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// The kinds of configuration entries the registry keeps for the stack's
// replicas.
const (
	// KindPolicy is a balancer policy: the key is the service name, the
	// value a marshalled switchboard.balancer.v1.Policy.
	KindPolicy = "policy"
	// KindJob is a scheduled prober job: the key is the job id, the value
	// a marshalled switchboard.prober.v1.Job.
	KindJob = "job"
)

// ConfigKinds is every kind of configuration entry, sorted.
var ConfigKinds = []string{KindJob, KindPolicy}

// Configuration limits.
const (
	// MaxConfigValue is the largest value of one entry (Consul's KV takes
	// up to 512 KiB; a policy or a job is a few hundred bytes).
	MaxConfigValue = 64 << 10
	// MaxConfigKey is the longest key.
	MaxConfigKey = 128
)

// configSet is the entries of one kind and the index of their last change.
type configSet struct {
	index   uint64
	entries []*registryv1.ConfigEntry // sorted by key
}

// ValidateConfigRef checks a kind and a key: a policy's key is a service
// name, a job's key an id of [A-Za-z0-9._-].
func ValidateConfigRef(kindField, keyField, kind, key string) error {
	switch kind {
	case KindPolicy:
		return ValidateServiceName(keyField, key)
	case KindJob:
		return ValidateID(keyField, key)
	case "":
		return fieldErr(kindField, "required")
	default:
		return fieldErr(kindField, "unknown kind %q (%s)", kind, strings.Join(ConfigKinds, ", "))
	}
}

// ValidateConfigKind checks a kind alone.
func ValidateConfigKind(field, kind string) error {
	if !slices.Contains(ConfigKinds, kind) {
		if kind == "" {
			return fieldErr(field, "required")
		}
		return fieldErr(field, "unknown kind %q (%s)", kind, strings.Join(ConfigKinds, ", "))
	}
	return nil
}

// PrepareConfig validates an entry and returns it as stored: a copy with
// updated_at set to now and updated_by to by.
func PrepareConfig(in *registryv1.ConfigEntry, now time.Time, by string) (*registryv1.ConfigEntry, error) {
	if in == nil {
		return nil, fieldErr("entry", "required")
	}
	if err := ValidateConfigRef("entry.kind", "entry.key", in.GetKind(), in.GetKey()); err != nil {
		return nil, err
	}
	if len(in.GetValue()) == 0 {
		return nil, fieldErr("entry.value", "required")
	}
	if len(in.GetValue()) > MaxConfigValue {
		return nil, fieldErr("entry.value", "must be at most %d bytes, got %d", MaxConfigValue, len(in.GetValue()))
	}
	return &registryv1.ConfigEntry{
		Kind: in.GetKind(), Key: in.GetKey(), Value: slices.Clone(in.GetValue()),
		UpdatedAt: Timestamp(now), UpdatedBy: by,
	}, nil
}

// ConfigKey is the key a backend stores an entry under: "<kind>/<key>".
func ConfigKey(kind, key string) string { return kind + "/" + key }

// Config returns the entries of one kind sorted by key, and the index of
// their last change (for a kind never set, the index at start).
func (s *Snapshot) Config(kind string) (uint64, []*registryv1.ConfigEntry) {
	if set, ok := s.config[kind]; ok {
		return set.index, set.entries
	}
	return s.base, nil
}

// ConfigEntry returns one entry, or nil.
func (s *Snapshot) ConfigEntry(kind, key string) *registryv1.ConfigEntry {
	_, list := s.Config(kind)
	i, ok := slices.BinarySearchFunc(list, key, func(e *registryv1.ConfigEntry, k string) int { return strings.Compare(e.Key, k) })
	if !ok {
		return nil
	}
	return list[i]
}

// currentConfig is a kind's entries as the update holds them.
func (u *Update) currentConfig(kind string) []*registryv1.ConfigEntry {
	if set, ok := u.config[kind]; ok {
		return set.entries
	}
	_, list := u.old.Config(kind)
	return list
}

// Config returns a kind's entries as the update currently holds them.
func (u *Update) Config(kind string) []*registryv1.ConfigEntry { return u.currentConfig(kind) }

// SetConfig replaces every entry of one kind (any order). Nothing changes
// if the set is equal to the current one.
func (u *Update) SetConfig(kind string, entries []*registryv1.ConfigEntry) {
	u.SetConfigAt(kind, entries, 0)
}

// SetConfigAt is SetConfig with the backend's own index of the kind: if
// the set changes, its index becomes max(idx, previous index + 1).
func (u *Update) SetConfigAt(kind string, entries []*registryv1.ConfigEntry, idx uint64) {
	sorted := slices.Clone(entries)
	slices.SortFunc(sorted, func(a, b *registryv1.ConfigEntry) int { return strings.Compare(a.Key, b.Key) })
	if slices.EqualFunc(u.currentConfig(kind), sorted, func(a, b *registryv1.ConfigEntry) bool { return a == b || proto.Equal(a, b) }) {
		return
	}
	if u.config == nil {
		u.config = map[string]*configSet{}
	}
	u.config[kind] = &configSet{index: idx, entries: sorted}
}

// PutConfig adds or replaces one entry.
func (u *Update) PutConfig(e *registryv1.ConfigEntry) {
	cur := u.currentConfig(e.Kind)
	next := make([]*registryv1.ConfigEntry, 0, len(cur)+1)
	for _, c := range cur {
		if c.Key != e.Key {
			next = append(next, c)
		}
	}
	u.SetConfig(e.Kind, append(next, e))
}

// DeleteConfig removes one entry; it reports whether it existed.
func (u *Update) DeleteConfig(kind, key string) bool {
	cur := u.currentConfig(kind)
	next := make([]*registryv1.ConfigEntry, 0, len(cur))
	for _, c := range cur {
		if c.Key != key {
			next = append(next, c)
		}
	}
	if len(next) == len(cur) {
		return false
	}
	u.SetConfig(kind, next)
	return true
}
