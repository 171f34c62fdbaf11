package edge_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	"github.com/switchboard-net/switchboard/services/edge"
)

// The contract tests of per-try timeouts, retries, hedging and endpoints
// leaving: each behaviour runs over every HTTP transport of the edge it
// applies to (the HTTP/1.1 fast path and HTTP/2 through net/http; gRPC's
// conservative rules are in grpc_test.go).

// transports are the edge's HTTP client-side protocols under test.
var transports = []string{"HTTP/1.1", "h2c"}

// clientFor returns a client speaking proto to the edge.
func clientFor(proto string, timeout time.Duration) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	if proto == "h2c" {
		var protos http.Protocols
		protos.SetUnencryptedHTTP2(true)
		tr.Protocols = &protos
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// hungBackend is a loopback HTTP backend that answers with its name until
// hang is set; then it reads each request and holds it: until delay
// passes or gate is closed (when set), release is closed, or the edge
// gives up on it (its connection closes: counted in cancelled, and
// onCancel told).
type hungBackend struct {
	name, addr string
	hang       atomic.Bool
	delay      func(r *http.Request) time.Duration // nil: hold until released
	gate       func(r *http.Request) <-chan struct{}
	onCancel   func(r *http.Request)
	seen       atomic.Int64 // requests received
	posts      atomic.Int64 // POSTs received
	held       atomic.Int64 // requests held
	cancelled  atomic.Int64 // held requests the edge gave up on
	release    chan struct{}
	onArrive   func(r *http.Request)
}

func startHung(t *testing.T, name string) *hungBackend {
	t.Helper()
	b := &hungBackend{name: name, release: make(chan struct{})}
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.seen.Add(1)
		if r.Method == http.MethodPost {
			b.posts.Add(1)
		}
		io.Copy(io.Discard, r.Body)
		if b.onArrive != nil {
			b.onArrive(r)
		}
		if b.hang.Load() {
			b.held.Add(1)
			var after <-chan time.Time
			if b.delay != nil {
				after = time.After(b.delay(r))
			}
			var gate <-chan struct{}
			if b.gate != nil {
				gate = b.gate(r)
			}
			select {
			case <-r.Context().Done():
				b.cancelled.Add(1)
				if b.onCancel != nil {
					b.onCancel(r)
				}
				return
			case <-after:
			case <-gate:
			case <-b.release:
			case <-done:
				return
			}
		}
		w.Header().Set("X-Backend", name)
		io.WriteString(w, name)
	}))
	b.addr = strings.TrimPrefix(srv.URL, "http://")
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) }) // runs first: held requests return
	return b
}

// backendHealthy reports the healthy column of "show backends" for one
// backend ("" when not listed).
func backendHealthy(t *testing.T, sock, svc, id string) string {
	for _, line := range strings.Split(runtimeCmd(t, sock, "show backends "+svc), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[1] == id {
			return f[4]
		}
	}
	return ""
}

// metricValue returns a counter's value from the metrics text (0 when
// absent).
func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("%s: %v", series, err)
	}
	return v
}

// TestHungBackendCostsBoundedDelay: one of two backends hangs (reads each
// request, answers nothing for 10 s) under concurrent load, with the
// edge's default flags. No request fails and none waits much longer than
// one --try-timeout (400 ms) plus the healthy backend's answer: each is
// required under 1.5 s, where before it waited out the hang. The hung
// backend is ejected by its per-try timeouts (5 in a row) within a bounded
// time, and the requests it held are cancelled.
func TestHungBackendCostsBoundedDelay(t *testing.T) {
	for _, tc := range []struct {
		proto string
		args  []string
	}{
		{"HTTP/1.1", nil},
		{"HTTP/1.1", []string{"--hedge"}},
		{"h2c", nil},
		{"h2c", []string{"--hedge"}},
	} {
		t.Run(strings.Join(append([]string{tc.proto}, tc.args...), " "), func(t *testing.T) {
			good, hung := startHung(t, "good"), startHung(t, "hung")
			hung.delay = func(*http.Request) time.Duration { return 10 * time.Second } // a paused app
			inst, sock := startEdge(t, fmt.Sprintf("routes:\n  - {name: web, addresses: [%q, %q]}\n", good.addr, hung.addr), tc.args...)
			url := "http://" + inst.Addrs["http"] + "/"
			const clients = 16

			// Warm up: both backends answer. 200 requests also fill the
			// retry budget (20% of requests, plus ten to start with) well
			// past the requests the hung backend can hold before it is
			// ejected; a budget drained by a slow start would leave a
			// request waiting out the hang, by design.
			c := clientFor(tc.proto, 15*time.Second)
			for i := 0; i < 200; i++ {
				if resp, _ := get(t, c, url, ""); resp.StatusCode != 200 {
					t.Fatalf("warm-up: %s", resp.Status)
				}
			}
			if hung.seen.Load() == 0 {
				t.Fatal("warm-up never reached the second backend")
			}

			hung.hang.Store(true)
			hangAt := time.Now()
			var ejectedAfter atomic.Int64
			pollDone := make(chan struct{})
			go func() {
				defer close(pollDone)
				for time.Since(hangAt) < 5*time.Second {
					if backendHealthy(t, sock, "static:web", hung.addr) == "false" {
						ejectedAfter.Store(int64(time.Since(hangAt)))
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
			var (
				mu       sync.Mutex
				lats     []time.Duration
				failures []string
			)
			var wg sync.WaitGroup
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := clientFor(tc.proto, 15*time.Second)
					for time.Since(hangAt) < 2*time.Second {
						t0 := time.Now()
						resp, err := c.Get(url)
						lat := time.Since(t0)
						var fail string
						if err != nil {
							fail = err.Error()
						} else {
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							if resp.StatusCode != 200 {
								fail = resp.Status
							}
						}
						mu.Lock()
						lats = append(lats, lat)
						if fail != "" {
							failures = append(failures, fail)
						}
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			<-pollDone
			slices.Sort(lats)
			p := func(q float64) time.Duration { return lats[min(len(lats)-1, int(q*float64(len(lats))))] }
			t.Logf("%d requests with one of two backends hung: %d failed, p50 %v, p99 %v, max %v; hung backend held %d, cancelled %d, ejected after %v",
				len(lats), len(failures), p(0.5), p(0.99), lats[len(lats)-1], hung.held.Load(), hung.cancelled.Load(), time.Duration(ejectedAfter.Load()))
			if len(failures) > 0 {
				t.Errorf("%d of %d requests failed (first: %s)", len(failures), len(lats), failures[0])
			}
			if max := lats[len(lats)-1]; max > 1500*time.Millisecond {
				t.Errorf("slowest request took %v, want every one under 1.5s", max)
			}
			if hung.held.Load() == 0 {
				t.Fatal("the hung backend got no request under load")
			}
			if d := time.Duration(ejectedAfter.Load()); d == 0 {
				t.Errorf("the hung backend was not ejected within 5s")
			}
			m := metricsText(t, inst)
			if v := metricValue(t, m, "switchboard_edge_http_try_timeouts_total"); v < 5 {
				t.Errorf("switchboard_edge_http_try_timeouts_total %v, want at least the 5 that ejected it", v)
			}
			// The edge let go of every request it held there.
			eventually(t, 5*time.Second, "the held requests cancelled", func() bool {
				return hung.cancelled.Load() == hung.held.Load()
			})
		})
	}
}

// TestUnsafeRequestIsNotRetried: both backends hang. A request that may
// not be resent once it reached a backend (a POST, or a PUT with a body)
// stays on its first try after the per-try timeout and gets 504 when the
// request's time (--response-timeout, 1 s) runs out: the backends saw it once.
// A GET is retried on the other backend at the per-try timeout (and then
// waits too, since no third backend is left): they saw it twice.
func TestUnsafeRequestIsNotRetried(t *testing.T) {
	for _, proto := range transports {
		for _, tc := range []struct {
			method, body string
			tries        int64
		}{
			{http.MethodPost, "one payment", 1},
			{http.MethodPut, "a document", 1},
			{http.MethodGet, "", 2},
		} {
			t.Run(proto+" "+tc.method, func(t *testing.T) {
				t.Parallel() // each case waits, on backends of its own
				a, b := startHung(t, "a"), startHung(t, "b")
				a.hang.Store(true)
				b.hang.Store(true)
				inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - {name: web, addresses: [%q, %q]}\n", a.addr, b.addr),
					"--try-timeout=100ms", "--response-timeout=1s", "--retries=2")
				var body io.Reader
				if tc.body != "" {
					body = strings.NewReader(tc.body)
				}
				req, _ := http.NewRequest(tc.method, "http://"+inst.Addrs["http"]+"/x", body)
				t0 := time.Now()
				resp, err := clientFor(proto, 10*time.Second).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				took := time.Since(t0)
				if resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get("X-Edge-Error") != "1" && proto == "HTTP/1.1" {
					t.Fatalf("%s: %s, want 504 from the edge", tc.method, resp.Status)
				}
				if took < 950*time.Millisecond {
					t.Fatalf("504 after %v, before --response-timeout", took)
				}
				if got := a.seen.Load() + b.seen.Load(); got != tc.tries {
					t.Fatalf("the backends saw the %s %d times, want %d", tc.method, got, tc.tries)
				}
			})
		}
	}
}

// TestHedgeRacesTheLateTry: a request's first try is held by its backend
// until a second try reaches the other backend (plus 300 ms), and the
// second try is held until the first is cancelled; --try-timeout is
// 600 ms. With --hedge the first try goes on when the second starts, so
// it answers and wins, and the second is cancelled when it does;
// without, the first try is cancelled at its timeout and the second
// answers. (Causal but for one assumption: the first try reaches its
// backend's handler within --try-timeout, or the backends take the
// second try for the first. 150 ms was too short on two cores loaded
// 14x under -race: the first try was abandoned unseen and the request
// waited out --response-timeout.)
func TestHedgeRacesTheLateTry(t *testing.T) {
	for _, proto := range transports {
		for _, hedge := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s hedge=%v", proto, hedge), func(t *testing.T) {
				t.Parallel() // each case waits, on backends of its own
				type req struct {
					order             []string      // backends, in arrival order
					second, firstGone chan struct{} // closed: a second try arrived; the first was cancelled
				}
				var mu sync.Mutex
				reqs := map[string]*req{}
				get := func(r *http.Request) *req {
					k := r.Header.Get("X-Req")
					if reqs[k] == nil {
						reqs[k] = &req{second: make(chan struct{}), firstGone: make(chan struct{})}
					}
					return reqs[k]
				}
				x, y := startHung(t, "x"), startHung(t, "y")
				for _, b := range []*hungBackend{x, y} {
					b.hang.Store(true)
					b.onArrive = func(r *http.Request) {
						mu.Lock()
						defer mu.Unlock()
						q := get(r)
						if q.order = append(q.order, b.name); len(q.order) == 2 {
							close(q.second)
						}
					}
					b.gate = func(r *http.Request) <-chan struct{} {
						mu.Lock()
						defer mu.Unlock()
						q := get(r)
						if q.order[0] != b.name {
							return q.firstGone
						}
						ch := make(chan struct{})
						go func() {
							<-q.second
							time.Sleep(300 * time.Millisecond)
							close(ch)
						}()
						return ch
					}
					b.onCancel = func(r *http.Request) {
						mu.Lock()
						defer mu.Unlock()
						if q := get(r); q.order[0] == b.name {
							close(q.firstGone)
						}
					}
				}
				args := []string{"--try-timeout=600ms"}
				if hedge {
					args = append(args, "--hedge")
				}
				inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - {name: web, addresses: [%q, %q]}\n", x.addr, y.addr), args...)
				c := clientFor(proto, 20*time.Second)
				const requests = 2
				for i := range requests {
					r, _ := http.NewRequest(http.MethodGet, "http://"+inst.Addrs["http"]+"/", nil)
					r.Header.Set("X-Req", strconv.Itoa(i))
					resp, err := c.Do(r)
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					mu.Lock()
					order := append([]string(nil), reqs[strconv.Itoa(i)].order...)
					mu.Unlock()
					if resp.StatusCode != 200 || len(order) != 2 {
						t.Fatalf("request %d: %s, tries at %v", i, resp.Status, order)
					}
					want := order[1]
					if hedge {
						want = order[0]
					}
					if got := resp.Header.Get("X-Backend"); got != want {
						t.Fatalf("request %d: tries at %v, answer from %q, want %q", i, order, got, want)
					}
				}
				// Each request left exactly one try unanswered, cancelled.
				eventually(t, 5*time.Second, "the losing tries cancelled", func() bool {
					return x.cancelled.Load()+y.cancelled.Load() == requests
				})
				if v := metricValue(t, metricsText(t, inst), "switchboard_edge_http_hedges_total"); (v == requests) != hedge {
					t.Fatalf("switchboard_edge_http_hedges_total %v with hedge=%v", v, hedge)
				}
			})
		}
	}
}

// TestEndpointLeavingMovesItsRequests: a request is held by a backend when
// the balancer's set drops it (deregistered) or marks it unhealthy. A GET
// in flight there goes to the other backend at once (per-try timeouts are
// off here, so nothing else would move it); a POST in flight stays and
// gets the answer the backend gives when it resumes.
func TestEndpointLeavingMovesItsRequests(t *testing.T) {
	for _, proto := range transports {
		for _, leave := range []string{"deregistered", "unhealthy"} {
			t.Run(proto+" "+leave, func(t *testing.T) {
				t.Parallel() // each case waits, on backends of its own
				bal := startBalancer(t)
				good, hung := startHung(t, "good"), startHung(t, "hung")
				both := &balancerv1.WatchEndpointsResponse{Service: "web", Endpoints: []*balancerv1.Endpoint{
					endpoint("good", good.addr, "edge.route=/"), endpoint("hung", hung.addr, "edge.route=/")}}
				bal.push(both)
				inst, sock := startEdge(t, "", "--balancer-addr="+bal.addr, "--try-timeout=0s")
				eventually(t, 5*time.Second, "both backends", func() bool {
					return backendHealthy(t, sock, "web", "hung") == "true" && backendHealthy(t, sock, "web", "good") == "true"
				})
				hung.hang.Store(true)
				url := "http://" + inst.Addrs["http"] + "/"
				c := clientFor(proto, 10*time.Second)

				// Send until one of each method is held by the hung backend.
				type result struct {
					code    int
					backend string
					err     error
				}
				send := func(method string, held *atomic.Int64) chan result {
					for {
						ch := make(chan result, 1)
						before := held.Load()
						go func() {
							var body io.Reader
							if method == http.MethodPost {
								body = strings.NewReader("order")
							}
							req, _ := http.NewRequest(method, url, body)
							resp, err := c.Do(req)
							if err != nil {
								ch <- result{err: err}
								return
							}
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							ch <- result{code: resp.StatusCode, backend: resp.Header.Get("X-Backend")}
						}()
						select {
						case r := <-ch:
							if r.err != nil || r.backend != "good" {
								t.Fatalf("%s before the hang was noticed: %+v", method, r)
							}
							continue // went to the good backend: again
						case <-time.After(5 * time.Second):
							t.Fatalf("%s: no answer", method)
						case <-waitFor(func() bool { return held.Load() > before }):
						}
						return ch
					}
				}
				var heldPosts atomic.Int64
				postCh := send(http.MethodPost, &hung.held)
				heldPosts.Store(hung.posts.Load())
				getCh := send(http.MethodGet, &hung.held)

				gone := &balancerv1.WatchEndpointsResponse{Service: "web", Endpoints: []*balancerv1.Endpoint{endpoint("good", good.addr, "edge.route=/")}}
				if leave == "unhealthy" {
					sick := endpoint("hung", hung.addr, "edge.route=/")
					sick.Healthy = false
					gone.Endpoints = append(gone.Endpoints, sick)
				}
				bal.push(gone)
				select {
				case r := <-getCh:
					if r.err != nil || r.code != 200 || r.backend != "good" {
						t.Fatalf("GET moved off the leaving backend: %+v, want 200 from good", r)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("the GET held by the leaving backend was not moved")
				}
				// The POST is still where it was: it may only finish there.
				select {
				case r := <-postCh:
					t.Fatalf("the POST held by the leaving backend ended early: %+v", r)
				case <-time.After(200 * time.Millisecond):
				}
				close(hung.release)
				select {
				case r := <-postCh:
					if r.err != nil || r.code != 200 || r.backend != "hung" {
						t.Fatalf("POST: %+v, want 200 from the backend that held it", r)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("the POST never finished")
				}
				if hung.posts.Load() != heldPosts.Load() {
					t.Fatalf("the hung backend saw %d POSTs, then %d: resent", heldPosts.Load(), hung.posts.Load())
				}
			})
		}
	}
}

// TestGRPCHungCallIsNotRetried: gRPC stays conservative. A call that
// reached a backend which then hangs is never resent (the edge neither
// buffers a call's messages nor knows whether its method is idempotent)
// and --try-timeout does not apply to it: it gets DEADLINE_EXCEEDED when
// --response-timeout passes, and only one backend saw it.
func TestGRPCHungCallIsNotRetried(t *testing.T) {
	a, b := startGRPCBackend(t, "a"), startGRPCBackend(t, "b")
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - {name: slow, path_prefix: /slow.Svc, addresses: [%q, %q]}\n", a.addr, b.addr),
		"--try-timeout=100ms", "--response-timeout=600ms", "--retries=2", "--hedge")
	cc := grpcClient(t, inst.Addrs["http"])
	for i := 1; i <= 2; i++ {
		t0 := time.Now()
		err := cc.Invoke(context.Background(), "/slow.Svc/Wait", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
		if status.Code(err) != codes.DeadlineExceeded || time.Since(t0) < 550*time.Millisecond {
			t.Fatalf("call %d: %v after %v, want DEADLINE_EXCEEDED at --response-timeout", i, err, time.Since(t0))
		}
		if got := a.waits.Load() + b.waits.Load(); got != int64(i) {
			t.Fatalf("after %d calls the backends saw %d: a call was resent", i, got)
		}
	}
}

// waitFor returns a channel closed once cond holds (polled).
func waitFor(cond func() bool) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		for !cond() {
			time.Sleep(5 * time.Millisecond)
		}
		close(ch)
	}()
	return ch
}

// TestReportsDroppedWhileBalancerAway: load reports that cannot reach the
// balancer are counted in switchboard_edge_reports_dropped_total (they used to vanish
// without a trace: the queue never filled, since each failed batch was
// simply discarded).
func TestReportsDroppedWhileBalancerAway(t *testing.T) {
	bal := startBalancer(t)
	a := backend(t, "a")
	bal.push(&balancerv1.WatchEndpointsResponse{Service: "web", Endpoints: []*balancerv1.Endpoint{endpoint("web-a", a.URL, "edge.route=/")}})
	inst, sock := startEdge(t, "", "--balancer-addr="+bal.addr)
	eventually(t, 5*time.Second, "the route", func() bool {
		return strings.Contains(runtimeCmd(t, sock, "show routes"), "web")
	})
	c := &http.Client{Timeout: 5 * time.Second}
	base := "http://" + inst.Addrs["http"] + "/"
	get(t, c, base, "")
	eventually(t, 5*time.Second, "a delivered report", func() bool { n, _ := bal.reportCount(); return n > 0 })
	if v := metricValue(t, metricsText(t, inst), "switchboard_edge_reports_dropped_total"); v != 0 {
		t.Fatalf("switchboard_edge_reports_dropped_total %v with the balancer up", v)
	}
	bal.srv.Stop()
	for i := 0; i < 20; i++ {
		if resp, _ := get(t, c, base, ""); resp.StatusCode != 200 {
			t.Fatalf("with the balancer away: %s", resp.Status)
		}
	}
	eventually(t, 10*time.Second, "dropped reports counted", func() bool {
		return metricValue(t, metricsText(t, inst), "switchboard_edge_reports_dropped_total") >= 20
	})
}

// TestRouteTryConfig: try_timeout and hedge per route, and what is
// refused.
func TestRouteTryConfig(t *testing.T) {
	for _, tc := range []struct {
		conf, err string
	}{
		{"routes:\n  - {addresses: [\"127.0.0.1:1\"], try_timeout: 250ms, hedge: true}\n", ""},
		{"routes:\n  - {addresses: [\"127.0.0.1:1\"], try_timeout: 0s}\n", ""},
		{"routes:\n  - {addresses: [\"127.0.0.1:1\"], try_timeout: -1s}\n", "routes[0].try_timeout: must not be negative"},
		{"routes:\n  - {addresses: [\"127.0.0.1:1\"], try_timeout: soon}\n", `duration "soon"`},
	} {
		_, err := edge.ParseConfig([]byte(tc.conf))
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%q: %v, want %q", tc.conf, err, tc.err)
		}
	}

	// A route's try_timeout overrides the flag: with per-try timeouts off
	// by flag, a GET to a hung backend moves at the route's 100 ms.
	a, b := startHung(t, "a"), startHung(t, "b")
	a.hang.Store(true)
	b.hang.Store(true)
	inst, _ := startEdge(t, fmt.Sprintf("routes:\n  - {name: web, addresses: [%q, %q], try_timeout: 100ms}\n", a.addr, b.addr),
		"--try-timeout=0s", "--response-timeout=1s")
	resp, _ := get(t, clientFor("HTTP/1.1", 10*time.Second), "http://"+inst.Addrs["http"]+"/", "")
	if resp.StatusCode != http.StatusGatewayTimeout || a.seen.Load()+b.seen.Load() != 2 {
		t.Fatalf("%s after %d tries, want 504 after 2 (the route's try_timeout)", resp.Status, a.seen.Load()+b.seen.Load())
	}
}

// TestRetryReachesEjectedHealthyBackend: one backend was ejected by a
// burst of timeouts and is well again (its checks pass: nothing lifts the
// ejection early), then the other hangs. Retries after a try timeout go
// to the ejected backend rather than back to the hung one, so no request
// fails — where every one used to wait out its tries on the hung backend.
func TestRetryReachesEjectedHealthyBackend(t *testing.T) {
	for _, proto := range transports {
		t.Run(proto, func(t *testing.T) {
			a, b := startHung(t, "a"), startHung(t, "b")
			inst, sock := startEdge(t, fmt.Sprintf("routes:\n  - {name: web, addresses: [%q, %q]}\n", a.addr, b.addr))
			url := "http://" + inst.Addrs["http"] + "/"
			c := clientFor(proto, 5*time.Second)

			// b times out until the edge ejects it.
			b.delay = func(*http.Request) time.Duration { return 2 * time.Second }
			b.hang.Store(true)
			eventually(t, 20*time.Second, "b ejected", func() bool {
				resp, err := c.Get(url)
				if err == nil {
					resp.Body.Close()
				}
				return backendHealthy(t, sock, "static:web", b.addr) == "false"
			})
			b.hang.Store(false) // well again; still ejected
			a.delay = func(*http.Request) time.Duration { return 10 * time.Second }
			a.hang.Store(true) // a paused app

			c = clientFor(proto, 2*time.Second)
			for i := range 10 {
				start := time.Now()
				resp, err := c.Get(url)
				if err != nil {
					t.Fatalf("request %d with a hung and an ejected backend: %v after %v", i, err, time.Since(start).Round(time.Millisecond))
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != "b" {
					t.Fatalf("request %d: %d %q, want 200 from b", i, resp.StatusCode, body)
				}
			}
		})
	}
}
