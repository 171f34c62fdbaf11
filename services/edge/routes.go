package edge

import (
	"bytes"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// route is one HTTP route, from the config file or from registry tags.
type route struct {
	name    string
	host    string // lower case, no port; "" matches any host
	prefix  string
	strip   bool
	headers [][2]string // canonical-insensitive name, exact value
	service string
	source  string // "config" or "registry"
	svc     *upService
	try     routeTry // per-route try settings from the config file

	mCode [6]prometheus.Counter // by status class: 0 = other, 1..5
	mDur  prometheus.Observer   // switchboard_edge_http_request_duration_seconds
	mUp   prometheus.Observer   // switchboard_edge_http_upstream_latency_seconds
}

// routeTry holds a route's overrides of --try-timeout and --hedge.
type routeTry struct {
	timeout    time.Duration
	setTimeout bool
	hedge      bool
	setHedge   bool
}

// routeTryOf returns the try overrides a config route asks for.
func routeTryOf(r *RouteConfig) routeTry {
	var t routeTry
	if r.TryTimeout != nil {
		t.timeout, t.setTimeout = time.Duration(*r.TryTimeout), true
	}
	if r.Hedge != nil {
		t.hedge, t.setHedge = *r.Hedge, true
	}
	return t
}

// routeTable is an immutable snapshot, swapped atomically.
type routeTable struct {
	byHost map[string][]*route // longest prefix first
	any    []*route            // host-less routes, longest prefix first
	all    []*route            // listing order
}

func newRouteTable(rs []*route) *routeTable {
	t := &routeTable{byHost: map[string][]*route{}}
	sorted := append([]*route(nil), rs...)
	// Longer prefixes first; at equal prefix, header-constrained routes
	// first, then config before registry, then by name.
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if len(a.prefix) != len(b.prefix) {
			return len(a.prefix) > len(b.prefix)
		}
		if len(a.headers) != len(b.headers) {
			return len(a.headers) > len(b.headers)
		}
		if a.source != b.source {
			return a.source == "config"
		}
		return a.name < b.name
	})
	for _, r := range sorted {
		if r.host == "" {
			t.any = append(t.any, r)
		} else {
			t.byHost[r.host] = append(t.byHost[r.host], r)
		}
	}
	hosts := make([]string, 0, len(t.byHost))
	for h := range t.byHost {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		t.all = append(t.all, t.byHost[h]...)
	}
	t.all = append(t.all, t.any...)
	return t
}

// headerGetter returns the first value of a header (case-insensitive name).
type headerGetter func(name string) ([]byte, bool)

// match finds the route for host (already lower-cased, port removed) and
// path. It does not allocate.
func (t *routeTable) match(host, path []byte, hdr headerGetter) *route {
	if rs, ok := t.byHost[string(host)]; ok {
		if r := matchList(rs, path, hdr); r != nil {
			return r
		}
	}
	return matchList(t.any, path, hdr)
}

func matchList(rs []*route, path []byte, hdr headerGetter) *route {
	for _, r := range rs {
		if !hasPathPrefix(path, r.prefix) {
			continue
		}
		ok := true
		for _, h := range r.headers {
			v, found := hdr(h[0])
			if !found || string(v) != h[1] {
				ok = false
				break
			}
		}
		if ok {
			return r
		}
	}
	return nil
}

// hasPathPrefix reports whether path is under prefix: "/api" matches
// "/api", "/api/x" and "/api?q" but not "/apix"; a prefix ending in "/"
// matches anything below it.
func hasPathPrefix(path []byte, prefix string) bool {
	if len(path) < len(prefix) || string(path[:len(prefix)]) != prefix {
		return false
	}
	if len(path) == len(prefix) || strings.HasSuffix(prefix, "/") {
		return true
	}
	c := path[len(prefix)]
	return c == '/' || c == '?'
}

// stripPath removes the route's prefix from target, keeping a leading "/".
func (r *route) stripPath(target []byte, dst []byte) []byte {
	rest := target[len(r.prefix):]
	if len(rest) == 0 || rest[0] != '/' {
		dst = append(dst, '/')
	}
	return append(dst, rest...)
}

// parseRouteTag parses a registry tag "edge.route=host/path" (or
// "edge.route=/path" for any host).
func parseRouteTag(tag string) (host, prefix string, ok bool) {
	v, found := strings.CutPrefix(tag, "edge.route=")
	if !found || v == "" {
		return "", "", false
	}
	i := strings.IndexByte(v, '/')
	if i < 0 {
		return strings.ToLower(v), "/", true
	}
	host, prefix = strings.ToLower(v[:i]), v[i:]
	if host == "*" {
		host = ""
	}
	return host, prefix, true
}

// normHost lower-cases host and drops a port, in place.
func normHost(h []byte) []byte {
	if len(h) > 0 && h[0] == '[' { // IPv6 literal
		if i := bytes.IndexByte(h, ']'); i > 0 {
			h = h[:i+1]
		}
	} else if i := bytes.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	for i, c := range h {
		if 'A' <= c && c <= 'Z' {
			h[i] = c + 'a' - 'A'
		}
	}
	return h
}
