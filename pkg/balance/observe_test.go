package balance

import (
	"testing"
	"time"
)

func TestObserveEjectsWithoutPicks(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Outlier.ConsecutiveFailures = 3
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update([]Endpoint{{ID: "a", Addr: "a:1"}, {ID: "b", Addr: "b:1"}, {ID: "c", Addr: "c:1"}}); err != nil {
		t.Fatal(err)
	}
	if s.Observe("nope", Failure, time.Millisecond) {
		t.Fatal("Observe of an unknown ID reported true")
	}
	for i := 0; i < 3; i++ {
		if !s.Observe("b", Failure, time.Millisecond) {
			t.Fatal("Observe of a known ID reported false")
		}
	}
	var ejected bool
	for _, es := range s.Endpoints() {
		if es.ID() == "b" {
			ejected = es.Ejected()
			if es.Outstanding() != 0 {
				t.Fatalf("outstanding = %d after Observe, want 0", es.Outstanding())
			}
		}
	}
	if !ejected {
		t.Fatal("b not ejected after 3 observed failures")
	}
	for i := 0; i < 30; i++ {
		sel, err := s.Pick(PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		if sel.Endpoint.ID() == "b" {
			t.Fatal("picked the ejected endpoint")
		}
		sel.Done(Success, time.Millisecond)
	}
}
