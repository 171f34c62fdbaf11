package wire

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden is one frame of the spec's worked examples, stored as
// testdata/golden/<name>.hex.
type golden struct {
	name    string
	comment string
	t       FrameType
	flags   Flags
	id      uint32
	payload []byte
	// decodeOnly frames are checked by decoding (their payload comes from
	// a compressor whose exact output may change between versions).
	decodeOnly bool
	plain      []byte // decompressed payload for compressed frames
}

func goldens() []golden {
	return []golden{
		{name: "hello", comment: "HELLO: versions 1..1, max_frame_size 65536, initial_window 1048576, features zstd|s2, token \"secret\"",
			t: FrameHello, payload: AppendHello(nil, &Hello{MinVersion: 1, MaxVersion: 1, MaxFrameSize: 65536, InitialWindow: 1 << 20, Features: FeatureZstd | FeatureS2, Token: []byte("secret")})},
		{name: "hello_ack", comment: "HELLO_ACK: version 1, max_frame_size 65536, initial_window 1048576, features s2",
			t: FrameHelloAck, payload: AppendHelloAck(nil, &HelloAck{Version: 1, MaxFrameSize: 65536, InitialWindow: 1 << 20, Features: FeatureS2})},
		{name: "ping", comment: "PING: opaque 0x0102030405060708",
			t: FramePing, payload: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{name: "pong", comment: "PONG: echoes the PING",
			t: FramePong, payload: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{name: "open", comment: "OPEN: stream 1 to service \"echo\"",
			t: FrameOpen, id: 1, payload: []byte("echo")},
		{name: "data", comment: "DATA: stream 1, \"hello, world\"",
			t: FrameData, id: 1, payload: []byte("hello, world")},
		{name: "data_more", comment: "DATA: stream 1, flags MORE, first fragment \"hel\" of a message",
			t: FrameData, flags: FlagMore, id: 1, payload: []byte("hel")},
		{name: "window_update", comment: "WINDOW_UPDATE: stream 1, increment 65536",
			t: FrameWindowUpdate, id: 1, payload: []byte{0, 1, 0, 0}},
		{name: "close", comment: "CLOSE: stream 1 half-closed",
			t: FrameClose, id: 1},
		{name: "reset", comment: "RESET: stream 1, NO_SUCH_SERVICE, \"no such service: echo\"",
			t: FrameReset, id: 1, payload: AppendCodeReason(nil, CodeNoSuchService, "no such service: echo")},
		{name: "goaway", comment: "GOAWAY: last_stream_id 1, NO_ERROR, \"shutdown\"",
			t: FrameGoAway, payload: AppendGoAway(nil, 1, CodeNoError, "shutdown")},
		{name: "error", comment: "ERROR: UNAUTHORIZED, \"unauthorized\"",
			t: FrameError, payload: AppendCodeReason(nil, CodeUnauthorized, "unauthorized")},
		{name: "data_s2", comment: "DATA: stream 1, flags COMPRESSED (s2), 64 x \"a\"",
			t: FrameData, flags: FlagCompressed, id: 1, payload: mustCompress(CompressionS2, bytes.Repeat([]byte("a"), 64)),
			decodeOnly: true, plain: bytes.Repeat([]byte("a"), 64)},
	}
}

func mustCompress(alg Compression, p []byte) []byte {
	out, ok := compress(alg, make([]byte, 0, 256), p)
	if !ok {
		panic("incompressible")
	}
	return out
}

// formatHex lays a frame out as the spec does: header, payload rows of 16
// bytes, trailer.
func formatHex(comment string, frame []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", comment)
	row := func(p []byte) {
		for i, c := range p {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%02x", c)
		}
		b.WriteByte('\n')
	}
	row(frame[:HeaderSize])
	body := frame[HeaderSize : len(frame)-TrailerSize]
	for len(body) > 0 {
		n := min(16, len(body))
		row(body[:n])
		body = body[n:]
	}
	row(frame[len(frame)-TrailerSize:])
	return b.String()
}

// parseHex reads the golden format: hex bytes separated by white space,
// '#' to end of line is a comment.
func parseHex(t testing.TB, s string) []byte {
	t.Helper()
	var digits strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatalf("bad hex: %v", err)
	}
	return b
}

func TestGoldenFrames(t *testing.T) {
	for _, g := range goldens() {
		t.Run(g.name, func(t *testing.T) {
			path := filepath.Join("testdata", "golden", g.name+".hex")
			enc := AppendFrame(nil, g.t, g.flags, g.id, g.payload)
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(formatHex(g.comment, enc)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want := parseHex(t, string(raw))
			if !g.decodeOnly && !bytes.Equal(enc, want) {
				t.Errorf("encoding differs from golden file\n got %x\nwant %x", enc, want)
			}
			f, err := ReadFrame(bufio.NewReader(bytes.NewReader(want)), DefaultMaxFrameSize, nil)
			if err != nil {
				t.Fatalf("golden frame does not decode: %v", err)
			}
			if f.Header.Type() != g.t || f.Header.Flags() != g.flags || f.Header.StreamID() != g.id || f.Header.Version() != 1 {
				t.Errorf("header = %v flags %x stream %d version %d", f.Header.Type(), f.Header.Flags(), f.Header.StreamID(), f.Header.Version())
			}
			if g.decodeOnly {
				alg := CompressionS2
				out, err := decompress(alg, make([]byte, 0, 1024), f.Payload, 1024)
				if err != nil || !bytes.Equal(out, g.plain) {
					t.Errorf("compressed payload decodes to %q, %v", out, err)
				}
				return
			}
			if !bytes.Equal(f.Payload, g.payload) {
				t.Errorf("payload = %x, want %x", f.Payload, g.payload)
			}
		})
	}
}

// TestSpecMatchesGolden checks that docs/wire.md shows every golden frame
// byte for byte, so the spec's worked examples cannot drift from the code.
func TestSpecMatchesGolden(t *testing.T) {
	spec, err := os.ReadFile(filepath.Join("..", "..", "docs", "wire.md"))
	if err != nil {
		t.Skipf("spec not found: %v", err)
	}
	norm := strings.Join(strings.Fields(string(spec)), " ")
	for _, g := range goldens() {
		raw, err := os.ReadFile(filepath.Join("testdata", "golden", g.name+".hex"))
		if err != nil {
			t.Fatal(err)
		}
		var rows []string
		for _, line := range strings.Split(string(raw), "\n") {
			if line != "" && !strings.HasPrefix(line, "#") {
				rows = append(rows, line)
			}
		}
		block := strings.Join(strings.Fields(strings.Join(rows, " ")), " ")
		if !strings.Contains(norm, block) {
			t.Errorf("docs/wire.md lacks the bytes of testdata/golden/%s.hex", g.name)
		}
	}
}

func TestParsePayloads(t *testing.T) {
	h := Hello{MinVersion: 1, MaxVersion: 3, MaxFrameSize: 1 << 20, InitialWindow: 4096, Features: FeatureS2, Token: []byte("t")}
	got, err := ParseHello(AppendHello(nil, &h))
	if err != nil || got.MaxVersion != 3 || got.MaxFrameSize != 1<<20 || got.InitialWindow != 4096 || string(got.Token) != "t" {
		t.Errorf("ParseHello = %+v, %v", got, err)
	}
	// An increment from 2^31 up parses: it overflows any window, which the
	// receiver reports as FLOW_CONTROL_ERROR (docs/wire.md 8.2).
	if inc, err := ParseWindowUpdate([]byte{0x80, 0, 0, 0}); err != nil || inc != 1<<31 {
		t.Errorf("ParseWindowUpdate(2^31) = %d, %v", inc, err)
	}
	bad := []struct {
		name string
		fn   func() error
	}{
		{"short hello", func() error { _, err := ParseHello(make([]byte, 15)); return err }},
		{"hello token past end", func() error {
			p := AppendHello(nil, &h)
			_, err := ParseHello(p[:len(p)-1])
			return err
		}},
		{"hello min > max", func() error {
			_, err := ParseHello(AppendHello(nil, &Hello{MinVersion: 2, MaxVersion: 1}))
			return err
		}},
		{"hello_ack length", func() error { _, err := ParseHelloAck(make([]byte, 17)); return err }},
		{"window zero", func() error { _, err := ParseWindowUpdate([]byte{0, 0, 0, 0}); return err }},
		{"window update of 5 bytes", func() error { _, err := ParseWindowUpdate([]byte{0, 0, 0, 1, 0}); return err }},
		{"reset short", func() error { _, _, err := ParseCodeReason([]byte{0, 0, 1}); return err }},
		{"reset reason too long", func() error { _, _, err := ParseCodeReason(make([]byte, 4+MaxReasonSize+1)); return err }},
		{"goaway short", func() error { _, _, _, err := ParseGoAway([]byte{0, 0}); return err }},
	}
	for _, b := range bad {
		if err := b.fn(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", b.name, err)
		}
	}
}

func TestReadFrameErrors(t *testing.T) {
	good := AppendFrame(nil, FrameData, 0, 1, []byte("payload"))
	mod := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want error
		code ErrorCode
	}{
		{"bad magic", mod(func(b []byte) { b[0] = 'X' }), ErrBadMagic, CodeProtocol},
		{"version 0", mod(func(b []byte) { b[4] = 0 }), ErrUnknownVersion, CodeUnsupportedVersion},
		{"version 2", mod(func(b []byte) { b[4] = 2 }), ErrUnknownVersion, CodeUnsupportedVersion},
		{"length over limit", mod(func(b []byte) { b[12], b[13], b[14], b[15] = 0xff, 0xff, 0xff, 0xff }), ErrFrameTooLarge, CodeFrameSize},
		{"checksum", mod(func(b []byte) { b[len(b)-1] ^= 1 }), ErrChecksum, CodeChecksum},
		{"payload bit flip", mod(func(b []byte) { b[HeaderSize] ^= 0x80 }), ErrChecksum, CodeChecksum},
		{"flags bit flip", mod(func(b []byte) { b[7] ^= 1 }), ErrChecksum, CodeChecksum},
		{"truncated payload", good[:len(good)-6], io.ErrUnexpectedEOF, 0},
		{"truncated trailer", good[:len(good)-2], io.ErrUnexpectedEOF, 0},
		{"truncated header", good[:7], io.ErrUnexpectedEOF, 0},
		{"empty", nil, io.EOF, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadFrame(bufio.NewReader(bytes.NewReader(tt.in)), 1024, make([]byte, 1024))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var de *DecodeError
			if tt.code != 0 {
				if !errors.As(err, &de) || de.Code() != tt.code {
					t.Errorf("err = %#v, want *DecodeError with code %v", err, tt.code)
				}
			}
		})
	}
}

// TestHostileLength feeds a header that claims a 4 GiB payload and checks
// that decoding it costs no memory beyond the frame limit.
func TestHostileLength(t *testing.T) {
	var hdr Header
	hdr.set(Version, FrameData, 0, 1, 0xffffffff)
	in := append(hdr[:], bytes.Repeat([]byte{0xaa}, 1<<16)...)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	br := bufio.NewReader(bytes.NewReader(in))
	for i := 0; i < 100; i++ {
		br.Reset(bytes.NewReader(in))
		if _, err := ReadFrame(br, DefaultMaxFrameSize, nil); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("err = %v, want ErrFrameTooLarge", err)
		}
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > DefaultMaxFrameSize {
		t.Errorf("100 hostile headers allocated %d bytes, limit %d", grew, DefaultMaxFrameSize)
	}
}

func TestReadFrameNoAlloc(t *testing.T) {
	frame := AppendFrame(nil, FrameData, FlagMore, 7, bytes.Repeat([]byte{1}, 1000))
	r := bytes.NewReader(frame)
	br := bufio.NewReaderSize(r, 4096)
	buf := make([]byte, 0, 1024)
	bw := bufio.NewWriter(io.Discard)
	payload := make([]byte, 1000)
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset(frame)
		br.Reset(r)
		f, err := ReadFrame(br, 1024, buf)
		if err != nil || len(f.Payload) != 1000 {
			t.Fatalf("ReadFrame: %v", err)
		}
		if err := WriteFrame(bw, FrameData, 0, 7, payload); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("ReadFrame+WriteFrame allocate %v times per frame", allocs)
	}
}

func TestStrings(t *testing.T) {
	if FrameWindowUpdate.String() != "WINDOW_UPDATE" || FrameType(0x77).String() != "FrameType(0x77)" {
		t.Error("FrameType.String")
	}
	if CodeNoSuchService.String() != "NO_SUCH_SERVICE" || ErrorCode(0x1234).String() != "ErrorCode(0x1234)" {
		t.Error("ErrorCode.String")
	}
	if !ValidServiceName("web.service") || ValidServiceName("") || ValidServiceName("a b") || ValidServiceName(strings.Repeat("x", 256)) {
		t.Error("ValidServiceName")
	}
}
