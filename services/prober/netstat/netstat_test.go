package netstat

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

const tcpTable = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 103 1 00000000156a3e7e 100 0 0 10 0
   1: 0100007F:A759 0100007F:C2E4 06 00000000:00000000 03:0000103C 00000000  1000        0 0 3 00000000ed9bc8ae
`

const tcp6Table = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 20 4 30 10 -1
`

const udpTable = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 9999 2 0000000000000000 0
`

func TestParseSockets(t *testing.T) {
	tests := []struct {
		name, proto, table string
		want               []Socket
	}{
		{"tcp", "tcp", tcpTable, []Socket{
			{"tcp", ap("0.0.0.0:2024"), ap("0.0.0.0:0"), "LISTEN", 0, 103},
			{"tcp", ap("127.0.0.1:42841"), ap("127.0.0.1:49892"), "TIME-WAIT", 1000, 0},
		}},
		{"tcp6", "tcp6", tcp6Table, []Socket{
			{"tcp6", ap("[::1]:22"), ap("[::]:0"), "LISTEN", 0, 4242},
			{"tcp6", ap("127.0.0.1:8080"), ap("127.0.0.1:54321"), "ESTABLISHED", 0, 77},
		}},
		{"udp", "udp", udpTable, []Socket{
			{"udp", ap("127.0.0.53:53"), ap("0.0.0.0:0"), "UNCONN", 101, 9999},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSockets(strings.NewReader(tt.table), tt.proto)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d sockets, want %d: %+v", len(got), len(tt.want), got)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("socket %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestParseSocketsRejectsBadRows(t *testing.T) {
	for _, row := range []string{
		"0: 0100007F 00000000:0000 0A 0 0 0 0 0 1",
		"0: 0100007G:0016 00000000:0000 0A 0 0 0 0 0 1",
		"0: 0100007F:0016 00000000:0000 ZZ 0 0 0 0 0 1",
		"0: 0100007F:0016 00000000:0000 0A 0 0 0 x 0 1",
		"0: 0100007F:0016",
	} {
		if _, err := ParseSockets(strings.NewReader("header\n"+row+"\n"), "tcp"); err == nil {
			t.Errorf("row %q parsed without error", row)
		}
	}
}

// TestSocketsSeesOurListener reads the live table and finds a listener the
// test opened, in the state ss would show.
func TestSocketsSeesOurListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	want := netip.MustParseAddrPort(ln.Addr().String())
	socks, err := Sockets("/proc", "tcp")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range socks {
		if s.Local == want && s.State == "LISTEN" {
			return
		}
	}
	t.Fatalf("listener %v not in the tcp table (%d sockets)", want, len(socks))
}

const devTable = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1078460152   28137    0    0    0     0          0         0 1078460152   28137    0    0    0     0       0          0
  eth0:12 3 4 5 0 0 0 0 6 7 8 9 0 0 0 0
`

func TestParseDev(t *testing.T) {
	got, err := ParseDev(strings.NewReader(devTable))
	if err != nil {
		t.Fatal(err)
	}
	want := []Interface{
		{"lo", 1078460152, 28137, 0, 0, 1078460152, 28137, 0, 0},
		{"eth0", 12, 3, 4, 5, 6, 7, 8, 9},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("interface %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"h\nh\nlo 1 2 3\n", "h\nh\nlo: 1 2 3\n", "h\nh\n: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n", "h\nh\nlo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 -1\n"} {
		if _, err := ParseDev(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseDev(%q) succeeded", bad)
		}
	}
}

func TestInterfacesHasLoopback(t *testing.T) {
	ifs, err := Interfaces("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Name == "lo" {
			return
		}
	}
	t.Fatalf("no lo in %+v", ifs)
}

func FuzzParseSockets(f *testing.F) {
	f.Add(tcpTable, "tcp")
	f.Add(tcp6Table, "tcp6")
	f.Add(udpTable, "udp")
	f.Fuzz(func(t *testing.T, table, proto string) {
		socks, err := ParseSockets(strings.NewReader(table), proto)
		if err != nil {
			return
		}
		for _, s := range socks {
			if !s.Local.IsValid() || !s.Remote.IsValid() || s.State == "" {
				t.Fatalf("accepted an invalid row: %+v", s)
			}
		}
	})
}

func FuzzParseDev(f *testing.F) {
	f.Add(devTable)
	f.Fuzz(func(t *testing.T, table string) {
		ifs, err := ParseDev(strings.NewReader(table))
		if err != nil {
			return
		}
		for _, i := range ifs {
			if i.Name == "" || strings.ContainsAny(i.Name, " \t:") {
				t.Fatalf("accepted a bad name %q", i.Name)
			}
		}
	})
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
