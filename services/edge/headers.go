package edge

import (
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// The headers a request carries to its backend, written once for every
// protocol. The HTTP/1.1 fast path writes them straight into the upstream
// connection's buffer (writeUpstreamHead, allocation-free); HTTP/2 and
// gRPC build an http.Header (upstreamHeader). Both take their values from
// the appenders below:
//
//   - X-Forwarded-For: the client's list, with the client's address appended
//   - X-Forwarded-Proto: http or https (the client's connection to the edge)
//   - X-Forwarded-Host: the Host (HTTP/2: :authority) the client asked for
//   - Forwarded (RFC 7239): the client's list, with
//     for=<client>;host="<host>";proto=<scheme> appended
//   - hop-by-hop headers removed (Connection and what it names,
//     Keep-Alive, Proxy-Connection, TE except "trailers",
//     Transfer-Encoding, Upgrade, Proxy-Authorization, Proxy-Authenticate)
//   - a route's strip_prefix cut from the raw (still encoded) target

// fwdOrigin is what the forwarding headers say about a request's client.
type fwdOrigin struct {
	ip   []byte // the client's address, as text
	is6  bool
	host []byte // the Host the client asked for; empty when none
	tls  bool   // the client's connection to the edge is TLS
}

func (o *fwdOrigin) scheme() string {
	if o.tls {
		return "https"
	}
	return "http"
}

// appendXFF appends the X-Forwarded-For value: the client's list prior
// (all its X-Forwarded-For fields joined), then the client's address.
func (o *fwdOrigin) appendXFF(dst, prior []byte) []byte {
	if len(prior) > 0 {
		dst = append(dst, prior...)
		dst = append(dst, ", "...)
	}
	return append(dst, o.ip...)
}

// appendForwarded appends the Forwarded value: the client's list prior,
// then this hop's element.
func (o *fwdOrigin) appendForwarded(dst, prior []byte) []byte {
	if len(prior) > 0 {
		dst = append(dst, prior...)
		dst = append(dst, ", "...)
	}
	dst = append(dst, "for="...)
	if o.is6 {
		dst = append(dst, `"[`...)
		dst = append(dst, o.ip...)
		dst = append(dst, `]"`...)
	} else {
		dst = append(dst, o.ip...)
	}
	if len(o.host) > 0 {
		dst = append(dst, `;host="`...)
		dst = append(dst, o.host...)
		dst = append(dst, '"')
	}
	dst = append(dst, ";proto="...)
	return append(dst, o.scheme()...)
}

// originOf returns the forwarding origin of a request served by net/http.
func originOf(r *http.Request) fwdOrigin {
	o := fwdOrigin{host: []byte(r.Host), tls: r.TLS != nil}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		a := ap.Addr().Unmap()
		o.ip, o.is6 = a.AppendTo(nil), a.Is6()
	} else {
		o.ip = []byte(r.RemoteAddr)
	}
	return o
}

// hopHeaders are removed from requests and responses on HTTP/2 and gRPC
// (the fast path classifies them when parsing: isHopByHop). TE is handled
// on its own: only "trailers" goes on.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding",
	"Upgrade", "Proxy-Authorization", "Proxy-Authenticate"}

// removeHopHeaders removes the hop-by-hop headers from h, and TE unless
// it asks for trailers (then it becomes "TE: trailers").
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
	if te, ok := h["Te"]; ok {
		delete(h, "Te")
		for _, v := range te {
			for _, x := range strings.Split(v, ",") {
				if strings.EqualFold(strings.TrimSpace(x), "trailers") {
					h["Te"] = []string{"trailers"}
				}
			}
		}
	}
}

// upstreamHeader returns the header of the request sent to the backend
// for in (HTTP/2 and gRPC): in's fields without hop-by-hop ones, with the
// forwarding headers of o.
func upstreamHeader(in http.Header, o *fwdOrigin) http.Header {
	h := make(http.Header, len(in)+4)
	for k, v := range in {
		h[k] = v // values are not modified, only replaced
	}
	removeHopHeaders(h)
	// The edge answers "Expect: 100-continue" itself (net/http's server
	// does, on the first read of the body), as the fast path does.
	delete(h, "Expect")
	xff := o.appendXFF(nil, joinValues(h["X-Forwarded-For"]))
	fwd := o.appendForwarded(nil, joinValues(h["Forwarded"]))
	h["X-Forwarded-For"] = []string{string(xff)}
	h["X-Forwarded-Proto"] = []string{o.scheme()}
	if len(o.host) > 0 {
		h["X-Forwarded-Host"] = []string{string(o.host)}
	} else {
		delete(h, "X-Forwarded-Host")
	}
	h["Forwarded"] = []string{string(fwd)}
	return h
}

// joinValues joins a header's field values as one list ("a, b").
func joinValues(v []string) []byte {
	var b []byte
	for i, x := range v {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, x...)
	}
	return b
}

// upstreamURL returns the URL of a request to addr for the raw request
// target (origin form, still percent-encoded), with rt's prefix cut when
// it strips. The target goes to the backend as the client encoded it:
// "%2F" stays "%2F" (decoding it first would turn /x/..%2F..%2Fadmin
// into /x/../../admin, another resource). Only bytes that may not appear
// in a request target (a space, say, which HTTP/2 lets through in :path)
// are percent-encoded, so the backend always gets a well-formed request
// line.
func upstreamURL(rt *route, target, addr string) *url.URL {
	if rt.strip {
		target = string(rt.stripPath([]byte(target), nil))
	}
	path, query, hasQuery := strings.Cut(target, "?")
	path = escapeTarget(path, false)
	u := &url.URL{Scheme: "http", Host: addr, RawPath: path, RawQuery: escapeTarget(query, true), ForceQuery: hasQuery && query == ""}
	u.Path, _ = url.PathUnescape(path) // valid: escapeTarget made it so
	return u
}

// escapeTarget percent-encodes the bytes of a target's path (or, with
// query, its query) that RFC 3986 does not allow there, keeping valid
// %XX escapes as they are; a '%' not followed by two hex digits is
// encoded as %25.
func escapeTarget(s string, query bool) string {
	ok := true
	for i := 0; i < len(s) && ok; i++ {
		ok = targetByteOK(s, i, query)
	}
	if ok {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+16)
	for i := 0; i < len(s); i++ {
		if targetByteOK(s, i, query) {
			b = append(b, s[i])
		} else {
			b = append(b, '%', hex[s[i]>>4], hex[s[i]&15])
		}
	}
	return string(b)
}

// targetByteOK reports whether s[i] may stand as it is in a path
// (pchar and "/") or a query (pchar, "/" and "?").
func targetByteOK(s string, i int, query bool) bool {
	c := s[i]
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c == '%':
		return i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2])
	case c == '?':
		return query
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@/", c) >= 0
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
