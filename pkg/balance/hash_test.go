package balance

import (
	"net/http"
	"net/netip"
	"testing"
)

// Golden values: these hashes place keys and build Maglev tables in every
// process, so they must never change.
func TestHashStable(t *testing.T) {
	// FNV-1a 64 then the finalizer, computed independently.
	golden := map[string]uint64{
		"":            0xefd01f60ba992926,
		"user-1":      0x41a2fca5c68401c5,
		"10.0.0.1:80": 0x5ed8f8275e47a14a,
	}
	for in, want := range golden {
		got := HashString(in)
		if got != want {
			t.Errorf("HashString(%q) = %#x, want %#x", in, got, want)
		}
		if b := HashBytes([]byte(in)); b != got {
			t.Errorf("HashBytes(%q) = %#x, HashString %#x", in, b, got)
		}
	}
}

func TestHashAddrMapped(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.7")
	b := netip.MustParseAddr("::ffff:192.0.2.7")
	if HashAddr(a) != HashAddr(b) {
		t.Fatal("IPv4 and its IPv4-mapped IPv6 form hash differently")
	}
	if HashAddr(a) == HashAddr(netip.MustParseAddr("192.0.2.8")) {
		t.Fatal("neighbouring addresses collide")
	}
}

func TestParseHashOn(t *testing.T) {
	tests := []struct {
		in   string
		want HashOn
		ok   bool
	}{
		{"client_ip", HashOn{Source: HashClientIP}, true},
		{"header:x-user-id", HashOn{Source: HashHeader, Name: "X-User-Id"}, true},
		{"cookie:session", HashOn{Source: HashCookie, Name: "session"}, true},
		{"header:", HashOn{}, false},
		{"cookie:a b", HashOn{}, false},
		{"header:bad:name", HashOn{}, false},
		{"query:x", HashOn{}, false},
		{"", HashOn{}, false},
	}
	for _, tc := range tests {
		got, err := ParseHashOn(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseHashOn(%q) = %+v, %v; want %+v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err == nil {
			if back, _ := ParseHashOn(got.String()); back != got {
				t.Errorf("round trip of %q via %q gave %+v", tc.in, got.String(), back)
			}
		}
	}
}

func TestHashOnRequest(t *testing.T) {
	r, _ := http.NewRequest("GET", "http://x/", nil)
	r.RemoteAddr = "192.0.2.7:5555"
	r.Header.Set("X-User-Id", "alice")
	r.Header.Add("Cookie", "theme=dark; session=abc123; x=1")
	tests := []struct {
		on   string
		want uint64
		ok   bool
	}{
		{"client_ip", HashAddr(netip.MustParseAddr("192.0.2.7")), true},
		{"header:X-User-Id", HashString("alice"), true},
		{"header:X-Missing", 0, false},
		{"cookie:session", HashString("abc123"), true},
		{"cookie:sess", 0, false},
	}
	for _, tc := range tests {
		h, _ := ParseHashOn(tc.on)
		got, ok := h.Hash(r)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: got %#x,%v want %#x,%v", tc.on, got, ok, tc.want, tc.ok)
		}
		if n := testing.AllocsPerRun(100, func() { h.Hash(r) }); n != 0 {
			t.Errorf("%s: Hash allocates %.0f times", tc.on, n)
		}
	}
	// Same client on another port: same key.
	h, _ := ParseHashOn("client_ip")
	a, _ := h.Hash(r)
	r.RemoteAddr = "192.0.2.7:6000"
	if b, _ := h.Hash(r); a != b {
		t.Error("client_ip hash depends on the port")
	}
}

func FuzzParseHashOn(f *testing.F) {
	for _, s := range []string{"client_ip", "header:X-A", "cookie:s", "header:", "cookie:a=b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseHashOn(s)
		if err != nil {
			return
		}
		back, err := ParseHashOn(h.String())
		if err != nil || back != h {
			t.Fatalf("%q parsed to %+v, whose String %q parses to %+v, %v", s, h, h.String(), back, err)
		}
	})
}

func FuzzCookieValue(f *testing.F) {
	f.Add("a=1; session=x; b", "session")
	f.Add(";;=;", "")
	f.Fuzz(func(t *testing.T, line, name string) {
		v, ok := CookieValue(line, name)
		if !ok && v != "" {
			t.Fatalf("not found but value %q", v)
		}
		if ok && len(v) > len(line) {
			t.Fatalf("value %q longer than line %q", v, line)
		}
	})
}

func newBenchRequest() *http.Request {
	r, _ := http.NewRequest("GET", "http://x/", nil)
	r.RemoteAddr = "192.0.2.7:5555"
	r.Header.Set("X-User-Id", "alice-0123456789")
	r.Header.Add("Cookie", "theme=dark; session=abc123def456; x=1")
	return r
}
