package edge_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRetriesOnlyWhenSafe uses a backend that drops every connection
// without answering next to a healthy one: a POST whose body reached the
// bad backend is not resent (502), and that backend saw it once;
// idempotent requests are retried elsewhere and succeed.
func TestRetriesOnlyWhenSafe(t *testing.T) {
	var posts, gets atomic.Int64
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			posts.Add(1)
		} else {
			gets.Add(1)
		}
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close() // no response at all
		}
	}))
	t.Cleanup(bad.Close)
	good := backend(t, "good")
	conf := fmt.Sprintf("routes:\n  - {addresses: [%q, %q]}\n", strings.TrimPrefix(bad.URL, "http://"), strings.TrimPrefix(good.URL, "http://"))
	inst, _ := startEdge(t, conf, "--retries=1")
	c := &http.Client{Timeout: 5 * time.Second}
	base := "http://" + inst.Addrs["http"]

	// POSTs alternate between the backends; the ones that hit the bad
	// backend must fail, not be resent.
	codes := map[int]int{}
	for i := 0; i < 6; i++ {
		resp, err := c.Post(base+"/pay", "text/plain", strings.NewReader("one payment"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes[resp.StatusCode]++
	}
	if codes[502] == 0 || int64(codes[502]) != posts.Load() || codes[200]+codes[502] != 6 {
		t.Fatalf("POST statuses %v with %d POSTs at the bad backend: want one 502 per POST it got, none resent", codes, posts.Load())
	}
	for i := 0; i < 6; i++ {
		resp, body := get(t, c, base+"/idem", "")
		if resp.StatusCode != 200 || body != "good" {
			t.Fatalf("GET %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if gets.Load() == 0 {
		t.Fatal("the bad backend was never tried")
	}
}
