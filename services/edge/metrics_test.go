package edge_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
)

// sample returns the value of the series named exactly by series (name
// and labels as the exposition writes them, labels sorted), and whether
// it is there.
func sample(text, series string) (float64, bool) {
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// reservedLabel finds a label named job or instance: Prometheus sets
// those itself at scrape time, so a target's own would be renamed
// exported_job / exported_instance.
var reservedLabel = regexp.MustCompile(`[{,](job|instance)="`)

// TestBackendMetrics checks the per-backend series after real traffic:
// upstream latency per try, bytes each way, up (0 for a backend the
// balancer calls unhealthy), active requests while one is in flight, and
// that a backend's series leave with it.
func TestBackendMetrics(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			entered <- struct{}{}
			<-release
		}
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "a:%d", len(b))
	}))
	t.Cleanup(a.Close)
	b := backend(t, "b")
	bal := startBalancer(t)
	down := endpoint("web-b", b.URL, "edge.route=/")
	down.Healthy = false
	bal.push(&balancerv1.WatchEndpointsResponse{Service: "web", Endpoints: []*balancerv1.Endpoint{
		endpoint("web-a", a.URL, "edge.route=/"), down}})
	inst, _ := startEdge(t, "", "--balancer-addr="+bal.addr)
	base := "http://" + inst.Addrs["http"]
	c := &http.Client{Timeout: 10 * time.Second}
	eventually(t, 5*time.Second, "the route", func() bool {
		resp, err := c.Get(base + "/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	const posts, size = 4, 10000
	for range posts {
		resp, err := c.Post(base+"/up", "application/octet-stream", bytes.NewReader(make([]byte, size)))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != fmt.Sprintf("a:%d", size) {
			t.Fatalf("POST answered %q", got)
		}
	}

	const a1, b1 = `{backend="web-a",service="web"}`, `{backend="web-b",service="web"}`
	m := metricsText(t, inst)
	// The readiness GET and the POSTs: every try had a first byte.
	if n, _ := sample(m, "switchboard_edge_backend_upstream_latency_seconds_count"+a1); n < posts+1 {
		t.Errorf("latency count of web-a = %v, want at least %d\n%s", n, posts+1, grepLines(m, "switchboard_edge_backend_"))
	}
	if n, _ := sample(m, `switchboard_edge_backend_bytes_total{backend="web-a",direction="sent",service="web"}`); n < posts*size {
		t.Errorf("bytes sent to web-a = %v, want at least %d", n, posts*size)
	}
	if n, _ := sample(m, `switchboard_edge_backend_bytes_total{backend="web-a",direction="received",service="web"}`); n <= 0 {
		t.Errorf("bytes received from web-a = %v, want some", n)
	}
	for series, want := range map[string]float64{
		"switchboard_edge_backend_up" + a1:              1,
		"switchboard_edge_backend_up" + b1:              0,
		"switchboard_edge_backend_active_requests" + a1: 0,
		"switchboard_edge_backend_requests_total" + b1:  0,
	} {
		if v, ok := sample(m, series); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
	if l := reservedLabel.FindString(m); l != "" {
		t.Errorf("a series has a label Prometheus reserves: %s", l)
	}

	// One request held in the backend is an active request.
	done := make(chan error, 1)
	go func() {
		resp, err := c.Get(base + "/hold")
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-entered
	if v, _ := sample(metricsText(t, inst), "switchboard_edge_backend_active_requests"+a1); v != 1 {
		t.Errorf("active requests of web-a while one is held = %v, want 1", v)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "active requests back to 0", func() bool {
		v, ok := sample(metricsText(t, inst), "switchboard_edge_backend_active_requests"+a1)
		return ok && v == 0
	})

	// web-b leaves the set: its series go; web-a's stay.
	bal.push(&balancerv1.WatchEndpointsResponse{Service: "web", Endpoints: []*balancerv1.Endpoint{
		endpoint("web-a", a.URL, "edge.route=/")}})
	eventually(t, 5*time.Second, "web-b's series to go", func() bool {
		return !strings.Contains(metricsText(t, inst), `backend="web-b"`)
	})
	if _, ok := sample(metricsText(t, inst), "switchboard_edge_backend_up"+a1); !ok {
		t.Error("web-a's up series went with web-b's")
	}
}
