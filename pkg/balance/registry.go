package balance

import (
	"slices"
	"sync"
)

var registry = struct {
	sync.RWMutex
	m map[string]Builder
}{m: make(map[string]Builder)}

// Register makes a policy available under name, replacing any earlier
// builder of that name. The built-in policies register themselves; call
// Register from an init function to add one.
func Register(name string, b Builder) {
	if name == "" || b == nil {
		panic("balance: Register with empty name or nil builder")
	}
	registry.Lock()
	registry.m[name] = b
	registry.Unlock()
}

// Lookup returns the builder registered under name.
func Lookup(name string) (Builder, bool) {
	registry.RLock()
	b, ok := registry.m[name]
	registry.RUnlock()
	return b, ok
}

// Names returns the registered policy names, sorted.
func Names() []string {
	registry.RLock()
	names := make([]string, 0, len(registry.m))
	for n := range registry.m {
		names = append(names, n)
	}
	registry.RUnlock()
	slices.Sort(names)
	return names
}
