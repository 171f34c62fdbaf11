package edge

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// Chunked bodies are re-framed, never copied verbatim. The edge decodes
// each chunk under the strict grammar of RFC 9112 §7.1 and writes it out
// again in canonical form: the size in lower-case hex, CRLF, the data,
// CRLF; chunk extensions dropped; trailer fields re-serialised one per
// line. So the peer only ever parses framing the edge wrote, and a
// lenient parser behind the edge (one that takes any two bytes after
// chunk data as CRLF, or a bare LF as a line end) has nothing to
// disagree about. Input outside the grammar is refused, not repaired:
// a client that sends it is either broken or probing for a parser that
// reads it differently, and either way the connection's framing can no
// longer be trusted.

// maxChunkSizeDigits bounds a chunk size's hex digits (leading zeros
// included): 16 digits hold any int64.
const maxChunkSizeDigits = 16

// maxTrailerBytes bounds a trailer section, as the response head is
// bounded (relay).
const maxTrailerBytes = 64 << 10

// Chunked framing errors. Each wraps errMalformed.
var (
	errChunkLineEnd = fmt.Errorf("%w: chunked body: a line not ended by CRLF", errMalformed)
	errChunkSize    = fmt.Errorf("%w: chunked body: chunk size not 1 to 16 hex digits", errMalformed)
	errChunkExt     = fmt.Errorf("%w: chunked body: malformed chunk extension", errMalformed)
	errChunkDataEnd = fmt.Errorf("%w: chunked body: chunk data not followed by CRLF", errMalformed)
	errTrailer      = fmt.Errorf("%w: chunked body: malformed trailer field", errMalformed)
	errTrailerSize  = fmt.Errorf("%w: chunked body: trailer section too large", errMalformed)
	errChunkLineLen = fmt.Errorf("%w: chunked body: chunk line too long", errMalformed)
)

// copyChunked re-frames one chunked body from src to dst (see above),
// trailers included, flushing dst before each blocking read of src.
func copyChunked(dst *bufio.Writer, src *bufio.Reader, dl *copyDeadlines) error {
	return reframeChunked(dst, src, dl, true)
}

// copyDechunked decodes a chunked body for an HTTP/1.0 client: the data
// only, under the same rules; trailers are checked and dropped.
func copyDechunked(dst *bufio.Writer, src *bufio.Reader) error {
	return reframeChunked(dst, src, nil, false)
}

func reframeChunked(dst *bufio.Writer, src *bufio.Reader, dl *copyDeadlines, rechunk bool) error {
	for {
		line, err := readCRLFLine(dst, src, dl)
		if err != nil {
			return err
		}
		size, err := parseChunkLine(line)
		if err != nil {
			return err
		}
		if rechunk {
			if err := writeChunkSize(dst, size); err != nil {
				return err
			}
		}
		if size == 0 {
			return copyTrailers(dst, src, dl, rechunk)
		}
		if err := copyN(dst, src, size, dl); err != nil {
			return err
		}
		if err := readDataCRLF(dst, src, dl); err != nil {
			return err
		}
		if rechunk {
			if _, err := dst.WriteString("\r\n"); err != nil {
				return &writeErr{err}
			}
		}
	}
}

// writeChunkSize writes a chunk-size line, in dst's own buffer so that
// nothing is allocated.
func writeChunkSize(dst *bufio.Writer, size int64) error {
	if dst.Available() < maxChunkSizeDigits+2 {
		if err := dst.Flush(); err != nil {
			return &writeErr{err}
		}
	}
	b := strconv.AppendInt(dst.AvailableBuffer(), size, 16)
	b = append(b, '\r', '\n')
	if _, err := dst.Write(b); err != nil {
		return &writeErr{err}
	}
	return nil
}

// copyTrailers reads the trailer section up to its empty line, checking
// each field line as a header field line is checked, and writes the
// fields it forwards followed by the final CRLF (when rechunk). Fields
// the edge treats specially in a header section (framing, routing,
// hop-by-hop and forwarding fields: Content-Length, Transfer-Encoding,
// Host, Connection, X-Forwarded-For, ...) are dropped: they may not be
// sent in trailers (RFC 9110 §6.5.1) and a recipient that merged one
// into the header section would be misled.
func copyTrailers(dst *bufio.Writer, src *bufio.Reader, dl *copyDeadlines, rechunk bool) error {
	total := 0
	for {
		line, err := readCRLFLine(dst, src, dl)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			if rechunk {
				if _, err := dst.WriteString("\r\n"); err != nil {
					return &writeErr{err}
				}
			}
			return nil
		}
		if total += len(line) + 2; total > maxTrailerBytes {
			return errTrailerSize
		}
		name, val, ok := splitFieldLine(line)
		if !ok {
			return errTrailer
		}
		if !rechunk || headerKind(name) != hkOther {
			continue
		}
		dst.Write(name)
		dst.WriteString(": ")
		dst.Write(val)
		if _, err := dst.WriteString("\r\n"); err != nil {
			return &writeErr{err}
		}
	}
}

// splitFieldLine checks a field line (without its CRLF) against RFC 9110
// §5: a token name, a colon, then a value of visible characters, spaces
// and tabs (obs-text allowed), trimmed of surrounding whitespace. A line
// beginning with whitespace (obs-fold) is refused.
func splitFieldLine(line []byte) (name, val []byte, ok bool) {
	c := indexByte(line, ':')
	if c <= 0 {
		return nil, nil, false
	}
	for _, ch := range line[:c] {
		if !isTokenChar(ch) {
			return nil, nil, false
		}
	}
	val = trimOWS(line[c+1:])
	for _, ch := range val {
		if (ch < ' ' && ch != '\t') || ch == 0x7f {
			return nil, nil, false
		}
	}
	return line[:c], val, true
}

// readCRLFLine reads one line and returns it without its CRLF; a line
// ended by a bare LF, or longer than src's buffer, is an error. dst is
// flushed first when the read would block.
func readCRLFLine(dst *bufio.Writer, src *bufio.Reader, dl *copyDeadlines) ([]byte, error) {
	if src.Buffered() == 0 {
		if err := dl.beforeWait(dst); err != nil {
			return nil, err
		}
	}
	line, err := src.ReadSlice('\n')
	if err != nil {
		switch {
		case errors.Is(err, io.EOF):
			return nil, errShortBody
		case errors.Is(err, bufio.ErrBufferFull):
			return nil, errChunkLineLen
		}
		return nil, err
	}
	n := len(line)
	if n < 2 || line[n-2] != '\r' {
		return nil, errChunkLineEnd
	}
	return line[:n-2], nil
}

// readDataCRLF reads the CRLF that must follow chunk data.
func readDataCRLF(dst *bufio.Writer, src *bufio.Reader, dl *copyDeadlines) error {
	for _, want := range [2]byte{'\r', '\n'} {
		if src.Buffered() == 0 {
			if err := dl.beforeWait(dst); err != nil {
				return err
			}
		}
		c, err := src.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errShortBody
			}
			return err
		}
		if c != want {
			return errChunkDataEnd
		}
	}
	return nil
}

// parseChunkLine parses a chunk-size line without its CRLF (RFC 9112
// §7.1, §7.1.1):
//
//	chunk-size [ chunk-ext ]
//	chunk-size = 1*HEXDIG
//	chunk-ext  = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//	chunk-ext-name = token
//	chunk-ext-val  = token / quoted-string
//
// No whitespace before the size or after the line's last element, at most
// 16 digits, and no control character anywhere outside a quoted string's
// tabs.
func parseChunkLine(line []byte) (int64, error) {
	i := 0
	var n uint64
	for i < len(line) {
		d, ok := hexVal(line[i])
		if !ok {
			break
		}
		if i == maxChunkSizeDigits {
			return 0, errChunkSize
		}
		n = n<<4 | uint64(d)
		i++
	}
	if i == 0 || n > math.MaxInt64 {
		return 0, errChunkSize
	}
	if !validChunkExt(line[i:]) {
		return 0, errChunkExt
	}
	return int64(n), nil
}

func hexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// validChunkExt reports whether b is a well-formed chunk-ext.
func validChunkExt(b []byte) bool {
	for len(b) > 0 {
		b = skipOWS(b)
		if len(b) == 0 || b[0] != ';' {
			return false // trailing whitespace, or junk
		}
		b = skipOWS(b[1:])
		n := tokenLen(b)
		if n == 0 {
			return false
		}
		b = b[n:]
		if r := skipOWS(b); len(r) > 0 && r[0] == '=' {
			b = skipOWS(r[1:])
			if len(b) > 0 && b[0] == '"' {
				n = quotedStringLen(b)
			} else {
				n = tokenLen(b)
			}
			if n <= 0 {
				return false
			}
			b = b[n:]
		}
	}
	return true
}

func skipOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

func tokenLen(b []byte) int {
	n := 0
	for n < len(b) && isTokenChar(b[n]) {
		n++
	}
	return n
}

// quotedStringLen returns the length of the quoted-string b begins with
// (RFC 9110 §5.6.4), or -1 when it is malformed or unterminated.
func quotedStringLen(b []byte) int {
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			i++
			if i == len(b) || !isQuotedChar(b[i]) {
				return -1
			}
		case !isQuotedChar(c):
			return -1
		}
	}
	return -1
}

// isQuotedChar reports whether c may appear in a quoted string: HTAB, SP,
// VCHAR or obs-text.
func isQuotedChar(c byte) bool { return c == '\t' || (c >= ' ' && c != 0x7f) }
