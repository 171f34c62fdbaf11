package scan

import (
	"context"
	"net/netip"
	"strconv"
	"testing"
)

// BenchmarkScanClosed scans 1024 closed loopback ports per iteration.
func BenchmarkScanClosed(b *testing.B) {
	ports, _ := ParsePorts("50000-51023")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Scan(context.Background(), netip.MustParseAddr("127.0.0.1"), ports, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConnectNow is the loopback fast path alone, one port at a time.
func BenchmarkConnectNow(b *testing.B) {
	ap := netip.MustParseAddrPort("127.0.0.1:1")
	b.ReportAllocs()
	for b.Loop() {
		if st, ok := connectNow(ap); !ok || st != Closed {
			b.Fatal(st, ok)
		}
	}
}

func BenchmarkScanClosedFewWorkers(b *testing.B) {
	ports, _ := ParsePorts("50000-51023")
	for _, w := range []int{2, 4, 8, 32} {
		b.Run(strconv.Itoa(w), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Scan(context.Background(), netip.MustParseAddr("127.0.0.1"), ports, Options{Concurrency: w}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
