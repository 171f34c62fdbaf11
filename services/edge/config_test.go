package edge

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestConfigErrorMessages: each mistake is one line naming the line and
// the field in the file's terms, never a Go type or a YAML tag.
func TestConfigErrorMessages(t *testing.T) {
	policies := "(want one of consistent_hash, least_conn, p2c, random, round_robin, weighted_round_robin)"
	routeFields := "(want one of name, host, path_prefix, strip_prefix, headers, service, addresses, policy, try_timeout, hedge)"
	for _, tc := range []struct{ name, in, want string }{
		// Syntax: yaml.v3 itself says line 1 for the first two.
		{"misindented key", "routes:\n  - name: a\n    host: b\n   path_prefix: /x\n", "line 4: did not find expected '-' indicator"},
		{"key at the list's level", "routes:\n  - name: a\n    service: web\n  host: b\n", "line 4: did not find expected '-' indicator"},
		{"tab", "routes:\n  - name: a\n\thost: b\n", "line 3: found a tab character that violates indentation"},
		{"unclosed flow list", "routes:\n  - name: a\n    addresses: [b\n", "line 3: did not find expected ',' or ']'"},
		{"two colons", "a: b: c\n", "line 1: mapping values are not allowed in this context"},
		{"json syntax", "{\n  \"routes\": [\n    {\"name\": \"a\", \"service\": \"b\"},\n    {\"name\": \"c\" \"service\": \"d\"}\n  ]\n}\n",
			"line 4: invalid character '\"' after object key:value pair"},
		// Shape.
		{"unknown top-level field", "routes: []\nbogus: 1\n", "line 2: bogus: unknown field (want one of routes, tcp, udp, services, allow_loopback)"},
		{"unknown route field", "routes:\n  - name: a\n    service: web\n    polcy: x\n", "line 4: routes[0].polcy: unknown field " + routeFields},
		{"json unknown field", "{\n  \"routes\": [\n    {\"name\": \"a\", \"service\": \"b\"},\n    {\"name\": \"c\", \"servic\": \"d\"}\n  ]\n}\n",
			"line 4: routes[1].servic: unknown field " + routeFields},
		{"bool", "routes:\n  - name: a\n    service: web\n    strip_prefix: yes please\n", `line 4: routes[0].strip_prefix: want true or false, got "yes please"`},
		{"int", "tcp:\n  - listen: \":1\"\n    service: a\n    socket_buffer: lots\n", `line 4: tcp[0].socket_buffer: want a whole number, got "lots"`},
		{"list wanted", "routes: {name: a}\n", "line 1: routes: want a list, got a mapping"},
		{"mapping wanted", "routes:\n  - web\n", `line 2: routes[0]: want a mapping with name, host, path_prefix, strip_prefix, headers, service, addresses, policy, try_timeout, hedge, got "web"`},
		{"string wanted", "routes:\n  - name: [a]\n    service: web\n", "line 2: routes[0].name: want a string, got a list"},
		{"service addresses not a list", "services:\n  web: 1.2.3.4:5\n", `line 2: services.web: want a list, got "1.2.3.4:5"`},
		{"duration", "routes:\n  - name: a\n    service: web\n    try_timeout: soon\n", `line 4: routes[0].try_timeout: invalid duration "soon" (want a number with a unit: 250ms, 1.5s, 1h)`},
		{"key twice", "routes:\n  - name: a\n    service: web\n    name: b\n", "line 4: routes[0].name: set twice (first on line 2)"},
		// Validation, located.
		{"unknown policy", "routes:\n  - name: a\n    addresses: [\"1.2.3.4:5\"]\n    policy: leastconn\n", `line 4: routes[0].policy: unknown policy "leastconn" ` + policies},
		{"unknown policy on a service route", "routes:\n  - name: a\n    service: web\n    policy: leastconn\n", `line 4: routes[0].policy: unknown policy "leastconn" ` + policies},
		{"policy on a service route", "routes:\n  - name: a\n    service: web\n    policy: least_conn\n", `line 4: routes[0].policy: applies to addresses only; the policy of service "web" is set in the balancer`},
		{"duplicate route name", "routes:\n  - name: a\n    service: web\n  - name: a\n    service: web\n", `line 4: routes[1].name: duplicate "a"`},
		{"no target", "routes:\n  - name: a\n", "line 2: routes[0]: exactly one of service and addresses must be set"},
		{"bad service address", "services:\n  web:\n    - 1.2.3.4:5\n    - nope\n", `line 4: services.web[1]: want host:port, got "nope" (missing port in address)`},
		{"address twice", "routes:\n  - name: a\n    addresses:\n      - 1.2.3.4:5\n      - 1.2.3.4:5\n", `line 5: routes[0].addresses[1]: "1.2.3.4:5" is listed twice (also routes[0].addresses[0])`},
		{"service name with a dot", "services:\n  web.v2: [\"1.2.3.4:5\"]\n  a:b: [\"1.2.3.4:5\"]\n", "line 3: services.a:b: a service name has no spaces, colons or slashes"},
		{"path prefix", "routes:\n  - service: a\n    path_prefix: x\n", `line 3: routes[0].path_prefix: must start with /, got "x"`},
		{"tcp listen", "tcp:\n  - {listen: x, service: a}\n", `line 2: tcp[0].listen: want host:port, got "x" (missing port in address)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.in))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.in)
			}
			if got := err.Error(); got != tc.want {
				t.Fatalf("error\n %s\nwant\n %s", got, tc.want)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\n") || strings.Contains(msg, "edge.") || strings.Contains(msg, "!!") {
				t.Fatalf("error %q is not one line in the file's terms", msg)
			}
		})
	}
}

// TestLoadConfigNamesTheFile: errors from a file start with its path and
// line, as compilers' do.
func TestLoadConfigNamesTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "edge.yaml")
	os.WriteFile(p, []byte("routes:\n  - name: a\n    service: web\n  - name: b\n    service: web\n    policy: leastconn\n"), 0o644)
	_, err := LoadConfig(p)
	if err == nil || !strings.HasPrefix(err.Error(), p+`:6: routes[1].policy: unknown policy "leastconn"`) {
		t.Fatalf("got %v", err)
	}
}

// TestConfigAnchorsAndMerges: YAML anchors, aliases and merge keys work.
func TestConfigAnchorsAndMerges(t *testing.T) {
	c, err := ParseConfig([]byte("routes:\n  - &base {name: a, service: web, try_timeout: 1s}\n  - <<: *base\n    name: b\n    path_prefix: /b\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Routes) != 2 || c.Routes[1].Service != "web" || c.Routes[1].Name != "b" || time.Duration(*c.Routes[1].TryTimeout) != time.Second {
		t.Fatalf("routes: %+v", c.Routes)
	}
	if _, err := ParseConfig([]byte("routes:\n  - &base {name: a, service: web}\n  - <<: *base\n    name: b\n    bogus: 1\n")); err == nil ||
		err.Error() != "line 5: routes[1].bogus: unknown field (want one of name, host, path_prefix, strip_prefix, headers, service, addresses, policy, try_timeout, hedge)" {
		t.Fatalf("merge with an unknown field: %v", err)
	}

	// Aliases of aliases: ten merges a level, nine levels, a billion
	// mappings once expanded; refused quickly.
	var b strings.Builder
	b.WriteString("routes:\n  - &m0 {name: r0, service: s}\n")
	for i := 1; i < 10; i++ {
		refs := strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*m%d, ", i-1), 10), ", ")
		fmt.Fprintf(&b, "  - &m%d {<<: [%s], name: r%d}\n", i, refs, i)
	}
	if _, err := ParseConfig([]byte(b.String())); err == nil || !strings.Contains(err.Error(), "too many nodes once aliases are expanded") {
		t.Fatalf("alias bomb: %v", err)
	}
}

// TestKeepUnreloadable: what a reload cannot apply keeps its old value
// and is named; listener addresses apply.
func TestKeepUnreloadable(t *testing.T) {
	cur := &FileConfig{
		TCP:           []TCPConfig{{Listen: ":1", Addresses: []string{"a:1"}}, {Listen: ":2", Service: "db"}},
		UDP:           []UDPConfig{{Listen: ":3", Service: "dns"}},
		AllowLoopback: []string{"x"},
	}
	for _, tc := range []struct {
		name    string
		next    func(*FileConfig)
		pending []string
		check   func(*FileConfig) bool
	}{
		{"nothing", func(*FileConfig) {}, nil, nil},
		{"tcp addresses apply", func(f *FileConfig) { f.TCP[0].Addresses = []string{"b:1"} }, nil,
			func(e *FileConfig) bool { return e.TCP[0].Addresses[0] == "b:1" }},
		{"tcp listen", func(f *FileConfig) { f.TCP[0].Listen = ":9" }, []string{"tcp[0].listen changed"},
			func(e *FileConfig) bool { return e.TCP[0].Listen == ":1" }},
		{"tcp service to addresses", func(f *FileConfig) { f.TCP[1].Service, f.TCP[1].Addresses = "", []string{"c:1"} }, []string{"tcp[1].service changed"},
			func(e *FileConfig) bool { return e.TCP[1].Service == "db" && len(e.TCP[1].Addresses) == 0 }},
		{"tcp options", func(f *FileConfig) {
			f.TCP[0].ProxyProtocol, f.TCP[0].IdleTimeout, f.TCP[0].SocketBuffer = true, Duration(time.Minute), 4096
		}, []string{"tcp[0].proxy_protocol changed", "tcp[0].idle_timeout changed", "tcp[0].socket_buffer changed"},
			func(e *FileConfig) bool { return !e.TCP[0].ProxyProtocol && e.TCP[0].SocketBuffer == 0 }},
		{"tcp removed", func(f *FileConfig) { f.TCP = f.TCP[:1] }, []string{"tcp[1] removed"},
			func(e *FileConfig) bool { return len(e.TCP) == 2 }},
		{"udp added", func(f *FileConfig) { f.UDP = append(f.UDP, UDPConfig{Listen: ":4", Service: "x"}) }, []string{"udp[1] added"},
			func(e *FileConfig) bool { return len(e.UDP) == 1 }},
		{"udp options", func(f *FileConfig) { f.UDP[0].MaxFlows, f.UDP[0].Service = 5, "dns2" }, []string{"udp[0].service changed", "udp[0].max_flows changed"},
			func(e *FileConfig) bool { return e.UDP[0].Service == "dns" }},
		{"allow_loopback", func(f *FileConfig) { f.AllowLoopback = nil }, []string{"allow_loopback changed"},
			func(e *FileConfig) bool { return slices.Equal(e.AllowLoopback, []string{"x"}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := &FileConfig{TCP: slices.Clone(cur.TCP), UDP: slices.Clone(cur.UDP), AllowLoopback: slices.Clone(cur.AllowLoopback),
				Routes: []RouteConfig{{Name: "r", Service: "web"}}}
			tc.next(next)
			eff, pending := keepUnreloadable(cur, next)
			if !slices.Equal(pending, tc.pending) {
				t.Fatalf("pending %q, want %q", pending, tc.pending)
			}
			if len(eff.Routes) != 1 {
				t.Fatalf("routes not taken from the new file: %+v", eff.Routes)
			}
			if tc.check != nil && !tc.check(eff) {
				t.Fatalf("effective config %+v", eff)
			}
		})
	}
}
