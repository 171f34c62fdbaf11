package balancer

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
)

func scrape(t *testing.T, inst *servicetest.Instance) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + inst.Addrs["admin"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestServiceMetrics checks the per-service endpoint gauges after real
// reports: an endpoint whose breaker opened, one ejected (its breaker
// open too), one critical in the registry, none left healthy; and that a
// service's series go when the registry no longer lists it.
func TestServiceMetrics(t *testing.T) {
	reg, addr, _ := newFakeRegistry(t)
	reg.set(inst("web", "a", 1, passing, 0), inst("web", "b", 2, passing, 0), inst("web", "c", 3, critical, 0),
		inst("api", "x", 4, passing, 0))
	c, bi := startBalancer(t, addr, t.TempDir())
	ctx := context.Background()
	if _, err := c.SetPolicy(ctx, &balancerv1.SetPolicyRequest{Service: "web", Policy: &balancerv1.Policy{
		Outlier: &balancerv1.OutlierDetection{ConsecutiveFailures: 4, BaseEjectionTime: durationpb.New(time.Hour), MaxEjectionTime: durationpb.New(time.Hour),
			MaxEjectionPercent: 100},
		Breaker: &balancerv1.CircuitBreaker{FailureThreshold: 2, OpenTime: durationpb.New(time.Hour)},
	}}); err != nil {
		t.Fatal(err)
	}
	want := func(lines ...string) func() error {
		return func() error {
			m := scrape(t, bi)
			for _, l := range lines {
				if !strings.Contains(m, l+"\n") {
					return fmt.Errorf("no %s in\n%s", l, grep(m, "switchboard_balancer_"))
				}
			}
			return nil
		}
	}
	eventually(t, "both services' gauges", want(
		`switchboard_balancer_endpoints{service="web"} 3`,
		`switchboard_balancer_endpoints_healthy{service="web"} 2`,
		`switchboard_balancer_endpoints_ejected{service="web"} 0`,
		`switchboard_balancer_breaker_open{service="web"} 0`,
		`switchboard_balancer_endpoints{service="api"} 1`,
		`switchboard_balancer_endpoints_healthy{service="api"} 1`,
	))

	fail := func(id string, n int) {
		var reports []*balancerv1.LoadReport
		for range n {
			reports = append(reports, &balancerv1.LoadReport{Service: "web", EndpointId: id,
				Outcome: balancerv1.Outcome_OUTCOME_FAILURE, Latency: durationpb.New(time.Millisecond)})
		}
		if _, err := c.Report(ctx, &balancerv1.ReportRequest{Reports: reports}); err != nil {
			t.Fatal(err)
		}
	}
	fail("a", 2) // breaker opens
	fail("b", 4) // breaker opens, then outlier detection ejects it
	eventually(t, "the breaker and ejection gauges", want(
		`switchboard_balancer_endpoints{service="web"} 3`,
		`switchboard_balancer_endpoints_healthy{service="web"} 0`,
		`switchboard_balancer_endpoints_ejected{service="web"} 1`,
		`switchboard_balancer_breaker_open{service="web"} 2`,
	))

	reg.set(inst("web", "a", 1, passing, 0), inst("web", "b", 2, passing, 0), inst("web", "c", 3, critical, 0))
	eventually(t, "api's series to go", func() error {
		if m := scrape(t, bi); strings.Contains(m, `service="api"`) {
			return fmt.Errorf("api still exported:\n%s", grep(m, `service="api"`))
		}
		return nil
	})
}

func grep(text, s string) string {
	var out []string
	for l := range strings.SplitSeq(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
