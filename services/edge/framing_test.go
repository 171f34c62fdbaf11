package edge_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// lenientBackend is a raw HTTP/1.1 server that parses requests the way
// the backends of request-smuggling reports do: a bare LF ends a line,
// any two bytes after chunk data are taken as its CRLF, a chunk size is
// the hex digits the line starts with (none: 0), and Transfer-Encoding
// wins when it mentions chunked anywhere. It answers each request with
// its path as the body and records every request it parsed.
type lenientBackend struct {
	addr string

	mu        sync.Mutex
	paths     []string
	malformed int
}

func startLenient(t *testing.T) *lenientBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &lenientBackend{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				b.serve(c)
			}()
		}
	}()
	return b
}

func (b *lenientBackend) serve(c net.Conn) {
	br := bufio.NewReader(c)
	line := func() (string, error) {
		s, err := br.ReadString('\n')
		return strings.TrimSuffix(strings.TrimSuffix(s, "\n"), "\r"), err
	}
	for {
		l, err := line()
		if err != nil {
			return
		}
		if l == "" {
			continue
		}
		parts := strings.Split(l, " ")
		if len(parts) != 3 || !strings.HasPrefix(parts[2], "HTTP/") {
			b.mu.Lock()
			b.malformed++
			b.mu.Unlock()
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		cl, chunked := 0, false
		for {
			h, err := line()
			if err != nil {
				return
			}
			if h == "" {
				break
			}
			k, v, _ := strings.Cut(h, ":")
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "content-length":
				cl, _ = strconv.Atoi(strings.TrimSpace(v))
			case "transfer-encoding":
				chunked = strings.Contains(strings.ToLower(v), "chunked")
			}
		}
		if chunked {
			for {
				sz, err := line()
				if err != nil {
					return
				}
				n := 0
				for _, ch := range sz {
					d := strings.IndexRune("0123456789abcdef", ch|0x20)
					if d < 0 {
						break
					}
					n = n*16 + d
				}
				if n == 0 {
					for {
						tr, err := line()
						if err != nil {
							return
						}
						if tr == "" {
							break
						}
					}
					break
				}
				if _, err := br.Discard(n + 2); err != nil { // data, and any two bytes as CRLF
					return
				}
			}
		} else if _, err := br.Discard(cl); err != nil {
			return
		}
		b.mu.Lock()
		b.paths = append(b.paths, parts[1])
		b.mu.Unlock()
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(parts[1]), parts[1])
	}
}

func (b *lenientBackend) seen() (paths []string, malformed int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.paths...), b.malformed
}

// hidden is the request each attack tries to slip past the edge.
const hidden = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

// chunkedAttack is a POST with a chunked body of raw framing.
func chunkedAttack(path, body string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body
}

// bareLFAttack: a bare LF ends the first chunk's data. A parser that
// takes any two bytes as the CRLF also eats the next size line's first
// digit, reads the rest ("5") as the size, and the data of the real
// chunk (0x?5 bytes) then ends the body and carries the hidden request.
func bareLFAttack(path string) string {
	core := "AAAAA\r\n0\r\n\r\n" + hidden
	for len(core)%16 != 5 {
		core += "\n" // empty lines, skipped before a request
	}
	return chunkedAttack(path, "2\r\nhi\n"+strconv.FormatInt(int64(len(core)), 16)+"\r\n"+core+"\r\n0\r\n\r\n")
}

// spaceSizeAttack: a size with leading whitespace, which a lenient
// parser reads as 0, ending the body where the hidden request begins.
func spaceSizeAttack(path string) string {
	core := "\r\n" + hidden
	return chunkedAttack(path, " "+strconv.FormatInt(int64(len(core)), 16)+"\r\n"+core+"\r\n0\r\n\r\n")
}

// attacks are framing tricks, each refused by the edge with 400.
var attacks = []struct {
	name string
	req  func(path string) string
}{
	{"bare LF after chunk data", bareLFAttack},
	{"leading whitespace in chunk size", spaceSizeAttack},
	{"two bytes after chunk data", func(p string) string {
		return chunkedAttack(p, "5\r\nhelloXX0\r\n\r\n"+hidden+"0\r\n\r\n")
	}},
	{"bare LF ends a chunk size line", func(p string) string {
		return chunkedAttack(p, "5\nhello\r\n0\r\n\r\n"+hidden)
	}},
	{"control character in chunk extension", func(p string) string {
		return chunkedAttack(p, "5;a\rb\r\nhello\r\n0\r\n\r\n"+hidden)
	}},
	{"junk chunk extension", func(p string) string {
		return chunkedAttack(p, "5 junk\r\nhello\r\n0\r\n\r\n"+hidden)
	}},
	{"trailer without colon", func(p string) string {
		return chunkedAttack(p, "0\r\nGET /smuggled HTTP/1.1\r\n\r\n")
	}},
	{"trailer with obs-fold", func(p string) string {
		return chunkedAttack(p, "0\r\nX-A: 1\r\n GET /smuggled HTTP/1.1\r\n\r\n")
	}},
	{"bare LF in trailers", func(p string) string {
		return chunkedAttack(p, "0\r\nX-A: 1\n\n"+hidden)
	}},
	{"Content-Length and Transfer-Encoding", func(p string) string {
		return "POST " + p + " HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden
	}},
	{"Transfer-Encoding other than chunked", func(p string) string {
		return "POST " + p + " HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + hidden
	}},
	{"Transfer-Encoding in HTTP/1.0", func(p string) string {
		return "POST " + p + " HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden
	}},
	{"space before colon", func(p string) string {
		return "POST " + p + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + hidden
	}},
	{"obs-fold Transfer-Encoding", func(p string) string {
		return "POST " + p + " HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden
	}},
}

// TestSmugglingLenientBackend sends each attack several times through the
// edge to a lenient backend, with an innocent client's request after
// each: the backend must never parse a request the edge did not send, and
// the innocent client must always get its own answer.
func TestSmugglingLenientBackend(t *testing.T) {
	const tries = 5
	lb := startLenient(t)
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - addresses: [%q]\n", lb.addr))
	addr := inst.Addrs["http"]
	innocent := &http.Client{Timeout: 10 * time.Second}
	// Another innocent client sends requests all along, on its own
	// keep-alive connection.
	stop := make(chan struct{})
	bgDone := make(chan int)
	go func() {
		c := &http.Client{Timeout: 10 * time.Second}
		n := 0
		defer func() { bgDone <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			want := fmt.Sprintf("/background-%d", n)
			resp, err := c.Get("http://" + addr + want)
			if err != nil {
				t.Errorf("background %s: %v", want, err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != want {
				t.Errorf("background %s got %d %q", want, resp.StatusCode, b)
			}
			n++
		}
	}()
	for try := range tries {
		for i, a := range attacks {
			path := fmt.Sprintf("/attack-%d-%d", try, i)
			code, rest := attackOnce(t, addr, a.req(path))
			if code != 400 {
				t.Errorf("try %d, %s: status %d, want 400", try, a.name, code)
			}
			if rest != "" {
				t.Errorf("try %d, %s: after the 400 the edge sent %q; want the connection closed", try, a.name, rest)
			}
			want := fmt.Sprintf("/innocent-%d-%d", try, i)
			resp, body := get(t, innocent, "http://"+addr+want, "")
			if resp.StatusCode != 200 || body != want {
				t.Errorf("try %d, after %s: innocent %s got %d %q", try, a.name, want, resp.StatusCode, body)
			}
		}
	}
	close(stop)
	background := <-bgDone
	paths, malformed := lb.seen()
	for _, p := range paths {
		if !strings.HasPrefix(p, "/innocent-") && !strings.HasPrefix(p, "/background-") {
			t.Errorf("the backend parsed a request for %s", p)
		}
	}
	if malformed != 0 {
		t.Errorf("the backend read %d malformed request lines", malformed)
	}
	if want := tries*len(attacks) + background; len(paths) != want {
		t.Errorf("the backend parsed %d requests, want the %d innocent ones", len(paths), want)
	}
	t.Logf("%d tries of %d attacks: %d interleaved and %d background innocent requests answered, backend parsed %d requests, none hidden",
		tries, len(attacks), tries*len(attacks), background, len(paths))
}

// attackOnce sends req on a fresh connection and returns the status of
// the answer and whatever the edge sent after it before closing.
func attackOnce(t *testing.T, addr, req string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", req, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	rest, _ := io.ReadAll(br)
	return resp.StatusCode, string(rest)
}

// TestChunkedBodiesReframed checks what the backend receives for
// well-formed chunked requests with extensions and trailers: canonical
// chunks, no extensions, trailers re-serialised, framing trailers gone.
func TestChunkedBodiesReframed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for { // the head
			l, err := br.ReadString('\n')
			if err != nil || l == "\r\n" {
				break
			}
		}
		// The body as it came, up to the empty line after the last chunk
		// (its data has no line of its own that is "0").
		var body strings.Builder
		last := false
		for {
			l, err := br.ReadString('\n')
			body.WriteString(l)
			if err != nil || last && l == "\r\n" {
				break
			}
			last = last || l == "0\r\n"
		}
		got <- body.String()
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	}()
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - addresses: [%q]\n", ln.Addr().String()))
	code, _ := rawRequest(t, inst.Addrs["http"], chunkedAttack("/up",
		"005;name=\"a b\"\r\nhello\r\n1 ; x = y\r\n!\r\n0;end\r\nX-Sum: 6\r\nContent-Length: 99\r\nX-Other:  z \r\n\r\n"))
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	if b := <-got; b != "5\r\nhello\r\n1\r\n!\r\n0\r\nX-Sum: 6\r\nX-Other: z\r\n\r\n" {
		t.Fatalf("the backend received the body %q", b)
	}
}

// TestMalformedChunkedResponse: a backend whose chunked response breaks
// the framing gets its connection closed, and so does the client, before
// any byte past the fault: the client never sees a complete response or
// the bytes the backend put after the fault, and later requests are
// answered on other connections.
func TestMalformedChunkedResponse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if req.URL.Path == "/bad" {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n"+
							"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
						continue
					}
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
				}
			}()
		}
	}()
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - addresses: [%q]\n", ln.Addr().String()))
	c, err := net.DialTimeout("tcp", inst.Addrs["http"], 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /bad HTTP/1.1\r\nHost: x\r\n\r\n")
	// The edge closes the connection: whatever of the response it had
	// flushed (on loopback, usually nothing) is a message without its end.
	all, _ := io.ReadAll(c)
	if got := string(all); strings.Contains(got, "forged") || (got != "" && !strings.HasSuffix(got, "5\r\nhello")) {
		t.Fatalf("the client received %q; want the response cut at the fault", got)
	}
	if resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(all))), nil); err == nil {
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Fatalf("the client received a complete response: %q", all)
		}
	}
	for i := range 3 {
		want := fmt.Sprintf("/good-%d", i)
		resp, body := get(t, http.DefaultClient, "http://"+inst.Addrs["http"]+want, "")
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("after the bad response: %s got %d %q", want, resp.StatusCode, body)
		}
	}
}
