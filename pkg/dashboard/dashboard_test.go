package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSource returns a fixed catalog and probe RTTs that move with every
// call, as a live prober's would. Its clock advances 20 s per call, so a
// few polls of the page fill a few minutes of the chart.
type fakeSource struct {
	mu    sync.Mutex
	calls int
	err   error
	start time.Time
}

func (f *fakeSource) State(context.Context) (*State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if f.start.IsZero() {
		f.start = time.Now().Add(-3 * time.Minute)
	}
	f.calls++
	n := f.calls
	at := f.start.Add(time.Duration(n) * 20 * time.Second)
	return &State{
		At: at,
		Services: []Service{
			{Name: "demo", Instances: []Instance{
				{ID: "demo-1", Addr: "172.18.0.7:8080", Health: HealthPassing, Share: 0.5, Requests: uint64(100 * n)},
				{ID: "demo-2", Addr: "172.18.0.8:8080", Health: HealthPassing, Share: 0.5, Requests: uint64(100 * n)},
				{ID: "demo-3", Addr: "172.18.0.9:8080", Health: HealthCritical, Share: 0, Requests: 0},
			}},
			{Name: "payments", Instances: []Instance{
				{ID: "pay-a", Addr: "10.0.0.4:9000", Health: HealthWarning, Share: 1, Requests: uint64(40 * n)},
			}},
		},
		Probes: []Probe{
			{Name: "ping-demo-1", Target: "172.18.0.7", RTTms: 0.4 + 0.3*float64(n%5), OK: true, At: at},
			{Name: "check-demo-2", Target: "http http://172.18.0.8:8080/healthz", RTTms: 2 + float64(n%3), OK: n%4 != 0, At: at},
		},
	}, nil
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestHandlerServesPage(t *testing.T) {
	mux := http.NewServeMux()
	Register(mux, &fakeSource{})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, path := range []string{"/dashboard", "/dashboard/"} {
		resp, body := get(t, srv.URL+path)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("GET %s: Content-Type %q", path, ct)
		}
		html := string(body)
		for _, want := range []string{"<svg id=\"chart\"", "/api/state", "<style>", "<script>"} {
			if !strings.Contains(html, want) {
				t.Errorf("GET %s: page lacks %q", path, want)
			}
		}
		// Self-contained: nothing is loaded from another origin.
		for _, bad := range []string{"src=\"http", "href=\"http", "@import", "<link "} {
			if strings.Contains(html, bad) {
				t.Errorf("GET %s: page loads external resources (%q)", path, bad)
			}
		}
	}
	if resp, _ := get(t, srv.URL+"/dashboard/nope"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /dashboard/nope: %s, want 404", resp.Status)
	}
}

func TestHandlerStateJSON(t *testing.T) {
	srv := httptest.NewServer(Handler(&fakeSource{}))
	defer srv.Close()

	resp, body := get(t, srv.URL+StatePath)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", StatePath, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	// The page reads exactly these names.
	var raw struct {
		At       string `json:"at"`
		Services []struct {
			Name      string `json:"name"`
			Instances []struct {
				ID       string   `json:"id"`
				Addr     string   `json:"addr"`
				Health   string   `json:"health"`
				Share    *float64 `json:"share"`
				Requests *uint64  `json:"requests"`
			} `json:"instances"`
		} `json:"services"`
		Probes []struct {
			Name   string   `json:"name"`
			Target string   `json:"target"`
			RTTms  *float64 `json:"rtt_ms"`
			OK     *bool    `json:"ok"`
			At     string   `json:"at"`
		} `json:"probes"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	if _, err := time.Parse(time.RFC3339Nano, raw.At); err != nil {
		t.Errorf("at %q: %v", raw.At, err)
	}
	if len(raw.Services) != 2 || raw.Services[0].Name != "demo" || len(raw.Services[0].Instances) != 3 {
		t.Fatalf("services: %s", body)
	}
	in := raw.Services[0].Instances[0]
	if in.ID != "demo-1" || in.Addr != "172.18.0.7:8080" || in.Health != "passing" || in.Share == nil || *in.Share != 0.5 || in.Requests == nil || *in.Requests != 100 {
		t.Errorf("instance: %+v", in)
	}
	if len(raw.Probes) != 2 || raw.Probes[0].Name != "ping-demo-1" || raw.Probes[0].RTTms == nil || raw.Probes[0].OK == nil || raw.Probes[0].At == "" {
		t.Errorf("probes: %s", body)
	}
}

func TestHandlerStateEmptyIsArrays(t *testing.T) {
	src := SourceFunc(func(context.Context) (*State, error) { return &State{Services: []Service{{Name: "idle"}}}, nil })
	srv := httptest.NewServer(Handler(src))
	defer srv.Close()
	_, body := get(t, srv.URL+StatePath)
	// The page iterates these; null would break it.
	for _, want := range []string{`"probes":[]`, `"instances":[]`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("state %s lacks %s", body, want)
		}
	}
}

func TestHandlerStateError(t *testing.T) {
	srv := httptest.NewServer(Handler(&fakeSource{err: errors.New("registry: connection refused")}))
	defer srv.Close()
	resp, body := get(t, srv.URL+StatePath)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %s, want 503", resp.Status)
	}
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || !strings.Contains(e.Error, "connection refused") {
		t.Errorf("body %s (%v)", body, err)
	}
}

func TestHandlerStateTimesOut(t *testing.T) {
	src := SourceFunc(func(ctx context.Context) (*State, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	srv := httptest.NewServer(Handler(src))
	defer srv.Close()
	start := time.Now()
	resp, _ := get(t, srv.URL+StatePath)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %s, want 503", resp.Status)
	}
	if d := time.Since(start); d > stateTimeout+2*time.Second {
		t.Errorf("a hung source held the request %v", d)
	}
}
