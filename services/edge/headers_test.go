package edge

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// wellFormed matches an origin-form target (RFC 3986 path and query).
var wellFormed = regexp.MustCompile(`^/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*$`)

// FuzzUpstreamURL checks the HTTP/2 path's upstream target: the backend
// gets the client's raw target with the route's prefix cut (the fast
// path's stripPath), never decoded; only bytes a target may not hold are
// percent-encoded, so a well-formed target goes on exactly as it came.
func FuzzUpstreamURL(f *testing.F) {
	for _, s := range []string{"/strip/x/..%2F..%2Fadmin?q=%2F", "/strip", "/strip?", "/strip/a%zz", "/strip//evil.example/x",
		"/strip/%E2%82%AC?a=b&c", "/strip/a b", "/other/x", "/"} {
		f.Add(s, true)
		f.Add(s, false)
		f.Add(s+" x", false)
	}
	f.Fuzz(func(t *testing.T, target string, strip bool) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, "#\x00\r\n") {
			return // not an origin-form target net/http's server would pass on
		}
		rt := &route{prefix: "/strip", strip: strip}
		want := target
		if strip {
			if !hasPathPrefix([]byte(target), rt.prefix) {
				return // the route would not match
			}
			want = string(rt.stripPath([]byte(target), nil))
		}
		u := upstreamURL(rt, target, "127.0.0.1:1")
		got := u.RequestURI()
		if !wellFormed.MatchString(want) {
			// Not a well-formed target: the backend gets it encoded.
			if !wellFormed.MatchString(got) {
				t.Fatalf("target %q: backend gets %q, not a well-formed target", target, got)
			}
			return
		}
		if got != want {
			t.Fatalf("target %q (strip %v): backend gets %q, want %q", target, strip, got, want)
		}
		if u.Host != "127.0.0.1:1" || u.Scheme != "http" {
			t.Fatalf("target %q: URL %v", target, u)
		}
	})
}

// TestUpstreamHeader checks the HTTP/2 path's forwarding headers against
// the values the fast path writes (one set of appenders for both).
func TestUpstreamHeader(t *testing.T) {
	in := http.Header{
		"X-Forwarded-For": {"203.0.113.7", "198.51.100.2"},
		"Forwarded":       {"for=203.0.113.7"},
		"Connection":      {"X-Hop, close"},
		"X-Hop":           {"1"},
		"Keep-Alive":      {"timeout=5"},
		"Te":              {"trailers, deflate"},
		"Expect":          {"100-continue"},
		"X-End":           {"kept"},
	}
	for _, tc := range []struct {
		o                      fwdOrigin
		xff, fwd, proto, xhost string
	}{
		{fwdOrigin{ip: []byte("10.0.0.7"), host: []byte("example.com"), tls: true},
			"203.0.113.7, 198.51.100.2, 10.0.0.7", `for=203.0.113.7, for=10.0.0.7;host="example.com";proto=https`, "https", "example.com"},
		{fwdOrigin{ip: []byte("2001:db8::1"), is6: true},
			"203.0.113.7, 198.51.100.2, 2001:db8::1", `for=203.0.113.7, for="[2001:db8::1]";proto=http`, "http", ""},
	} {
		h := upstreamHeader(in, &tc.o)
		for k, want := range map[string]string{"X-Forwarded-For": tc.xff, "Forwarded": tc.fwd,
			"X-Forwarded-Proto": tc.proto, "X-Forwarded-Host": tc.xhost, "Te": "trailers", "X-End": "kept",
			"X-Hop": "", "Keep-Alive": "", "Connection": "", "Expect": ""} {
			if got := strings.Join(h.Values(k), ", "); got != want {
				t.Errorf("%s: %s = %q, want %q", tc.o.ip, k, got, want)
			}
		}
		if got := string(tc.o.appendXFF(nil, []byte("203.0.113.7, 198.51.100.2"))); got != tc.xff {
			t.Errorf("fast path X-Forwarded-For %q, want %q", got, tc.xff)
		}
	}
	if in.Get("X-Hop") != "1" || len(in["X-Forwarded-For"]) != 2 {
		t.Errorf("the client's header was modified: %v", in)
	}
}
