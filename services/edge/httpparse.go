package edge

import (
	"bufio"
	"errors"
	"fmt"
)

// Parsing of HTTP/1.x message heads for the fast path. A head is copied
// into a per-connection buffer; fields are spans into it, so parsing does
// not allocate once the buffers have grown.

var (
	errHeadTooLarge = errors.New("header section too large")
	errMalformed    = errors.New("malformed message")
)

type span struct{ s, e int32 }

func (sp span) of(b []byte) []byte { return b[sp.s:sp.e] }

// Header kinds the proxy treats specially.
const (
	hkOther uint8 = iota
	hkHost
	hkContentLength
	hkTransferEncoding
	hkConnection
	hkKeepAlive
	hkProxyConnection
	hkTE
	hkUpgrade
	hkExpect
	hkXFF
	hkXFProto
	hkXFHost
	hkForwarded
	hkProxyAuthorization
	hkProxyAuthenticate
	hkTraceparent
	hkTracestate
	hkTrailer
)

type hdrSpan struct {
	name, val span
	kind      uint8
}

// head is a parsed request or response head.
type head struct {
	buf  []byte
	l1   span // method or version
	l2   span // target or status code
	l3   span // version or reason
	hdrs []hdrSpan

	contentLength int64 // -1 when absent
	chunked       bool
	teOther       bool // a transfer coding other than chunked
	connClose     bool
	connKeepAlive bool
	connUpgrade   bool
	expect100     bool
	badHeader     bool // conflicting framing headers
	connTokens    []span
}

func (h *head) reset() {
	h.buf = h.buf[:0]
	h.hdrs = h.hdrs[:0]
	h.connTokens = h.connTokens[:0]
	h.contentLength = -1
	h.chunked, h.teOther, h.connClose, h.connKeepAlive, h.connUpgrade, h.expect100, h.badHeader = false, false, false, false, false, false, false
}

// readHead reads a head (start line to the empty line) into h.buf, bounded
// by max bytes. It returns io.EOF when the connection closed before any
// byte.
func (h *head) readHead(br *bufio.Reader, max int) error {
	h.reset()
	lineStart := 0
	for {
		line, err := br.ReadSlice('\n')
		if len(h.buf)+len(line) > max {
			return errHeadTooLarge
		}
		h.buf = append(h.buf, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if len(h.buf) == 0 {
				return err
			}
			return fmt.Errorf("%w: %w", errMalformed, err)
		}
		ln := h.buf[lineStart:]
		empty := len(ln) == 1 || (len(ln) == 2 && ln[0] == '\r')
		if empty && lineStart == 0 {
			// Empty lines before a request line are ignored (RFC 9112 2.2).
			h.buf = h.buf[:0]
			continue
		}
		if empty {
			return nil
		}
		lineStart = len(h.buf)
	}
}

// parse splits the head into its start line and header fields.
func (h *head) parse(request bool) error {
	b := h.buf
	i := 0
	nextLine := func() (span, bool) {
		for j := i; j < len(b); j++ {
			if b[j] == '\n' {
				e := j
				if e > i && b[e-1] == '\r' {
					e--
				}
				sp := span{int32(i), int32(e)}
				i = j + 1
				return sp, true
			}
		}
		return span{}, false
	}
	first, ok := nextLine()
	if !ok {
		return errMalformed
	}
	if err := h.parseStart(first, request); err != nil {
		return err
	}
	for {
		ln, ok := nextLine()
		if !ok {
			return errMalformed
		}
		if ln.s == ln.e {
			return nil
		}
		line := ln.of(b)
		if line[0] == ' ' || line[0] == '\t' {
			return errMalformed // obsolete line folding
		}
		c := indexByte(line, ':')
		if c <= 0 {
			return errMalformed
		}
		for _, ch := range line[:c] {
			if !isTokenChar(ch) {
				return errMalformed
			}
		}
		vs, ve := c+1, len(line)
		for vs < ve && (line[vs] == ' ' || line[vs] == '\t') {
			vs++
		}
		for ve > vs && (line[ve-1] == ' ' || line[ve-1] == '\t') {
			ve--
		}
		for _, ch := range line[vs:ve] {
			if (ch < ' ' && ch != '\t') || ch == 0x7f {
				return errMalformed
			}
		}
		hs := hdrSpan{name: span{ln.s, ln.s + int32(c)}, val: span{ln.s + int32(vs), ln.s + int32(ve)}}
		hs.kind = headerKind(line[:c])
		if err := h.note(&hs); err != nil {
			return err
		}
		h.hdrs = append(h.hdrs, hs)
	}
}

func (h *head) parseStart(ln span, request bool) error {
	line := ln.of(h.buf)
	a := indexByte(line, ' ')
	if a <= 0 {
		return errMalformed
	}
	rest := line[a+1:]
	b := indexByte(rest, ' ')
	if request {
		if b <= 0 || indexByte(rest[b+1:], ' ') >= 0 {
			return errMalformed
		}
		for _, ch := range line[:a] {
			if !isTokenChar(ch) {
				return errMalformed
			}
		}
		for _, ch := range rest[:b] {
			if ch <= ' ' || ch == 0x7f {
				return errMalformed
			}
		}
		h.l1 = span{ln.s, ln.s + int32(a)}
		h.l2 = span{ln.s + int32(a+1), ln.s + int32(a+1+b)}
		h.l3 = span{ln.s + int32(a+2+b), ln.e}
		v := h.l3.of(h.buf)
		if len(v) != 8 || string(v[:7]) != "HTTP/1." || (v[7] != '0' && v[7] != '1') {
			if string(v) == "HTTP/2.0" {
				return nil // h2c preface; the caller checks
			}
			return errMalformed
		}
		return nil
	}
	// Response: HTTP/1.x SP code [SP reason]
	h.l1 = span{ln.s, ln.s + int32(a)}
	if b < 0 {
		b = len(rest)
	}
	h.l2 = span{ln.s + int32(a+1), ln.s + int32(a+1+b)}
	if a+2+b <= len(line) {
		h.l3 = span{ln.s + int32(a+2+b), ln.e}
	} else {
		h.l3 = span{ln.e, ln.e}
	}
	v := h.l1.of(h.buf)
	code := h.l2.of(h.buf)
	if len(v) != 8 || string(v[:7]) != "HTTP/1." || len(code) != 3 {
		return errMalformed
	}
	for _, c := range code {
		if c < '0' || c > '9' {
			return errMalformed
		}
	}
	return nil
}

// note records what a header means for framing and connection handling.
func (h *head) note(hs *hdrSpan) error {
	v := hs.val.of(h.buf)
	switch hs.kind {
	case hkContentLength:
		n, ok := parseDecimal(v)
		if !ok {
			return errMalformed
		}
		if h.contentLength >= 0 && h.contentLength != n {
			return errMalformed
		}
		h.contentLength = n
	case hkTransferEncoding:
		// Only "chunked" as the final (and here, only) coding is accepted.
		if eqFold(trimOWS(v), "chunked") {
			if h.chunked {
				h.teOther = true
			}
			h.chunked = true
		} else {
			h.teOther = true
		}
	case hkConnection:
		forEachToken(v, func(s, e int) {
			t := v[s:e]
			switch {
			case eqFold(t, "close"):
				h.connClose = true
			case eqFold(t, "keep-alive"):
				h.connKeepAlive = true
			case eqFold(t, "upgrade"):
				h.connUpgrade = true
			default:
				h.connTokens = append(h.connTokens, span{hs.val.s + int32(s), hs.val.s + int32(e)})
			}
		})
	case hkExpect:
		if eqFold(v, "100-continue") {
			h.expect100 = true
		}
	}
	return nil
}

// setHost makes every Host header field's value sp, a span of the head
// (an absolute-form target's authority).
func (h *head) setHost(sp span) {
	for i := range h.hdrs {
		if h.hdrs[i].kind == hkHost {
			h.hdrs[i].val = sp
		}
	}
}

// inConnTokens reports whether name was listed in a Connection header.
func (h *head) inConnTokens(name []byte) bool {
	for _, t := range h.connTokens {
		if eqFoldBytes(name, t.of(h.buf)) {
			return true
		}
	}
	return false
}

// get returns the first value of the named header (lower-case name).
func (h *head) get(lname string) ([]byte, bool) {
	for i := range h.hdrs {
		if eqFold(h.hdrs[i].name.of(h.buf), lname) {
			return h.hdrs[i].val.of(h.buf), true
		}
	}
	return nil, false
}

func (h *head) getKind(k uint8) ([]byte, bool) {
	for i := range h.hdrs {
		if h.hdrs[i].kind == k {
			return h.hdrs[i].val.of(h.buf), true
		}
	}
	return nil, false
}

func headerKind(n []byte) uint8 {
	switch len(n) {
	case 2:
		if eqFold(n, "te") {
			return hkTE
		}
	case 4:
		if eqFold(n, "host") {
			return hkHost
		}
	case 6:
		if eqFold(n, "expect") {
			return hkExpect
		}
	case 7:
		if eqFold(n, "upgrade") {
			return hkUpgrade
		}
		if eqFold(n, "trailer") {
			return hkTrailer
		}
	case 9:
		if eqFold(n, "forwarded") {
			return hkForwarded
		}
	case 10:
		if eqFold(n, "connection") {
			return hkConnection
		}
		if eqFold(n, "keep-alive") {
			return hkKeepAlive
		}
		if eqFold(n, "tracestate") {
			return hkTracestate
		}
	case 11:
		if eqFold(n, "traceparent") {
			return hkTraceparent
		}
	case 14:
		if eqFold(n, "content-length") {
			return hkContentLength
		}
	case 15:
		if eqFold(n, "x-forwarded-for") {
			return hkXFF
		}
	case 16:
		if eqFold(n, "proxy-connection") {
			return hkProxyConnection
		}
		if eqFold(n, "x-forwarded-host") {
			return hkXFHost
		}
	case 17:
		if eqFold(n, "transfer-encoding") {
			return hkTransferEncoding
		}
		if eqFold(n, "x-forwarded-proto") {
			return hkXFProto
		}
	case 18:
		if eqFold(n, "proxy-authenticate") {
			return hkProxyAuthenticate
		}
	case 19:
		if eqFold(n, "proxy-authorization") {
			return hkProxyAuthorization
		}
	}
	return hkOther
}

// isHopByHop reports whether a header of this kind is dropped when a
// message is forwarded.
func isHopByHop(k uint8) bool {
	switch k {
	case hkConnection, hkKeepAlive, hkProxyConnection, hkTE, hkTransferEncoding, hkUpgrade,
		hkProxyAuthenticate, hkProxyAuthorization:
		return true
	}
	return false
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// eqFold compares b with a lower-case ASCII string, ignoring case.
func eqFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

func eqFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// forEachToken calls fn with the bounds of each comma-separated token.
func forEachToken(v []byte, fn func(s, e int)) {
	i := 0
	for i < len(v) {
		for i < len(v) && (v[i] == ' ' || v[i] == '\t' || v[i] == ',') {
			i++
		}
		s := i
		for i < len(v) && v[i] != ',' {
			i++
		}
		e := i
		for e > s && (v[e-1] == ' ' || v[e-1] == '\t') {
			e--
		}
		if e > s {
			fn(s, e)
		}
	}
}

func containsToken(v []byte, lower string) bool {
	found := false
	forEachToken(v, func(s, e int) {
		if eqFold(v[s:e], lower) {
			found = true
		}
	})
	return found
}

func parseDecimal(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isTokenChar(c byte) bool { return tokenTable[c] }
