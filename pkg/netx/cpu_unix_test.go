//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package netx

import (
	"syscall"
	"testing"
	"time"
)

// cpuMeter measures the CPU time (user + system) this process spends, so a
// stream benchmark can report CPU per MiB moved: on a busy machine that
// shows the cost of a copy more steadily than wall-clock throughput.
type cpuMeter struct{ start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuMeter { return cpuMeter{processCPU()} }

// report adds a cpu-µs/MiB metric: process CPU per MiB of payload (the
// benchmark's b.N iterations each move 1 MiB).
func (m cpuMeter) report(b *testing.B) {
	used := processCPU() - m.start
	b.ReportMetric(float64(used.Microseconds())/float64(b.N), "cpu-µs/MiB")
}
