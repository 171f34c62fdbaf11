package balance

import (
	"testing"
	"unsafe"
)

// TestEndpointStateCacheLines pins the layout that keeps parallel pickers
// from false sharing: the pick-path fields fill the first cache line, and
// the struct is whole lines, so the allocator (size classes that are
// multiples of 64 start every object on a line) gives each endpoint lines
// of its own.
func TestEndpointStateCacheLines(t *testing.T) {
	var e EndpointState
	if got := unsafe.Sizeof(e) % cacheLine; got != 0 {
		t.Fatalf("sizeof(EndpointState) = %d, not a multiple of %d", unsafe.Sizeof(e), cacheLine)
	}
	if got := unsafe.Sizeof(pickLine{}); got != cacheLine {
		t.Fatalf("pick line is %d bytes, want %d", got, cacheLine)
	}
	for name, off := range map[string]uintptr{
		"outstanding": unsafe.Offsetof(e.outstanding),
		"ewma":        unsafe.Offsetof(e.ewma),
		"ewmaAt":      unsafe.Offsetof(e.ewmaAt),
		"status":      unsafe.Offsetof(e.status),
		"probes":      unsafe.Offsetof(e.probes),
	} {
		if off >= cacheLine {
			t.Errorf("%s at offset %d, outside the pick line", name, off)
		}
	}
	cfg := DefaultConfig()
	s, _ := newSet(t, cfg, endpoints(64))
	for _, es := range s.Endpoints() {
		if a := uintptr(unsafe.Pointer(es)); a%cacheLine != 0 {
			t.Fatalf("endpoint %s at %#x, not on a cache line boundary", es.ID(), a)
		}
	}
}
