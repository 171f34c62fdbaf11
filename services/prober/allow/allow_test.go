package allow

import (
	"context"
	"errors"
	"net"
	"net/netip"
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
