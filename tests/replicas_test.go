package tests

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/balancer"
	proberpkg "github.com/switchboard-net/switchboard/services/prober"
	"github.com/switchboard-net/switchboard/services/registry"
	"github.com/switchboard-net/switchboard/services/registry/storetest"
)

// TestPolicyOnOneBalancerInForceOnTheOther: two balancer replicas follow
// one registry; a SetPolicy on either is in force on the other within a
// second (the time from SetPolicy's call until the other's WatchEndpoints
// stream carries the new policy). Every round is logged; the median must
// be under a second.
func TestPolicyOnOneBalancerInForceOnTheOther(t *testing.T) {
	reg := servicetest.Start(t, registry.Spec(), "--store=embedded", "--data-dir="+t.TempDir())
	policyRounds(t, reg, reg)
}

// TestPolicyAcrossRegistriesOnConsul: the same with each balancer on its
// own registry, the two registries sharing one Consul: the policy travels
// through Consul's KV and the other registry's blocking query.
func TestPolicyAcrossRegistriesOnConsul(t *testing.T) {
	c := storetest.StartConsul(t)
	var regs []*servicetest.Instance
	for range 2 {
		regs = append(regs, servicetest.Start(t, registry.Spec(), "--store=consul", "--consul-addr="+c.Addr, "--consul-prefix=test/"+t.Name()+"/"))
	}
	policyRounds(t, regs[0], regs[1])
}

// policyRounds starts a balancer on each registry and times five
// SetPolicy rounds, alternating between them.
func policyRounds(t *testing.T, reg0, reg1 *servicetest.Instance) {
	t.Helper()
	r := registryv1.NewRegistryClient(reg0.Conn(t))
	register(t, r, "orders", "orders-1", 9001, 1)
	register(t, r, "orders", "orders-2", 9002, 1)
	var bals []balancerv1.BalancerClient
	for _, reg := range []*servicetest.Instance{reg0, reg1} {
		b := servicetest.Start(t, balancer.Spec(), "--registry-addr="+reg.Addrs["grpc"], "--data-dir="+t.TempDir(), "--refresh-interval=50ms")
		bals = append(bals, balancerv1.NewBalancerClient(b.Conn(t)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	streams := make([]balancerv1.Balancer_WatchEndpointsClient, 2)
	for i, b := range bals {
		s, err := b.WatchEndpoints(ctx, &balancerv1.WatchEndpointsRequest{Service: "orders"})
		if err != nil {
			t.Fatal(err)
		}
		streams[i] = s
	}
	policies := []*balancerv1.Policy{
		{Name: "p2c"}, {Name: "consistent_hash", HashOn: "header:x-user"}, {Name: "least_conn"},
		{Name: "weighted_round_robin", SlowStart: durationpb.New(7 * time.Second)}, {Name: "round_robin"},
	}
	var took []time.Duration
	for round, p := range policies {
		from, to := round%2, 1-round%2
		start := time.Now()
		if _, err := bals[from].SetPolicy(ctx, &balancerv1.SetPolicyRequest{Service: "orders", Policy: p}); err != nil {
			t.Fatal(err)
		}
		for {
			resp, err := streams[to].Recv()
			if err != nil {
				t.Fatalf("round %d: balancer %d's stream: %v", round, to, err)
			}
			got := resp.GetPolicy()
			if got.GetName() == p.Name && (p.HashOn == "" || got.GetHashOn() == p.HashOn) && got.GetSlowStart().AsDuration() == p.GetSlowStart().AsDuration() {
				break
			}
		}
		d := time.Since(start)
		took = append(took, d)
		t.Logf("round %d: SetPolicy(%s) on balancer %d in force on balancer %d after %v", round, p.Name, from, to, d)
		got, err := bals[to].GetPolicy(ctx, &balancerv1.GetPolicyRequest{Service: "orders"})
		if err != nil || got.Policy.GetName() != p.Name || got.Stale {
			t.Fatalf("round %d: GetPolicy on the other balancer = %v, %v", round, got, err)
		}
	}
	slices.Sort(took)
	if med := took[len(took)/2]; med > time.Second {
		t.Fatalf("median time for a policy to reach the other balancer %v, want under 1s (rounds %v)", med, took)
	}
}

// acceptCounter accepts TCP connections on loopback and counts them.
type acceptCounter struct {
	ln    net.Listener
	count atomic.Int64
}

func startAcceptCounter(t *testing.T) *acceptCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &acceptCounter{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.count.Add(1)
			conn.Close()
		}
	}()
	return c
}

func (c *acceptCounter) port() uint32 { return uint32(c.ln.Addr().(*net.TCPAddr).Port) }

// checkedInstances returns the instances a prober's /metrics says it
// health-checks (its switchboard_prober_instance_up series).
func checkedInstances(t *testing.T, admin string) map[string]bool {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`switchboard_prober_instance_up\{id="([^"]+)",service="shared"\}`)
	out := map[string]bool{}
	for _, m := range re.FindAllStringSubmatch(string(body), -1) {
		out[m[1]] = true
	}
	return out
}

// TestProbersShareJobsAndChecks: two probers on one registry register
// themselves and split the health checks and the scheduled jobs by
// rendezvous hashing — every check runs on exactly one, a job scheduled
// through either runs on one (its connections to the target are exactly
// the results that one holds), both list the same runner — and when one
// stops, the other takes everything over.
func TestProbersShareJobsAndChecks(t *testing.T) {
	reg := servicetest.Start(t, registry.Spec(), "--store=embedded", "--data-dir="+t.TempDir())
	r := registryv1.NewRegistryClient(reg.Conn(t))
	const n = 12
	want := map[string]bool{}
	for i := range n {
		l := startAcceptCounter(t)
		id := fmt.Sprintf("i-%02d", i)
		want[id] = true
		_, err := r.Register(context.Background(), &registryv1.RegisterRequest{Instance: &registryv1.Instance{
			Service: "shared", Id: id, Address: "127.0.0.1", Port: l.port(),
			Check: &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_TCP, Interval: durationpb.New(time.Second)},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	type prober struct {
		id    string
		inst  *servicetest.Instance
		c     proberv1.ProberClient
		admin string
	}
	var ps []*prober
	for _, id := range []string{"p1", "p2"} {
		inst := servicetest.Start(t, proberpkg.Spec(), "--registry-addr="+reg.Addrs["grpc"], "--id="+id, "--member-ttl=3s",
			"--data-dir="+t.TempDir(), "--discovery-group=", "--bandwidth-addr=", "--allow=loopback")
		ps = append(ps, &prober{id: id, inst: inst, c: proberv1.NewProberClient(inst.Conn(t)), admin: inst.Addrs["admin"]})
	}
	until(t, "both probers registered and passing", func() error {
		resp, err := r.GetService(context.Background(), &registryv1.GetServiceRequest{Service: proberpkg.MemberService})
		if err != nil {
			return err
		}
		if len(resp.Instances) != 2 {
			return fmt.Errorf("%d passing probers", len(resp.Instances))
		}
		return nil
	})
	// Every instance is checked by exactly one prober.
	until(t, "the checks split between the probers", func() error {
		a, b := checkedInstances(t, ps[0].admin), checkedInstances(t, ps[1].admin)
		for id := range want {
			if a[id] == b[id] {
				return fmt.Errorf("%s checked by p1 %v, p2 %v", id, a[id], b[id])
			}
		}
		if len(a)+len(b) != n {
			return fmt.Errorf("p1 checks %d, p2 %d, want %d in all", len(a), len(b), n)
		}
		if len(a) == 0 || len(b) == 0 {
			return fmt.Errorf("one prober checks everything: p1 %d, p2 %d", len(a), len(b))
		}
		return nil
	})
	a, b := checkedInstances(t, ps[0].admin), checkedInstances(t, ps[1].admin)
	t.Logf("health checks: p1 %d, p2 %d of %d", len(a), len(b), n)

	// A job scheduled through p1 runs on exactly one prober.
	target := startAcceptCounter(t)
	job := &proberv1.Job{Id: "shared-check", Interval: durationpb.New(time.Second), Spec: &proberv1.JobSpec{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{
		Kind: "tcp", Target: fmt.Sprintf("127.0.0.1:%d", target.port())}}}}
	ctx := context.Background()
	if _, err := ps[0].c.Schedule(ctx, &proberv1.ScheduleRequest{Job: job}); err != nil {
		t.Fatal(err)
	}
	var runner string
	until(t, "both probers list the job with the same runner", func() error {
		var runners []string
		for _, p := range ps {
			list, err := p.c.ListJobs(ctx, &proberv1.ListJobsRequest{})
			if err != nil {
				return err
			}
			if len(list.Jobs) != 1 || list.Stale {
				return fmt.Errorf("%s lists %v (stale %v)", p.id, list.Jobs, list.Stale)
			}
			runners = append(runners, list.Jobs[0].Runner)
		}
		if runners[0] != runners[1] || runners[0] == "" {
			return fmt.Errorf("runners %v", runners)
		}
		runner = runners[0]
		return nil
	})
	results := func(p *prober) []*proberv1.JobResult {
		t.Helper()
		resp, err := p.c.Results(ctx, &proberv1.ResultsRequest{Id: "shared-check", Limit: 50})
		if err != nil {
			t.Fatalf("%s results: %v", p.id, err)
		}
		return resp.Results
	}
	until(t, "three runs of the job", func() error {
		total := 0
		for _, p := range ps {
			total += len(results(p))
		}
		if total < 3 {
			return fmt.Errorf("%d runs", total)
		}
		return nil
	})
	var byProber []string
	total := 0
	for _, p := range ps {
		rs := results(p)
		total += len(rs)
		byProber = append(byProber, fmt.Sprintf("%s ran %d", p.id, len(rs)))
		if p.id != runner && len(rs) != 0 {
			t.Errorf("%s is not the job's runner (%s) but ran it %d times", p.id, runner, len(rs))
		}
		for _, res := range rs {
			if res.Prober != p.id || !res.Success {
				t.Errorf("%s's result %v: want a success by %s", p.id, res, p.id)
			}
		}
	}
	// Each run is one connection: the target saw exactly the runs the
	// probers hold (give a run in flight time to be recorded).
	until(t, "connections to the job's target equal to the runs", func() error {
		sum := 0
		for _, p := range ps {
			sum += len(results(p))
		}
		if got := target.count.Load(); got != int64(sum) {
			return fmt.Errorf("%d connections for %d results", got, sum)
		}
		return nil
	})
	t.Logf("job: %v; runner %s", byProber, runner)

	// The runner stops: the other takes the job and every check over.
	var gone, left *prober
	for _, p := range ps {
		if p.id == runner {
			gone = p
		} else {
			left = p
		}
	}
	stopped := time.Now()
	if err := gone.inst.Stop(); err != nil {
		t.Fatal(err)
	}
	until(t, "the survivor checks every instance", func() error {
		if got := checkedInstances(t, left.admin); len(got) != n {
			return fmt.Errorf("%s checks %d of %d", left.id, len(got), n)
		}
		return nil
	})
	took := time.Since(stopped)
	t.Logf("checks taken over %v after the stop", took)
	// A stopped prober deregisters: the others need not wait for its TTL
	// (whose expiry would come 2-3s after the stop).
	if took > 1500*time.Millisecond {
		t.Errorf("checks moved %v after a graceful stop: the TTL (3s, heartbeats every 1s) would have moved them after 2-3s: did the prober deregister?", took)
	}
	until(t, "the survivor runs the job", func() error {
		rs := results(left)
		if len(rs) == 0 {
			return fmt.Errorf("%s has no result", left.id)
		}
		if rs[0].Prober != left.id {
			return fmt.Errorf("newest result by %q", rs[0].Prober)
		}
		return nil
	})
	t.Logf("job taken over %v after the stop", time.Since(stopped))
}

// TestDeadProbersShareMovesAfterItsTTL: a prober that dies without
// deregistering (here a member the test heartbeats, then abandons) owns
// a share of the checks that nobody runs while it lives; once its TTL
// passes without a heartbeat the registry marks it critical and the live
// prober takes its share, within the TTL and one check interval.
func TestDeadProbersShareMovesAfterItsTTL(t *testing.T) {
	reg := servicetest.Start(t, registry.Spec(), "--store=embedded", "--data-dir="+t.TempDir())
	r := registryv1.NewRegistryClient(reg.Conn(t))
	ctx := context.Background()
	const n = 12
	for i := range n {
		l := startAcceptCounter(t)
		_, err := r.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
			Service: "shared", Id: fmt.Sprintf("i-%02d", i), Address: "127.0.0.1", Port: l.port(),
			Check: &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_TCP, Interval: durationpb.New(time.Second)},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	// The doomed member, alive while the test heartbeats it.
	_, err := r.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
		Service: proberpkg.MemberService, Id: "doomed", Address: "127.0.0.1", Port: 1,
		Check: &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_TTL, Interval: durationpb.New(2 * time.Second)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	beat, stopBeat := context.WithCancel(ctx)
	defer stopBeat()
	go func() {
		for beat.Err() == nil {
			_, _ = r.Heartbeat(beat, &registryv1.HeartbeatRequest{Service: proberpkg.MemberService, Id: "doomed"})
			select {
			case <-beat.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	p := servicetest.Start(t, proberpkg.Spec(), "--registry-addr="+reg.Addrs["grpc"], "--id=live", "--member-ttl=3s",
		"--discovery-group=", "--bandwidth-addr=", "--allow=loopback")
	var share int
	until(t, "the live prober checks its share only", func() error {
		share = len(checkedInstances(t, p.Addrs["admin"]))
		if share == 0 || share == n {
			return fmt.Errorf("checks %d of %d", share, n)
		}
		return nil
	})
	stopBeat()
	died := time.Now()
	until(t, "the live prober checks every instance", func() error {
		if got := len(checkedInstances(t, p.Addrs["admin"])); got != n {
			return fmt.Errorf("checks %d of %d", got, n)
		}
		return nil
	})
	took := time.Since(died)
	t.Logf("share %d of %d before; all %d checked %v after the last heartbeat (TTL 2s)", share, n, n, took)
	if took > 2*time.Second+4*time.Second {
		t.Errorf("took %v: want about the TTL (2s) and one check interval (1s)", took)
	}
}

// TestProberStartsFromItsJobCacheWithoutRegistry: jobs.json is the
// start-up cache of the registry's job list: a prober that starts while
// the registry is unreachable lists the cached jobs as stale, runs the
// ones it ran last, and refuses Schedule (Unavailable) rather than keep a
// job no other prober would know.
func TestProberStartsFromItsJobCacheWithoutRegistry(t *testing.T) {
	reg := servicetest.Start(t, registry.Spec(), "--store=embedded", "--data-dir="+t.TempDir())
	dir := t.TempDir()
	args := []string{"--id=solo", "--member-ttl=1s", "--data-dir=" + dir, "--discovery-group=", "--bandwidth-addr=", "--allow=loopback"}
	p := servicetest.Start(t, proberpkg.Spec(), append(args, "--registry-addr="+reg.Addrs["grpc"])...)
	c := proberv1.NewProberClient(p.Conn(t))
	ctx := context.Background()
	target := startAcceptCounter(t)
	job := &proberv1.Job{Id: "cached", Interval: durationpb.New(time.Second), Spec: &proberv1.JobSpec{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{
		Kind: "tcp", Target: fmt.Sprintf("127.0.0.1:%d", target.port())}}}}
	if _, err := c.Schedule(ctx, &proberv1.ScheduleRequest{Job: job}); err != nil {
		t.Fatal(err)
	}
	until(t, "the job listed with its runner", func() error {
		list, err := c.ListJobs(ctx, &proberv1.ListJobsRequest{})
		if err != nil {
			return err
		}
		if len(list.Jobs) != 1 || list.Jobs[0].Runner != "solo" || list.Stale {
			return fmt.Errorf("jobs %v stale %v", list.Jobs, list.Stale)
		}
		return nil
	})
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := reg.Stop(); err != nil {
		t.Fatal(err)
	}
	// The registry's address now refuses connections.
	p2 := servicetest.Start(t, proberpkg.Spec(), append(args, "--registry-addr="+reg.Addrs["grpc"])...)
	c2 := proberv1.NewProberClient(p2.Conn(t))
	list, err := c2.ListJobs(ctx, &proberv1.ListJobsRequest{})
	if err != nil || len(list.Jobs) != 1 || list.Jobs[0].Id != "cached" || !list.Stale {
		t.Fatalf("ListJobs without the registry = %v, %v; want the cached job, stale", list, err)
	}
	before := target.count.Load()
	until(t, "the cached job running", func() error {
		resp, err := c2.Results(ctx, &proberv1.ResultsRequest{Id: "cached"})
		if err != nil {
			return err
		}
		if len(resp.Results) == 0 || target.count.Load() == before {
			return fmt.Errorf("%d results, %d connections", len(resp.Results), target.count.Load()-before)
		}
		return nil
	})
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	job.Id = "new"
	if _, err := c2.Schedule(sctx, &proberv1.ScheduleRequest{Job: job}); status.Code(err) != codes.Unavailable {
		t.Fatalf("Schedule without the registry = %v, want Unavailable", err)
	}
}
