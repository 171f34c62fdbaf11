package edge_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
)

// The contract of the edge's request pipeline: every behaviour below runs
// over each client protocol it applies to — HTTP/1.1 (the fast path), h2c
// and HTTP/2 over TLS (net/http's server) and gRPC (h2c calls, forwarded
// over HTTP/2) — so a behaviour added to one protocol is tested on all.

// contractProtos are the client protocols of the contract table.
var contractProtos = []string{"HTTP/1.1", "h2c", "h2", "grpc"}

// contractEdge is one edge under the contract test, with its backends and
// a fake balancer (load reports).
type contractEdge struct {
	proto   string
	base    string // scheme://addr of the edge's listener for proto
	client  *http.Client
	bal     *fakeBalancer
	admin   string
	logPath string
	stop    func() error
	victim  *httptest.Server // a backend of /gone, killed by the test
}

// echoH is the contract's backend handler: it names itself in X-Backend,
// echoes the request's headers as X-Got-*, its target as X-Got-Path, reads
// the body and answers with its length and the request trailer X-Sum, and
// sends the trailer X-Trailer-Sum. It speaks HTTP/1.1 and h2c (gRPC
// calls arrive over h2c); gRPC calls get one empty message and grpc-status 0.
func echoH(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h := w.Header()
		h.Set("X-Backend", name)
		for k, v := range r.Header {
			h["X-Got-"+k] = v
		}
		h.Set("X-Got-Path", r.RequestURI)
		h.Set("X-Got-Host", r.Host)
		h.Set("Trailer", "X-Trailer-Sum")
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			h.Set("Content-Type", "application/grpc")
			h.Set("Trailer", "Grpc-Status, X-Trailer-Sum")
			w.WriteHeader(http.StatusOK)
			w.Write([]byte{0, 0, 0, 0, 0})
			h.Set("Grpc-Status", "0")
			h.Set("X-Trailer-Sum", "7")
			return
		}
		fmt.Fprintf(w, "%s:%d:%s", name, len(b), r.Trailer.Get("X-Sum"))
		h.Set("X-Trailer-Sum", "7")
	})
}

// startH2CServer serves h with HTTP/1.1 and h2c on loopback.
func startH2CServer(t *testing.T, h http.Handler) string {
	t.Helper()
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	s := httptest.NewUnstartedServer(h)
	s.Config.Protocols = &protos
	s.Start()
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// closingBackend accepts connections and closes each after reading the
// first bytes: every request to it fails before an answer.
func closingBackend(t *testing.T) string {
	t.Helper()
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
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				c.Read(make([]byte, 1024))
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

// startContractEdge starts an edge for proto with these routes (each a
// registry-style service fed by the fake balancer, so outcomes are
// reported):
//
//	/web    web: one echo backend
//	/strip  web, strip_prefix
//	/mix    mix: a backend refusing connections and an echo backend
//	/hung   hung: a backend that never answers
//	/slow   slow: a backend that sends its head, then its body 400ms later
//	/closer closer: a backend that closes every connection unanswered
//	/empty  empty: no endpoints
//	/gone   gone: two echo backends, one of which the test kills
func startContractEdge(t *testing.T, proto string) *contractEdge {
	t.Helper()
	web := startH2CServer(t, echoH("web"))
	live := startH2CServer(t, echoH("live"))
	dead := refusingAddr(t)
	hung := startHung(t, "hung")
	hung.hang.Store(true)
	slow := startH2CServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			w.Header().Set("Content-Type", "application/grpc")
		}
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		time.Sleep(400 * time.Millisecond)
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			w.Write([]byte{0, 0, 0, 0, 0})
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
			return
		}
		io.WriteString(w, "slow")
	}))
	closer := closingBackend(t)
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	victim := httptest.NewUnstartedServer(echoH("victim"))
	victim.Config.Protocols = &protos
	victim.Start()
	t.Cleanup(victim.Close)
	survivor := startH2CServer(t, echoH("survivor"))

	bal := startBalancer(t)
	set := func(svc string, eps ...*balancerv1.Endpoint) {
		bal.push(&balancerv1.WatchEndpointsResponse{Service: svc, Endpoints: eps})
	}
	set("web", endpoint("web", web))
	set("mix", endpoint("dead", dead), endpoint("live", live))
	set("hung", endpoint("hung", hung.addr))
	set("slow", endpoint("slow", slow))
	set("closer", endpoint("closer", closer))
	set("empty")
	set("gone", endpoint("victim", victim.Listener.Addr().String()), endpoint("survivor", survivor))

	dir := t.TempDir()
	cert, key := writeCert(t, dir, "a.example")
	logPath := filepath.Join(dir, "access.log")
	conf := `routes:
  - {name: web, path_prefix: /web, service: web}
  - {name: strip, path_prefix: /strip, strip_prefix: true, service: web}
  - {name: mix, path_prefix: /mix, service: mix}
  - {name: hung, path_prefix: /hung, service: hung, try_timeout: 0s}
  - {name: slow, path_prefix: /slow, service: slow}
  - {name: closer, path_prefix: /closer, service: closer}
  - {name: empty, path_prefix: /empty, service: empty}
  - {name: gone, path_prefix: /gone, service: gone}
`
	inst, _ := startEdge(t, conf, "--balancer-addr="+bal.addr, "--response-timeout=1s",
		"--https-addr=127.0.0.1:0", "--https-cert="+cert, "--https-key="+key,
		"--access-log="+logPath, "--retry-budget=100")
	ce := &contractEdge{proto: proto, bal: bal, admin: inst.Addrs["admin"], logPath: logPath, stop: inst.Stop, victim: victim}
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	switch proto {
	case "HTTP/1.1":
		ce.base = "http://" + inst.Addrs["http"]
	case "h2c", "grpc":
		var protos http.Protocols
		protos.SetUnencryptedHTTP2(true)
		tr.Protocols = &protos
		ce.base = "http://" + inst.Addrs["http"]
	case "h2":
		tr.TLSClientConfig = &tls.Config{ServerName: "a.example", InsecureSkipVerify: true}
		tr.ForceAttemptHTTP2 = true
		ce.base = "https://" + inst.Addrs["https"]
	}
	ce.client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	// Wait for the balancer's sets: the routes answer once they are in.
	eventually(t, 5*time.Second, "the endpoint sets", func() bool {
		resp, err := ce.client.Get(ce.base + "/web/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return ce
}

// result is a response as the contract compares it across protocols:
// gRPC's status rides in the trailers (or the headers, trailers-only).
type result struct {
	code       int
	hdr        http.Header
	trailer    http.Header
	body       string
	grpcStatus string
	grpcMsg    string
	proto      string
}

// do sends one request the way proto's users do: for gRPC, a POST with
// Content-Type application/grpc and one empty message.
func (ce *contractEdge) do(t *testing.T, method, path string, hdr http.Header, body io.Reader) result {
	t.Helper()
	if ce.proto == "grpc" {
		method = http.MethodPost
		body = strings.NewReader("\x00\x00\x00\x00\x00")
	}
	req, err := http.NewRequest(method, ce.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if ce.proto == "grpc" {
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
	}
	resp, err := ce.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", method, path, ce.proto, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := result{code: resp.StatusCode, hdr: resp.Header, trailer: resp.Trailer, body: string(b), proto: resp.Proto}
	if ce.proto == "grpc" {
		r.grpcStatus, r.grpcMsg = resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
		if r.grpcStatus == "" {
			r.grpcStatus, r.grpcMsg = resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
		}
	}
	return r
}

// wantProto checks the response came over the protocol under test.
func (ce *contractEdge) wantProto(t *testing.T, r result) {
	t.Helper()
	want := "HTTP/2.0"
	if ce.proto == "HTTP/1.1" {
		want = "HTTP/1.1"
	}
	if r.proto != want {
		t.Fatalf("spoke %s, want %s", r.proto, want)
	}
}

// wantEdgeError checks an answer of the edge itself: the HTTP status (or,
// for gRPC, HTTP 200 with grpcCode) with X-Edge-Error and a message
// containing msg.
func (ce *contractEdge) wantEdgeError(t *testing.T, r result, code, grpcCode int, msg string) {
	t.Helper()
	if r.hdr.Get("X-Edge-Error") != "1" {
		t.Errorf("X-Edge-Error missing: %d %v", r.code, r.hdr)
	}
	if ce.proto == "grpc" {
		if r.code != http.StatusOK || r.grpcStatus != fmt.Sprint(grpcCode) || !strings.Contains(r.grpcMsg, msg) {
			t.Errorf("got HTTP %d grpc-status %q %q, want grpc-status %d with %q", r.code, r.grpcStatus, r.grpcMsg, grpcCode, msg)
		}
		return
	}
	if r.code != code || !strings.Contains(r.body, msg) {
		t.Errorf("got %d %q, want %d with %q", r.code, r.body, code, msg)
	}
}

func (ce *contractEdge) metrics(t *testing.T) string {
	t.Helper()
	resp, body := get(t, http.DefaultClient, "http://"+ce.admin+"/metrics", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	return body
}

// reports returns the load reports the balancer got for an endpoint.
func (ce *contractEdge) reports(id string) []*balancerv1.LoadReport {
	ce.bal.mu.Lock()
	defer ce.bal.mu.Unlock()
	var out []*balancerv1.LoadReport
	for _, r := range ce.bal.reports {
		if r.GetEndpointId() == id {
			out = append(out, r)
		}
	}
	return out
}

func TestPipelineContract(t *testing.T) {
	for _, proto := range contractProtos {
		t.Run(proto, func(t *testing.T) {
			ce := startContractEdge(t, proto)
			grpc := proto == "grpc"

			t.Run("forwarded headers", func(t *testing.T) {
				hdr := http.Header{"X-Forwarded-For": {"203.0.113.7"}, "Forwarded": {"for=203.0.113.7"}}
				r := ce.do(t, http.MethodGet, "/web/fwd", hdr, nil)
				ce.wantProto(t, r)
				if r.code != http.StatusOK {
					t.Fatalf("status %d %q", r.code, r.body)
				}
				scheme := "http"
				if proto == "h2" {
					scheme = "https"
				}
				host := strings.TrimPrefix(strings.TrimPrefix(ce.base, "http://"), "https://")
				for k, want := range map[string]string{
					"X-Got-X-Forwarded-For":   "203.0.113.7, 127.0.0.1",
					"X-Got-X-Forwarded-Proto": scheme,
					"X-Got-X-Forwarded-Host":  host,
					"X-Got-Forwarded":         `for=203.0.113.7, for=127.0.0.1;host="` + host + `";proto=` + scheme,
					"X-Got-Host":              host,
				} {
					if got := strings.Join(r.hdr.Values(k), ", "); got != want {
						t.Errorf("%s = %q, want %q", k, got, want)
					}
				}
				if grpc && r.hdr.Get("X-Got-Te") != "trailers" {
					t.Errorf("gRPC call reached the backend with TE %q, want trailers", r.hdr.Get("X-Got-Te"))
				}
			})

			t.Run("hop-by-hop headers removed", func(t *testing.T) {
				if proto != "HTTP/1.1" {
					t.Skip("HTTP/2 has no connection-specific headers (RFC 9113 §8.2.2)")
				}
				hdr := http.Header{"Connection": {"X-Hop"}, "X-Hop": {"1"}, "Keep-Alive": {"timeout=5"}, "X-End": {"1"}}
				r := ce.do(t, http.MethodGet, "/web/hop", hdr, nil)
				if r.hdr.Get("X-Got-X-Hop") != "" || r.hdr.Get("X-Got-Keep-Alive") != "" || r.hdr.Get("X-Got-X-End") != "1" {
					t.Errorf("backend got X-Hop %q Keep-Alive %q X-End %q", r.hdr.Get("X-Got-X-Hop"), r.hdr.Get("X-Got-Keep-Alive"), r.hdr.Get("X-Got-X-End"))
				}
			})

			t.Run("retries past a dead backend", func(t *testing.T) {
				for i := range 10 {
					r := ce.do(t, http.MethodGet, fmt.Sprintf("/mix/%d", i), nil, nil)
					if r.code != http.StatusOK || r.hdr.Get("X-Backend") != "live" || (grpc && r.grpcStatus != "0") {
						t.Fatalf("request %d: %d %q from %q (grpc-status %q %q)", i, r.code, r.body, r.hdr.Get("X-Backend"), r.grpcStatus, r.grpcMsg)
					}
				}
			})

			t.Run("retries past a backend killed under use", func(t *testing.T) {
				seen := map[string]int{}
				for i := range 10 {
					r := ce.do(t, http.MethodGet, fmt.Sprintf("/gone/%d", i), nil, nil)
					seen[r.hdr.Get("X-Backend")]++
				}
				if seen["victim"] == 0 || seen["survivor"] == 0 {
					t.Fatalf("before the kill the requests went to %v, want both backends", seen)
				}
				ce.victim.Close() // its pooled connections break, new ones are refused
				for i := range 10 {
					r := ce.do(t, http.MethodGet, fmt.Sprintf("/gone/after/%d", i), nil, nil)
					if grpc && i == 0 && r.grpcStatus == "14" && strings.Contains(r.grpcMsg, "closed the connection") {
						// A call sent on the multiplexed connection while the
						// backend was closing it may have reached the app: gRPC
						// calls are never resent then (grpc_test.go). Only the
						// first call can meet that connection.
						continue
					}
					if r.code != http.StatusOK || r.hdr.Get("X-Backend") != "survivor" || (grpc && r.grpcStatus != "0") {
						t.Fatalf("request %d after the kill: %d %q from %q (grpc-status %q %q)", i, r.code, r.body, r.hdr.Get("X-Backend"), r.grpcStatus, r.grpcMsg)
					}
				}
			})

			t.Run("timeout reported as OUTCOME_TIMEOUT", func(t *testing.T) {
				r := ce.do(t, http.MethodGet, "/hung/x", nil, nil)
				ce.wantEdgeError(t, r, http.StatusGatewayTimeout, 4, "did not answer in time")
				eventually(t, 5*time.Second, "a timeout report for the hung backend", func() bool {
					for _, rep := range ce.reports("hung") {
						if rep.GetOutcome() == balancerv1.Outcome_OUTCOME_TIMEOUT {
							return true
						}
					}
					return false
				})
				for _, rep := range ce.reports("hung") {
					if rep.GetOutcome() != balancerv1.Outcome_OUTCOME_TIMEOUT {
						t.Errorf("hung backend reported %v", rep.GetOutcome())
					}
				}
			})

			t.Run("edge errors", func(t *testing.T) {
				r := ce.do(t, http.MethodGet, "/nowhere", nil, nil)
				ce.wantEdgeError(t, r, http.StatusNotFound, 12, "no route for ")
				r = ce.do(t, http.MethodGet, "/empty/x", nil, nil)
				ce.wantEdgeError(t, r, http.StatusServiceUnavailable, 14,
					"no backend available for service empty (none registered, or all disabled)")
				r = ce.do(t, http.MethodGet, "/closer/x", nil, nil)
				ce.wantEdgeError(t, r, http.StatusBadGateway, 14, "closed the connection")
			})

			t.Run("prefix strip keeps the encoded path", func(t *testing.T) {
				r := ce.do(t, http.MethodGet, "/strip/x/..%2F..%2Fadmin?q=%2F", nil, nil)
				if r.code != http.StatusOK {
					t.Fatalf("status %d %q", r.code, r.body)
				}
				if got := r.hdr.Get("X-Got-Path"); got != "/x/..%2F..%2Fadmin?q=%2F" {
					t.Errorf("backend saw %q, want /x/..%%2F..%%2Fadmin?q=%%2F", got)
				}
				r = ce.do(t, http.MethodGet, "/strip", nil, nil)
				if got := r.hdr.Get("X-Got-Path"); got != "/" {
					t.Errorf("backend saw %q for the bare prefix, want /", got)
				}
			})

			t.Run("trailers both ways", func(t *testing.T) {
				if grpc {
					r := ce.do(t, http.MethodPost, "/web/pkg.Svc/Call", nil, nil)
					if r.grpcStatus != "0" || r.trailer.Get("X-Trailer-Sum") != "7" {
						t.Fatalf("grpc-status %q, trailer X-Trailer-Sum %q", r.grpcStatus, r.trailer.Get("X-Trailer-Sum"))
					}
					return
				}
				req, _ := http.NewRequest(http.MethodPost, ce.base+"/web/up", io.MultiReader(strings.NewReader("hello "), strings.NewReader("world")))
				req.ContentLength = -1
				req.Trailer = http.Header{"X-Sum": {"11"}}
				resp, err := ce.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "web:11:11" || resp.Trailer.Get("X-Trailer-Sum") != "7" {
					t.Fatalf("body %q trailer %q", b, resp.Trailer.Get("X-Trailer-Sum"))
				}
			})

			t.Run("latency split", func(t *testing.T) {
				start := time.Now()
				r := ce.do(t, http.MethodGet, "/slow/x", nil, nil)
				if r.code != http.StatusOK {
					t.Fatalf("status %d", r.code)
				}
				if took := time.Since(start); took < 400*time.Millisecond {
					t.Fatalf("the slow body came in %v", took)
				}
				eventually(t, 5*time.Second, "the slow backend's report", func() bool { return len(ce.reports("slow")) > 0 })
				for _, rep := range ce.reports("slow") {
					if l := rep.GetLatency().AsDuration(); l >= 350*time.Millisecond {
						t.Errorf("balancer got latency %v for a backend whose head came at once (the body streaming counted)", l)
					}
				}
				m := ce.metrics(t)
				if v := metricValue(t, m, `switchboard_edge_http_upstream_latency_seconds_sum{route="slow"}`); v >= 0.35 {
					t.Errorf("upstream latency %.3fs includes the body", v)
				}
				if v := metricValue(t, m, `switchboard_edge_http_request_duration_seconds_sum{route="slow"}`); v < 0.4 {
					t.Errorf("request duration %.3fs is less than the body took", v)
				}
			})

			t.Run("metrics and access log", func(t *testing.T) {
				r := ce.do(t, http.MethodGet, "/web/logged?k=v", nil, nil)
				if r.code != http.StatusOK {
					t.Fatalf("status %d", r.code)
				}
				// A request is counted and timed once its response is
				// written: the client can read the answer and scrape between
				// the two. Wait (bounded) for the count and the durations to
				// agree, as they must once every request has finished.
				counted := func(m string) (n, d float64) {
					for _, c := range []string{"1xx", "2xx", "3xx", "4xx", "5xx", "other"} {
						n += metricValue(t, m, `switchboard_edge_http_requests_total{code="`+c+`",route="web"}`)
					}
					return n, metricValue(t, m, `switchboard_edge_http_request_duration_seconds_count{route="web"}`)
				}
				m := ce.metrics(t)
				for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); m = ce.metrics(t) {
					if n, d := counted(m); n == d {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				for _, s := range []string{
					`switchboard_edge_http_requests_total{code="2xx",route="web"}`,
					`switchboard_edge_http_request_duration_seconds_count{route="web"}`,
					`switchboard_edge_http_upstream_latency_seconds_count{route="web"}`,
					`switchboard_edge_backend_requests_total{backend="web",service="web"}`,
				} {
					if metricValue(t, m, s) < 1 {
						t.Errorf("%s not counted", s)
					}
				}
				if n, d := counted(m); n != d {
					t.Errorf("web: %v requests but %v durations", n, d)
				}
				if got := metricValue(t, m, `switchboard_edge_http_requests_total{code="5xx",route="hung"}`); got != 1 {
					t.Errorf("hung route counted %v 5xx, want 1", got)
				}
				if got := metricValue(t, m, `switchboard_edge_http_requests_total{code="5xx",route="empty"}`); got != 1 {
					t.Errorf("empty route counted %v 5xx, want 1", got)
				}
				if err := ce.stop(); err != nil { // flushes the access log
					t.Fatal(err)
				}
				lines := accessLines(t, ce.logPath)
				wantProto := "HTTP/2.0"
				if proto == "HTTP/1.1" {
					wantProto = "HTTP/1.1"
				}
				method, status, grpcSt := "GET", "200", "-"
				if grpc {
					method, grpcSt = "POST", "0"
				}
				found := false
				for _, f := range lines {
					if f[4] == "/web/logged?k=v" {
						found = true
						if f[2] != method || f[5] != status || f[8] != "web" || f[9] != "web" || f[10] != wantProto || f[11] != grpcSt {
							t.Errorf("access log line %q", strings.Join(f, " "))
						}
					}
				}
				if !found {
					t.Errorf("no access log line for /web/logged?k=v in %d lines", len(lines))
				}
				for _, f := range lines {
					if f[4] == "/empty/x" && (f[5] != map[bool]string{true: "200", false: "503"}[grpc] || f[8] != "empty") {
						t.Errorf("access log line %q", strings.Join(f, " "))
					}
				}
			})
		})
	}
}

// accessLines returns the access log's lines split into fields.
func accessLines(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) == 12 {
			out = append(out, fs)
		}
	}
	return out
}

// TestTCPTriesLikeHTTP: the TCP proxy picks, retries and reports through
// the same try code as HTTP requests: a connection whose backend refuses
// goes to another backend not tried yet, the refusal is reported as
// OUTCOME_FAILURE, and the connected backend's report carries the connect
// time, not the connection's lifetime.
func TestTCPTriesLikeHTTP(t *testing.T) {
	live := tcpBackend(t, false)
	dead := refusingAddr(t)
	bal := startBalancer(t)
	bal.push(&balancerv1.WatchEndpointsResponse{Service: "db", Endpoints: []*balancerv1.Endpoint{endpoint("dead", dead), endpoint("live", live)}})
	inst, _ := startEdge(t, "tcp:\n  - {listen: \"127.0.0.1:0\", service: db}\n", "--balancer-addr="+bal.addr, "--retries=1")
	ce := &contractEdge{bal: bal}
	eventually(t, 5*time.Second, "the endpoint set", func() bool {
		c, err := net.Dial("tcp", inst.Addrs["tcp0"])
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		return string(b) == "|"
	})
	for i := range 10 {
		c, err := net.Dial("tcp", inst.Addrs["tcp0"])
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "ping")
		time.Sleep(100 * time.Millisecond) // a connection that lasts longer than its connect
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "PING|" {
			t.Fatalf("connection %d: %q", i, b)
		}
	}
	eventually(t, 5*time.Second, "reports of both backends", func() bool {
		return len(ce.reports("dead")) > 0 && len(ce.reports("live")) >= 10
	})
	for _, r := range ce.reports("dead") {
		if r.GetOutcome() != balancerv1.Outcome_OUTCOME_FAILURE {
			t.Errorf("refusing backend reported %v", r.GetOutcome())
		}
	}
	for _, r := range ce.reports("live") {
		if r.GetOutcome() != balancerv1.Outcome_OUTCOME_SUCCESS || r.GetLatency().AsDuration() >= 100*time.Millisecond {
			t.Errorf("live backend reported %v after %v, want success with the connect time", r.GetOutcome(), r.GetLatency().AsDuration())
		}
	}
}
