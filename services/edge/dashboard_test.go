package edge_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/wire"
)

func TestWireTokenChecked(t *testing.T) {
	inst, _ := startEdge(t, "", "--wire-token=s3cret")
	tests := []struct {
		token string
		ok    bool
	}{
		{"s3cret", true},
		{"wrong", false},
		{"", false},
	}
	for _, tt := range tests {
		conn, err := net.DialTimeout("tcp", inst.Addrs["wire"], 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		s, err := wire.Client(conn, wire.Config{Token: []byte(tt.token)})
		if tt.ok != (err == nil) {
			t.Errorf("token %q: session error %v, want ok=%v", tt.token, err, tt.ok)
		}
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if _, err := s.Ping(ctx); err != nil {
				t.Errorf("token %q: ping: %v", tt.token, err)
			}
			cancel()
			s.Close()
		} else if wire.CodeOf(err) != wire.CodeUnauthorized {
			t.Errorf("token %q: refused with %v, want UNAUTHORIZED", tt.token, wire.CodeOf(err))
		}
		conn.Close()
	}
}

func TestDashboardServedOnAdminPort(t *testing.T) {
	inst, _ := startEdge(t, "")
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + inst.Addrs["admin"] + "/dashboard")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /dashboard = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, err = c.Get("http://" + inst.Addrs["admin"] + "/dashboard/api/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var state map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&state); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /dashboard/api/state = %d, %v", resp.StatusCode, err)
	}
}
