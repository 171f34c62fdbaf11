package balance

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkPick measures one pick and its release (Done with Ignore) for
// every policy at 3, 100 and 1000 endpoints, from one goroutine, with the
// real clock.
func BenchmarkPick(b *testing.B) {
	for _, name := range Names() {
		for _, n := range []int{3, 100, 1000} {
			b.Run(fmt.Sprintf("%s/n=%d", name, n), func(b *testing.B) {
				s := benchSet(b, name, n)
				info := PickInfo{HasHash: true}
				b.ReportAllocs()
				cpu := startCPU(b)
				for i := 0; b.Loop(); i++ {
					info.Hash = uint64(i) * 0x9e3779b97f4a7c15
					sel, err := s.Pick(info)
					if err != nil {
						b.Fatal(err)
					}
					sel.Done(Ignore, 0)
				}
				cpu.report()
			})
		}
	}
}

// BenchmarkPickDone adds the report path: Done with Success and a latency
// (EWMA update, outlier and breaker bookkeeping).
func BenchmarkPickDone(b *testing.B) {
	for _, name := range []string{RoundRobinName, P2CName} {
		for _, n := range []int{3, 100} {
			b.Run(fmt.Sprintf("%s/n=%d", name, n), func(b *testing.B) {
				s := benchSet(b, name, n)
				b.ReportAllocs()
				for b.Loop() {
					sel, err := s.Pick(PickInfo{})
					if err != nil {
						b.Fatal(err)
					}
					sel.Done(Success, time.Millisecond)
				}
			})
		}
	}
}

// BenchmarkPickParallel has every core picking from one set at once, for
// every policy: per-endpoint counters and the policies' shared state are
// what the pickers can contend on. ns/op is wall time per pick across all
// cores.
func BenchmarkPickParallel(b *testing.B) {
	for _, name := range Names() {
		for _, n := range []int{100, 1000} {
			b.Run(fmt.Sprintf("%s/n=%d", name, n), func(b *testing.B) {
				s := benchSet(b, name, n)
				b.ReportAllocs()
				cpu := startCPU(b)
				b.RunParallel(func(pb *testing.PB) {
					info := PickInfo{HasHash: true}
					for i := 0; pb.Next(); i++ {
						info.Hash = uint64(i) * 0x9e3779b97f4a7c15
						sel, err := s.Pick(info)
						if err != nil {
							b.Error(err)
							return
						}
						sel.Done(Ignore, 0)
					}
				})
				cpu.report()
			})
		}
	}
}

// BenchmarkRebuild measures Update (a full snapshot rebuild) with weights
// 1,2,3,5,8 cycled, the same list each time.
func BenchmarkRebuild(b *testing.B) {
	for _, name := range []string{WeightedRoundRobinName, ConsistentHashName} {
		for _, n := range []int{100, 1000} {
			b.Run(fmt.Sprintf("%s/n=%d", name, n), func(b *testing.B) {
				cfg := DefaultConfig()
				cfg.Policy = name
				s, _ := New(cfg)
				eps := endpoints(n, 1, 2, 3, 5, 8)
				b.ReportAllocs()
				cpu := startCPU(b)
				for b.Loop() {
					if err := s.Update(eps); err != nil {
						b.Fatal(err)
					}
				}
				cpu.report()
			})
		}
	}
}

// BenchmarkChurn measures Update on a large set where one endpoint is
// replaced by a new one each time (instances coming and going), for the
// policies whose snapshot is more than the endpoint list.
func BenchmarkChurn(b *testing.B) {
	for _, name := range []string{RoundRobinName, WeightedRoundRobinName, LeastConnName, P2CName, RandomName} {
		for _, n := range []int{1000, 50000} {
			b.Run(fmt.Sprintf("%s/n=%d", name, n), func(b *testing.B) {
				cfg := DefaultConfig()
				cfg.Policy = name
				s, _ := New(cfg)
				eps := endpoints(n, 1, 2, 3, 5, 8)
				if err := s.Update(eps); err != nil {
					b.Fatal(err)
				}
				// Each step swaps one endpoint's ID with a spare one: a new
				// instance in, an old one out.
				spare := make([]string, n)
				for i := range spare {
					spare[i] = fmt.Sprintf("x%02d", i)
				}
				b.ReportAllocs()
				cpu := startCPU(b)
				for i := 0; b.Loop(); i++ {
					k := i % n
					eps[k].ID, spare[k] = spare[k], eps[k].ID
					if err := s.Update(eps); err != nil {
						b.Fatal(err)
					}
				}
				cpu.report()
			})
		}
	}
}

// cpuTimer reports the process's CPU time per operation next to ns/op.
// On a shared, loaded machine wall time per op counts the time the
// benchmark waited for a core; CPU time does not, so it is the steadier
// figure for comparing two builds. For parallel benchmarks it is the CPU
// cost of one pick summed over every core, so it exceeds ns/op.
type cpuTimer struct {
	b     *testing.B
	start int64
}

func startCPU(b *testing.B) cpuTimer { return cpuTimer{b, processCPU()} }

func (c cpuTimer) report() {
	if c.b.N > 0 && c.start > 0 {
		c.b.ReportMetric(float64(processCPU()-c.start)/float64(c.b.N), "cpu-ns/op")
	}
}

func benchSet(b *testing.B, name string, n int) *Set {
	b.Helper()
	cfg := DefaultConfig()
	cfg.Policy = name
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	eps := endpoints(n, 1, 2, 3)
	if err := s.Update(eps); err != nil {
		b.Fatal(err)
	}
	// Give p2c latency samples so it compares real estimates.
	for _, e := range s.Endpoints() {
		e.mu.Lock()
		e.observe(time.Now().UnixNano(), time.Millisecond, false, float64(s.Config().LatencyDecay))
		e.mu.Unlock()
	}
	return s
}

func BenchmarkHashOn(b *testing.B) {
	for _, on := range []string{"client_ip", "header:X-User-Id", "cookie:session"} {
		b.Run(on, func(b *testing.B) {
			h, _ := ParseHashOn(on)
			r := newBenchRequest()
			b.ReportAllocs()
			for b.Loop() {
				h.Hash(r)
			}
		})
	}
}
