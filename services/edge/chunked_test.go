package edge

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http/httputil"
	"strings"
	"testing"
)

// reframe runs copyChunked over in through a small reader buffer (so
// lines and data cross buffer refills) and returns what it wrote.
func reframe(in string, bufSize int) (string, error) {
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	err := copyChunked(w, bufio.NewReaderSize(strings.NewReader(in), bufSize), nil)
	w.Flush()
	return out.String(), err
}

func TestChunkedReframing(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "5\r\nhello\r\n0\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n"},
		{"upper-case hex and leading zeros", "000A\r\n0123456789\r\n000\r\n\r\n", "a\r\n0123456789\r\n0\r\n\r\n"},
		{"extensions dropped", "5;name=val;q=\"a \\\"b\\\"\";x\r\nhello\r\n0;last\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n"},
		{"whitespace around extension parts (BWS)", "5 ;\tname = \"v\" ; y\r\nhello\r\n0\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n"},
		{"trailers re-serialised", "1\r\nx\r\n0\r\nX-Sum:  abc \r\nX-Other:z\r\n\r\n", "1\r\nx\r\n0\r\nX-Sum: abc\r\nX-Other: z\r\n\r\n"},
		{"framing and hop-by-hop trailers dropped", "1\r\nx\r\n0\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\nHost: evil\r\nX-Forwarded-For: 1.2.3.4\r\nX-Ok: 1\r\n\r\n", "1\r\nx\r\n0\r\nX-Ok: 1\r\n\r\n"},
		{"data holding framing bytes", "15\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n0\r\n\r\n", "15\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n0\r\n\r\n"},
		{"obs-text in a quoted extension", "1;a=\"\xff\"\r\nx\r\n0\r\n\r\n", "1\r\nx\r\n0\r\n\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, size := range []int{64, 4096} {
				got, err := reframe(tc.in, size)
				if err != nil || got != tc.want {
					t.Fatalf("buffer %d: got %q, %v; want %q", size, got, err, tc.want)
				}
			}
		})
	}
}

// TestChunkedFramingRefused holds the inputs a lenient parser may read
// differently from a strict one; each is refused with the error naming
// what is wrong.
func TestChunkedFramingRefused(t *testing.T) {
	tests := []struct {
		name, in string
		want     error
	}{
		{"bare LF ends a chunk size line", "5\nhello\r\n0\r\n\r\n", errChunkLineEnd},
		{"bare LF after chunk data", "5\r\nhello\n0\r\n\r\n", errChunkDataEnd},
		{"two other bytes after chunk data", "5\r\nhelloXX0\r\n\r\n", errChunkDataEnd},
		{"bare CR after chunk data", "5\r\nhello\rX0\r\n\r\n", errChunkDataEnd},
		{"too many bytes of data", "5\r\nhello!\r\n0\r\n\r\n", errChunkDataEnd},
		{"bare LF ends the last chunk", "5\r\nhello\r\n0\n\r\n", errChunkLineEnd},
		{"bare LF ends the trailer section", "5\r\nhello\r\n0\r\n\n", errChunkLineEnd},
		{"bare LF after a trailer field", "0\r\nX-A: 1\n\r\n", errChunkLineEnd},
		{"leading space in size", " 5\r\nhello\r\n0\r\n\r\n", errChunkSize},
		{"leading tab in size", "\t5\r\nhello\r\n0\r\n\r\n", errChunkSize},
		{"trailing space in size", "5 \r\nhello\r\n0\r\n\r\n", errChunkExt},
		{"sign in size", "+5\r\nhello\r\n0\r\n\r\n", errChunkSize},
		{"0x prefix", "0x5\r\nhello\r\n0\r\n\r\n", errChunkExt},
		{"empty size", "\r\nhello\r\n0\r\n\r\n", errChunkSize},
		{"17 digits", "00000000000000005\r\nhello\r\n0\r\n\r\n", errChunkSize},
		{"overflow", "8000000000000000\r\n", errChunkSize},
		{"NUL in extension", "5;a\x00b\r\nhello\r\n0\r\n\r\n", errChunkExt},
		{"bare CR in extension", "5;a\rb\r\nhello\r\n0\r\n\r\n", errChunkExt},
		{"control char in quoted extension", "5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", errChunkExt},
		{"unterminated quoted extension", "5;a=\"b\r\nhello\r\n0\r\n\r\n", errChunkExt},
		{"extension without name", "5;=x\r\nhello\r\n0\r\n\r\n", errChunkExt},
		{"extension without semicolon", "5 x\r\nhello\r\n0\r\n\r\n", errChunkExt},
		{"extension value missing", "5;a=\r\nhello\r\n0\r\n\r\n", errChunkExt},
		{"trailing whitespace after extension", "5;a=b \r\nhello\r\n0\r\n\r\n", errChunkExt},
		{"trailer without colon", "0\r\nX-A 1\r\n\r\n", errTrailer},
		{"trailer with space before colon", "0\r\nX-A : 1\r\n\r\n", errTrailer},
		{"trailer with empty name", "0\r\n: 1\r\n\r\n", errTrailer},
		{"trailer obs-fold", "0\r\nX-A: 1\r\n 2\r\n\r\n", errTrailer},
		{"trailer with control char", "0\r\nX-A: 1\x0b2\r\n\r\n", errTrailer},
		{"trailer section too large", "0\r\n" + strings.Repeat("X-A: "+strings.Repeat("a", 1000)+"\r\n", 70) + "\r\n", errTrailerSize},
		{"line longer than the buffer", "5;" + strings.Repeat("a", 5000) + "\r\nhello\r\n0\r\n\r\n", errChunkLineLen},
		{"ends inside data", "5\r\nhel", errShortBody},
		{"ends before the last chunk", "5\r\nhello\r\n", errShortBody},
		{"ends inside trailers", "0\r\nX-A: 1\r\n", errShortBody},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := reframe(tc.in, 4096)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if tc.want != errShortBody && !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
		})
	}
}

// TestChunkedErrorStopsOutput checks that nothing past a framing error is
// written: bytes after it never reach the peer.
func TestChunkedErrorStopsOutput(t *testing.T) {
	got, err := reframe("3\r\nabc\r\n5\r\nhello\nGET /hidden HTTP/1.1\r\n\r\n", 4096)
	if err == nil || strings.Contains(got, "hidden") || got != "3\r\nabc\r\n5\r\nhello" {
		t.Fatalf("wrote %q, error %v", got, err)
	}
}

func TestDechunk(t *testing.T) {
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	err := copyDechunked(w, bufio.NewReaderSize(strings.NewReader("5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n"), 16))
	w.Flush()
	if err != nil || out.String() != "hello!" {
		t.Fatalf("got %q, %v", out.String(), err)
	}
	w.Reset(&out)
	if err := copyDechunked(w, bufio.NewReader(strings.NewReader("5\r\nhello\n0\r\n\r\n"))); !errors.Is(err, errChunkDataEnd) {
		t.Fatalf("bare LF: %v", err)
	}
}

// FuzzCopyChunked checks the re-framer on arbitrary input: when it
// accepts a body, its output is canonical (re-framing it again changes
// nothing), carries the same data as the standard library decodes from
// the input, and the input's bytes after the body stay unread.
func FuzzCopyChunked(f *testing.F) {
	for _, s := range []string{
		"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"ffffffffffffffff\r\n",
		"5;a=\"b\\\"c\";d = e\r\nhello\r\n0\r\n\r\nGET",
		"5\r\nhello\n0\r\n\r\n",
		"A\r\n0123456789\r\n00\r\nContent-Length: 1\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		src := bufio.NewReaderSize(bytes.NewReader(b), 16)
		if copyChunked(w, src, nil) != nil {
			return
		}
		w.Flush()
		rest, _ := io.ReadAll(src)
		if !bytes.HasSuffix(b, rest) {
			t.Fatalf("rest %q is not the input's tail", rest)
		}
		// Re-read with room for the output's lines: a trailer is written
		// as "Name: value", a byte longer than "Name:value" was, so a line
		// that just fit the 16-byte reader above may not fit it again.
		again, err := reframe(out.String(), 4096)
		if err != nil || again != out.String() {
			t.Fatalf("output %q not canonical: %q, %v", out.String(), again, err)
		}
		want, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatalf("accepted %q, which the standard library refuses: %v", b, err)
		}
		got, _ := io.ReadAll(httputil.NewChunkedReader(&out))
		if !bytes.Equal(got, want) {
			t.Fatalf("data %q, want %q", got, want)
		}
	})
}

// BenchmarkCopyChunked re-frames a 1 MiB body of 16 KiB chunks with an
// extension and a trailer; it must not allocate.
func BenchmarkCopyChunked(b *testing.B) {
	var in bytes.Buffer
	chunk := strings.Repeat("x", 16<<10)
	for range 64 {
		in.WriteString("4000;ext=1\r\n" + chunk + "\r\n")
	}
	in.WriteString("0\r\nX-Sum: 1\r\n\r\n")
	body := in.Bytes()
	r := bytes.NewReader(body)
	br := bufio.NewReaderSize(r, 8<<10)
	bw := bufio.NewWriterSize(io.Discard, 8<<10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for range b.N {
		r.Reset(body)
		br.Reset(r)
		if err := copyChunked(bw, br, nil); err != nil {
			b.Fatal(err)
		}
		bw.Flush()
	}
}
