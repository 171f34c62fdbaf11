package prober

import (
	"fmt"
	"testing"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// TestRendezvousSpreadsAndMovesOnlyTheDeadShare: keys spread evenly over
// the members (chi-square, 3 members, 3000 keys), and removing a member
// moves only the keys it owned.
func TestRendezvousSpreadsAndMovesOnlyTheDeadShare(t *testing.T) {
	live := []string{"prober-a-7400", "prober-b-7400", "prober-c-7400"}
	const keys = 3000
	counts := map[string]int{}
	owner := map[string]string{}
	for i := range keys {
		k := healthKey("web", fmt.Sprintf("web-%d", i))
		o := ownerOf(live, k)
		counts[o]++
		owner[k] = o
	}
	exp := float64(keys) / float64(len(live))
	chi := 0.0
	for _, id := range live {
		d := float64(counts[id]) - exp
		chi += d * d / exp
	}
	// 2 degrees of freedom: p = 0.001 at 13.8.
	if chi > 13.8 {
		t.Fatalf("uneven spread %v (chi-square %.1f)", counts, chi)
	}
	survivors := []string{"prober-a-7400", "prober-c-7400"}
	for k, o := range owner {
		got := ownerOf(survivors, k)
		if o != "prober-b-7400" && got != o {
			t.Fatalf("key %s moved from live %s to %s", k, o, got)
		}
		if got == "prober-b-7400" {
			t.Fatalf("key %s still on the dead member", k)
		}
	}
}

func TestMembersFromSnapshot(t *testing.T) {
	const (
		passing  = registryv1.HealthStatus_HEALTH_STATUS_PASSING
		critical = registryv1.HealthStatus_HEALTH_STATUS_CRITICAL
	)
	insts := []*registryv1.Instance{
		{Service: MemberService, Id: "p1", Health: passing},
		{Service: MemberService, Id: "p2", Health: critical}, // its TTL passed
		{Service: "web", Id: "p3", Health: passing},
	}
	m := newMembers("self")
	if _, known, _ := m.snapshot(); known {
		t.Fatal("members known before any snapshot")
	}
	_, _, changed := m.snapshot()
	m.set(liveProbers(insts))
	live, known, _ := m.snapshot()
	if !known || fmt.Sprint(live) != "[p1]" || m.owns("job/x") {
		t.Fatalf("live %v known %v: want [p1] (self not passing yet: it runs nothing)", live, known)
	}
	select {
	case <-changed:
	default:
		t.Fatal("a change did not wake the waiters")
	}
	_, _, changed = m.snapshot()
	m.set([]string{"p1"})
	select {
	case <-changed:
		t.Fatal("the same set woke the waiters")
	default:
	}
	// No prober passing (this one cannot register): it runs everything.
	m.set(nil)
	if live, _, _ := m.snapshot(); fmt.Sprint(live) != "[self]" || !m.owns("job/x") {
		t.Fatalf("live %v with no passing prober, want [self] owning everything", live)
	}
	m.set([]string{"p1", "self"})
	if live, _, _ := m.snapshot(); fmt.Sprint(live) != "[p1 self]" {
		t.Fatalf("live %v, want [p1 self]", live)
	}
}

func TestDefaultID(t *testing.T) {
	for _, tt := range []struct{ name, addr, want string }{
		{"host1", "0.0.0.0:7400", "host1-7400"},
		{"my host!", "127.0.0.1:41234", "my-host--41234"},
		{"", "[::1]:7400", "prober-7400"},
	} {
		got := defaultID(tt.name, tt.addr)
		if got != tt.want || validID(got) != nil {
			t.Errorf("defaultID(%q, %q) = %q (valid: %v), want %q", tt.name, tt.addr, got, validID(got), tt.want)
		}
	}
}
