package edge_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestUpstreamIdleCheck: a pooled backend connection that the backend
// closed while it was idle, or on which it sent bytes nobody asked for,
// is not reused: the next request (a POST, which the edge never resends)
// gets its own answer.
func TestUpstreamIdleCheck(t *testing.T) {
	for _, mode := range []string{"close", "reset", "junk"} {
		t.Run(mode, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			answered := make(chan struct{}) // the client has its answer
			acted := make(chan struct{})    // the backend closed or sent junk
			var conns sync.WaitGroup
			t.Cleanup(conns.Wait)
			stop := make(chan struct{})
			t.Cleanup(func() { close(stop) })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					conns.Add(1)
					go func() {
						defer conns.Done()
						defer c.Close()
						c.SetDeadline(time.Now().Add(20 * time.Second))
						br := bufio.NewReader(c)
						for {
							req, err := http.ReadRequest(br)
							if err != nil {
								return
							}
							io.Copy(io.Discard, req.Body)
							fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
							select { // the connection is idle now
							case <-answered:
							case <-stop:
								return
							}
							switch mode {
							case "close":
								c.Close()
							case "reset":
								c.(*net.TCPConn).SetLinger(0)
								c.Close()
							case "junk":
								io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\njunk")
							}
							select {
							case acted <- struct{}{}:
							case <-stop:
								return
							}
							if mode != "junk" {
								return
							}
						}
					}()
				}
			}()
			inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - addresses: [%q]\n", ln.Addr().String()), "--retries=0")
			addr := inst.Addrs["http"]
			c := &http.Client{Timeout: 10 * time.Second}
			for i := range 5 {
				want := fmt.Sprintf("/post-%d", i)
				resp, err := c.Post("http://"+addr+want, "text/plain", strings.NewReader("body"))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != want {
					t.Fatalf("POST %s: %d %q", want, resp.StatusCode, b)
				}
				answered <- struct{}{}
				<-acted
				// The close or the junk is on loopback at once, but the
				// edge's socket cannot be watched from here: give the
				// kernel a moment to deliver it.
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}
