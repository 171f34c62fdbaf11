package scan

import (
	"context"
	"net/netip"
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
