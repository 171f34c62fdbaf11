package main

import (
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/balance"
)

// TestP2CHalvesTailLatency: with one backend 10x slower, p2c's p99 is at
// most half of round_robin's, with and without queueing.
func TestP2CHalvesTailLatency(t *testing.T) {
	for _, sc := range Scenarios(7, 20*time.Second) {
		if sc.Timeout > 0 {
			continue // outlier detection rescues round_robin there
		}
		rr, err := Run(sc, balance.RoundRobinName)
		if err != nil {
			t.Fatal(err)
		}
		p2c, err := Run(sc, balance.P2CName)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: round_robin p99 %v, p2c p99 %v", sc.Name, rr.P99, p2c.P99)
		if p2c.P99*2 > rr.P99 {
			t.Errorf("%s: p2c p99 %v is more than half of round_robin's %v", sc.Name, p2c.P99, rr.P99)
		}
	}
}

// TestDeterministic: the same seed gives the same figures.
func TestDeterministic(t *testing.T) {
	sc := Scenarios(3, 5*time.Second)[0]
	for _, p := range Policies {
		a, err := Run(sc, p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := Run(sc, p)
		if a != b {
			t.Errorf("%s: two runs differ: %+v vs %+v", p, a, b)
		}
	}
}

func TestMaglevMovedAboutOneHundredth(t *testing.T) {
	moved, owned, err := MaglevMoved(100, 100000, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("moved %.3f%%, owned %.3f%%", 100*moved, 100*owned)
	if moved < owned || moved > 0.02 {
		t.Fatalf("moved %.3f%% of keys (owned %.3f%%), want between its share and 2%%", 100*moved, 100*owned)
	}
}
