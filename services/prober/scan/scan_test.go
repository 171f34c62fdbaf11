package scan

import (
	"context"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

func TestParsePorts(t *testing.T) {
	tests := []struct {
		in   string
		want []uint16
		ok   bool
	}{
		{"22", []uint16{22}, true},
		{"80,22,80", []uint16{22, 80}, true},
		{"8000-8003, 1", []uint16{1, 8000, 8001, 8002, 8003}, true},
		{"65535", []uint16{65535}, true},
		{"65534-65535", []uint16{65534, 65535}, true},
		{"0", nil, false}, {"65536", nil, false}, {"10-5", nil, false},
		{"", nil, false}, {"1,,2", nil, false}, {"a-b", nil, false}, {"-5", nil, false},
	}
	for _, tt := range tests {
		got, err := ParsePorts(tt.in)
		if (err == nil) != tt.ok || (tt.ok && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("ParsePorts(%q) = %v, %v; want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
	all, err := ParsePorts("1-65535")
	if err != nil || len(all) != 65535 {
		t.Fatalf("1-65535: %d ports, %v", len(all), err)
	}
}

func FuzzParsePorts(f *testing.F) {
	f.Add("22,80,8000-8100")
	f.Add("1-65535")
	f.Fuzz(func(t *testing.T, s string) {
		ports, err := ParsePorts(s)
		if err != nil {
			return
		}
		if len(ports) == 0 {
			t.Fatal("no ports and no error")
		}
		for i := 1; i < len(ports); i++ {
			if ports[i] <= ports[i-1] {
				t.Fatalf("not ascending: %v", ports)
			}
		}
		if ports[0] == 0 {
			t.Fatal("port 0 accepted")
		}
	})
}

// TestScanFindsExactlyOpenPorts opens listeners and scans a range around
// them: exactly those ports are open, the rest closed.
func TestScanFindsExactlyOpenPorts(t *testing.T) {
	var want []uint16
	for i := 0; i < 3; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		want = append(want, uint16(ln.Addr().(*net.TCPAddr).Port))
	}
	var ports []uint16
	seen := map[uint16]bool{}
	for _, p := range want {
		for q := int(p) - 20; q <= int(p)+20; q++ {
			if q > 0 && q < 65536 && !seen[uint16(q)] {
				seen[uint16(q)] = true
				ports = append(ports, uint16(q))
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var found []uint16
	res, err := Scan(ctx, netip.MustParseAddr("127.0.0.1"), ports, Options{Concurrency: 16, Timeout: time.Second,
		OnPort: func(p uint16, st State, _, _ int) {
			if st == Open {
				found = append(found, p)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	got := res.OpenPorts(ports)
	// Other programs on the host may listen nearby (and come and go), so
	// only our ports are asserted here; the service's tests scan a
	// namespace of their own and assert the exact set.
	for _, p := range want {
		if res.States[index(ports, p)] != Open {
			t.Errorf("port %d (ours) is %v", p, res.States[index(ports, p)])
		}
	}
	for _, p := range got {
		if !contains(want, p) {
			t.Logf("port %d open: another program's listener", p)
		}
	}
	if len(found) != len(got) {
		t.Errorf("OnPort saw %v, result has %v", found, got)
	}
	if res.Open+res.Closed+res.Filtered != len(ports) || res.Filtered != 0 {
		t.Errorf("counts %d/%d/%d for %d ports", res.Open, res.Closed, res.Filtered, len(ports))
	}
}

func TestScanRateLimit(t *testing.T) {
	ports, _ := ParsePorts("40000-40049")
	start := time.Now()
	_, err := Scan(context.Background(), netip.MustParseAddr("127.0.0.1"), ports, Options{Rate: 100, Concurrency: 50})
	if err != nil {
		t.Fatal(err)
	}
	// 50 connects at 100/s with a burst of 1 take at least ~0.45 s.
	if el := time.Since(start); el < 400*time.Millisecond {
		t.Fatalf("50 ports at 100/s took %v", el)
	}
}

func index(ps []uint16, p uint16) int {
	for i, q := range ps {
		if q == p {
			return i
		}
	}
	return -1
}

func contains(ps []uint16, p uint16) bool { return index(ps, p) >= 0 }
