package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/switchboard-net/switchboard/pkg/balance"
)

// Scenarios returns the standard scenarios: backends that queue (4
// workers each, so a slow backend also builds a backlog), the same with a
// client timeout, and backends that do not queue (latency independent of
// load).
func Scenarios(seed uint64, d time.Duration) []Scenario {
	base := Scenario{
		Backends: 10, Service: 10 * time.Millisecond, Slowdown: 10,
		SlowAt: d / 6, Duration: d, Clients: 0, Seed: seed, WarmUp: time.Second,
	}
	queueing := base
	queueing.Name = "queueing: 4 workers/backend, 2000 req/s (50% of healthy capacity)"
	queueing.Workers, queueing.Rate = 4, 2000
	withTimeout := queueing
	withTimeout.Name = "queueing with a 1s client timeout: timeouts are failures and feed outlier detection"
	withTimeout.Timeout = time.Second
	free := base
	free.Name = "no queueing: latency independent of load, 2000 req/s"
	free.Workers, free.Rate = 0, 2000
	return []Scenario{queueing, withTimeout, free}
}

// Policies is the order in which policies are shown.
var Policies = []string{
	balance.RoundRobinName, balance.WeightedRoundRobinName, balance.RandomName,
	balance.LeastConnName, balance.P2CName, balance.ConsistentHashName,
}

func main() {
	seed := flag.Uint64("seed", 1, "random seed (same seed, same figures)")
	dur := flag.Duration("duration", 60*time.Second, "virtual time to simulate")
	flag.Parse()
	if err := run(*seed, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "balance:", err)
		os.Exit(1)
	}
}

func run(seed uint64, d time.Duration) error {
	fmt.Printf("seed %d, %v virtual, 10 backends, mean service 10ms, backend 0 becomes 10x slower at %v\n\n", seed, d, d/6)
	for _, sc := range Scenarios(seed, d) {
		fmt.Printf("### %s\n\n", sc.Name)
		fmt.Println("| policy | requests | p50 | p99 | max | timed out | slow backend's share |")
		fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
		var rr, p2c time.Duration
		for _, p := range Policies {
			s := sc
			if p == balance.ConsistentHashName {
				s.Clients = 10000
			}
			r, err := Run(s, p)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			switch p {
			case balance.RoundRobinName:
				rr = r.P99
			case balance.P2CName:
				p2c = r.P99
			}
			fmt.Printf("| %s | %d | %s | %s | %s | %d | %.1f%% |\n", p, r.Requests, ms(r.P50), ms(r.P99), ms(r.Max), r.TimedOut, 100*r.SlowShare)
		}
		base := sc
		base.Slowdown = 1
		b, err := Run(base, balance.RoundRobinName)
		if err != nil {
			return err
		}
		fmt.Printf("\np2c p99 / round_robin p99 = %.3g; for reference, round_robin with no slow backend: p50 %s, p99 %s\n\n",
			float64(p2c)/float64(rr), ms(b.P50), ms(b.P99))
	}
	moved, owned, err := MaglevMoved(100, 1_000_000, seed)
	if err != nil {
		return err
	}
	fmt.Printf("### consistent_hash (Maglev, 65537 slots): one of 100 endpoints leaves\n\n")
	fmt.Printf("%.3f%% of 1,000,000 keys moved (the leaving endpoint held %.3f%%; ideal 1/100 = 1%%)\n", 100*moved, 100*owned)
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
