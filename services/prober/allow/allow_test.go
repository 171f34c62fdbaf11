package allow

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

func TestResolve(t *testing.T) {
	l, err := Parse("loopback, 10.1.0.0/16, db.internal, *.lab.example, 192.0.2.7, registered")
	if err != nil {
		t.Fatal(err)
	}
	l.SetRegistered([]string{"198.51.100.3", "web.svc"})
	r := fakeResolver{
		"db.internal":    {netip.MustParseAddr("203.0.113.1")},
		"inside.example": {netip.MustParseAddr("10.1.2.3")},
		"mixed.example":  {netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("8.8.8.8")},
		"web.svc":        {netip.MustParseAddr("203.0.113.9")},
		"a.lab.example":  {netip.MustParseAddr("203.0.113.2")},
	}
	tests := []struct {
		host string
		ok   bool
	}{
		{"127.0.0.1", true}, {"127.9.9.9", true}, {"::1", true}, {"[::1]", true},
		{"10.1.255.255", true}, {"10.2.0.1", false}, {"192.0.2.7", true}, {"192.0.2.8", false},
		{"198.51.100.3", true}, {"198.51.100.4", false}, {"::ffff:10.1.0.1", true},
		{"db.internal", true}, {"inside.example", true}, {"mixed.example", false},
		{"web.svc", true}, {"a.lab.example", true}, {"8.8.8.8", false}, {"2001:db8::1", false},
	}
	for _, tt := range tests {
		_, err := l.Resolve(context.Background(), r, "ip", tt.host)
		if (err == nil) != tt.ok {
			t.Errorf("Resolve(%s) = %v, want allowed=%v", tt.host, err, tt.ok)
		}
		if !tt.ok && err != nil && !errors.Is(err, ErrDenied) {
			t.Errorf("Resolve(%s) = %v, want ErrDenied", tt.host, err)
		}
	}
}

// TestDynamicSetsNeverVouchForRestricted: the registered and peers sets
// do not make loopback, link-local, unspecified or multicast addresses
// permitted, by address or by a name resolving to one, unless a static
// rule allows them too.
func TestDynamicSetsNeverVouchForRestricted(t *testing.T) {
	dynamic := []string{
		"127.0.0.1", "::1", "0.0.0.0", "0.1.2.3", "::", "169.254.169.254", "fe80::1", "224.0.0.1", "::ffff:127.0.0.1",
		"localhost", "meta.example", "split.example", "public.example", "203.0.113.5",
	}
	r := fakeResolver{
		"localhost":      {netip.MustParseAddr("127.0.0.1")},
		"meta.example":   {netip.MustParseAddr("169.254.169.254")},
		"split.example":  {netip.MustParseAddr("203.0.113.6"), netip.MustParseAddr("127.0.0.2")},
		"public.example": {netip.MustParseAddr("203.0.113.7")},
	}
	tests := []struct {
		rules string
		host  string
		ok    bool
	}{
		{"registered", "127.0.0.1", false},
		{"registered", "::1", false},
		{"registered", "::ffff:127.0.0.1", false},
		{"registered", "0.0.0.0", false},
		{"registered", "0.1.2.3", false},
		{"registered", "::", false},
		{"registered", "169.254.169.254", false},
		{"registered", "fe80::1", false},
		{"registered", "224.0.0.1", false},
		{"registered", "localhost", false},
		{"registered", "meta.example", false},
		{"registered", "split.example", false},
		{"registered", "public.example", true},
		{"registered", "203.0.113.5", true},
		{"peers", "127.0.0.1", false},
		{"peers", "203.0.113.5", true},
		{"203.0.113.0/24", "203.0.113.5", true}, // static, without registered
		{"10.0.0.0/8", "public.example", false},
		// A static rule still allows what it names.
		{"registered,loopback", "127.0.0.1", true},
		{"registered,loopback", "localhost", true},
		{"registered,loopback", "split.example", true},
		{"registered,169.254.169.254", "meta.example", true},
		{"registered,169.254.169.254", "169.254.169.254", true},
		{"meta.example", "meta.example", true},
		{"any", "0.0.0.0", true},
	}
	for _, tt := range tests {
		l, err := Parse(tt.rules)
		if err != nil {
			t.Fatal(err)
		}
		l.SetRegistered(dynamic)
		l.SetPeers(dynamic)
		_, err = l.Resolve(context.Background(), r, "ip", tt.host)
		if (err == nil) != tt.ok {
			t.Errorf("--allow=%s: Resolve(%s) = %v, want allowed=%v", tt.rules, tt.host, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrDenied) {
			t.Errorf("--allow=%s: Resolve(%s) = %v, want ErrDenied", tt.rules, tt.host, err)
		}
	}
}

// TestVerifyNamesTheEntry: a host name rule that does not resolve (a typo
// of a keyword, say) is an error naming it.
func TestVerifyNamesTheEntry(t *testing.T) {
	r := fakeResolver{"db.internal": {netip.MustParseAddr("203.0.113.1")}}
	for _, tt := range []struct {
		rules, bad string
	}{
		{"loopback,registered,db.internal,*.lab.example,10.0.0.0/8,192.0.2.1,peers,any", ""},
		{"loopbak", "loopbak"},
		{"loopback,db.internal,registerd", "registerd"},
	} {
		l, err := Parse(tt.rules)
		if err != nil {
			t.Fatal(err)
		}
		err = l.Verify(context.Background(), r)
		switch {
		case tt.bad == "" && err != nil:
			t.Errorf("Verify(%s) = %v", tt.rules, err)
		case tt.bad != "" && (err == nil || !strings.Contains(err.Error(), strconv.Quote(tt.bad))):
			t.Errorf("Verify(%s) = %v, want an error naming %q", tt.rules, err, tt.bad)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, bad := range []string{"10.0.0.0/33", "not a host", "*.", "a..b"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
}

// TestDialRefusesBeforeConnecting shows a denied address never sees a
// connection attempt: a listener on 127.0.0.2 stays silent.
func TestDialRefusesBeforeConnecting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skip("127.0.0.2 not usable:", err)
	}
	defer ln.Close()
	l, _ := Parse("127.0.0.1/32")
	dial := l.DialContext(&net.Dialer{})
	if _, err := dial(context.Background(), "tcp", ln.Addr().String()); !errors.Is(err, ErrDenied) {
		t.Fatalf("dial = %v, want ErrDenied", err)
	}
	l2, _ := Parse("127.0.0.0/8")
	c, err := l2.DialContext(&net.Dialer{})(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
