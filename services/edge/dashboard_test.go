package edge_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

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
