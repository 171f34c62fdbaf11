package prober_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/netnstest"
	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/prober"
)

// start runs a prober on loopback without registry or discovery unless
// args say otherwise.
func start(t *testing.T, args ...string) (*servicetest.Instance, proberv1.ProberClient) {
	t.Helper()
	all := append([]string{"--registry-addr=", "--discovery-group=", "--bandwidth-addr=127.0.0.1:0"}, args...)
	inst := servicetest.Start(t, prober.Spec(), all...)
	return inst, proberv1.NewProberClient(inst.Conn(t))
}

// run runs a job and returns its progress and result.
func run(t *testing.T, c proberv1.ProberClient, spec *proberv1.JobSpec) ([]*proberv1.Progress, *proberv1.JobResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := c.Run(ctx, &proberv1.RunRequest{Spec: spec})
	if err != nil {
		return nil, nil, err
	}
	var progress []*proberv1.Progress
	var res *proberv1.JobResult
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return progress, nil, err
		}
		if p := m.GetProgress(); p != nil {
			progress = append(progress, p)
		}
		if r := m.GetResult(); r != nil {
			res = r
		}
	}
	if res == nil {
		t.Fatal("stream ended without a result")
	}
	return progress, res, nil
}

func listen(t *testing.T) int {
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
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestScanFindsExactlyOpenedPorts opens three listeners in a network
// namespace of the test's own (so no other program's listener can be in
// the way) and scans 1-2000 plus a window around each: exactly those three
// ports are open, every other port closed.
func TestScanFindsExactlyOpenedPorts(t *testing.T) {
	l := netnstest.NewLink(t, true)
	var lns []net.Listener
	var lerr error
	netnstest.Do(t, l.NS[1], func() {
		for i := 0; i < 3 && lerr == nil; i++ {
			var ln net.Listener
			if ln, lerr = net.Listen("tcp", net.JoinHostPort(l.Addr[1].String(), "0")); lerr == nil {
				lns = append(lns, ln)
			}
		}
	})
	if lerr != nil {
		t.Fatal(lerr)
	}
	var ports []int
	spec := "1-2000"
	for _, ln := range lns {
		defer ln.Close()
		go acceptAll(ln)
		p := ln.Addr().(*net.TCPAddr).Port
		ports = append(ports, p)
		spec += "," + itoa(p-5) + "-" + itoa(p+5)
	}
	_, c := start(t, "--allow=loopback,"+l.Addr[1].String())
	progress, res, err := run(t, c, &proberv1.JobSpec{Kind: &proberv1.JobSpec_Scan{Scan: &proberv1.ScanSpec{
		Target: l.Addr[1].String(), Ports: spec, Concurrency: 128, Timeout: durationpb.New(2 * time.Second)}}})
	if err != nil {
		t.Fatal(err)
	}
	sr := res.GetScan()
	if !res.GetSuccess() || sr == nil {
		t.Fatalf("result %v", res)
	}
	var open []int
	for _, p := range sr.GetPorts() {
		if p.GetState() == proberv1.PortState_PORT_STATE_OPEN {
			open = append(open, int(p.GetPort()))
		}
	}
	sort.Ints(ports)
	if fmt.Sprint(open) != fmt.Sprint(ports) {
		t.Fatalf("open ports %v, want exactly %v", open, ports)
	}
	if sr.GetOpen() != 3 || sr.GetFiltered() != 0 || sr.GetClosed() != sr.GetScanned()-3 || sr.GetScanned() < 2000 {
		t.Errorf("counts %v", sr)
	}
	streamed := 0
	for _, p := range progress {
		if p.GetPort() != nil {
			streamed++
		}
	}
	if streamed != 3 {
		t.Errorf("streamed %d open ports, want 3", streamed)
	}
}

// TestScanLoopback scans a window around a loopback listener (the fast
// path) and finds it.
func TestScanLoopback(t *testing.T) {
	_, c := start(t)
	p := listen(t)
	_, res, err := run(t, c, &proberv1.JobSpec{Kind: &proberv1.JobSpec_Scan{Scan: &proberv1.ScanSpec{
		Target: "127.0.0.1", Ports: itoa(p-2) + "-" + itoa(p+2)}}})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, q := range res.GetScan().GetPorts() {
		found = found || (int(q.GetPort()) == p && q.GetState() == proberv1.PortState_PORT_STATE_OPEN)
	}
	if !found || res.GetScan().GetScanned() != 5 {
		t.Fatalf("result %v", res)
	}
}

func TestPingStreamsRepliesAndSummary(t *testing.T) {
	_, c := start(t)
	progress, res, err := run(t, c, &proberv1.JobSpec{Kind: &proberv1.JobSpec_Ping{Ping: &proberv1.PingSpec{
		Target: "localhost", Count: 3, Interval: durationpb.New(20 * time.Millisecond)}}})
	if err != nil {
		t.Fatal(err)
	}
	p := res.GetPing()
	if !res.GetSuccess() || p.GetSent() != 3 || p.GetReceived() != 3 || p.GetLossPercent() != 0 || p.GetAddress() != "127.0.0.1" {
		t.Fatalf("result %v", res)
	}
	if p.GetMin().AsDuration() <= 0 || p.GetAvg().AsDuration() < p.GetMin().AsDuration() || p.GetMax().AsDuration() < p.GetAvg().AsDuration() {
		t.Fatalf("rtt summary %v", p)
	}
	if len(progress) != 3 || progress[0].GetPingReply().GetSeq() != 1 {
		t.Fatalf("progress %v", progress)
	}
}

func TestTracerouteLoopback(t *testing.T) {
	_, c := start(t)
	_, res, err := run(t, c, &proberv1.JobSpec{Kind: &proberv1.JobSpec_Traceroute{Traceroute: &proberv1.TracerouteSpec{Target: "127.0.0.1", MaxHops: 3, Probes: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	tr := res.GetTraceroute()
	if !res.GetSuccess() || !tr.GetReached() || len(tr.GetHops()) != 1 || tr.GetHops()[0].GetAddress() != "127.0.0.1" {
		t.Fatalf("result %v", res)
	}
}

func TestChecksAndHostTables(t *testing.T) {
	_, c := start(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "all good") }), ReadHeaderTimeout: time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/"

	for _, tt := range []struct {
		spec *proberv1.CheckSpec
		ok   bool
	}{
		{&proberv1.CheckSpec{Kind: "http", Target: url, ExpectBody: "good"}, true},
		{&proberv1.CheckSpec{Kind: "http", Target: url, ExpectBody: "bad"}, false},
		{&proberv1.CheckSpec{Kind: "tcp", Target: ln.Addr().String()}, true},
		{&proberv1.CheckSpec{Kind: "grpc", Target: ln.Addr().String(), Timeout: durationpb.New(time.Second)}, false},
	} {
		_, res, err := run(t, c, &proberv1.JobSpec{Kind: &proberv1.JobSpec_Check{Check: tt.spec}})
		if err != nil {
			t.Fatal(err)
		}
		if res.GetSuccess() != tt.ok || res.GetCheck().GetOk() != tt.ok {
			t.Errorf("%v: %v", tt.spec, res)
		}
	}

	_, res, err := run(t, c, &proberv1.JobSpec{Kind: &proberv1.JobSpec_Connections{Connections: &proberv1.ConnectionsSpec{Protocols: []string{"tcp"}, State: "LISTEN"}}})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range res.GetConnections().GetConnections() {
		found = found || s.GetLocal() == ln.Addr().String()
	}
	if !found {
		t.Errorf("listener %s not in the socket table", ln.Addr())
	}
	_, res, err = run(t, c, &proberv1.JobSpec{Kind: &proberv1.JobSpec_Interfaces{Interfaces: &proberv1.InterfacesSpec{}}})
	if err != nil || len(res.GetInterfaces().GetInterfaces()) == 0 {
		t.Fatalf("interfaces: %v %v", res, err)
	}
}

// TestBandwidthBetweenTwoProbers runs TCP and UDP tests, both directions,
// from one prober to another's bandwidth port.
func TestBandwidthBetweenTwoProbers(t *testing.T) {
	far, _ := start(t)
	_, c := start(t)
	for _, tt := range []struct {
		proto   string
		reverse bool
	}{{"tcp", false}, {"tcp", true}, {"udp", false}, {"udp", true}} {
		_, res, err := run(t, c, &proberv1.JobSpec{Kind: &proberv1.JobSpec_Bandwidth{Bandwidth: &proberv1.BandwidthSpec{
			Peer: far.Addrs["bandwidth"], Protocol: tt.proto, Reverse: tt.reverse, Duration: durationpb.New(300 * time.Millisecond), RateBps: 20_000_000}}})
		if err != nil {
			t.Fatal(err)
		}
		bw := res.GetBandwidth()
		if !res.GetSuccess() || bw.GetBitsPerSecond() <= 0 || bw.GetBytes() == 0 {
			t.Fatalf("%s reverse=%v: %v", tt.proto, tt.reverse, res)
		}
		if tt.proto == "udp" && (bw.GetPacketsSent() == 0 || bw.GetLossPercent() > 20) {
			t.Fatalf("%s reverse=%v: %v", tt.proto, tt.reverse, res)
		}
	}
}

// TestBadSpecsNameTheField checks every kind of bad input is
// InvalidArgument with the offending field in the message.
func TestBadSpecsNameTheField(t *testing.T) {
	_, c := start(t)
	d := durationpb.New
	tests := []struct {
		spec  *proberv1.JobSpec
		field string
	}{
		{nil, "spec"},
		{&proberv1.JobSpec{}, "spec"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Ping{Ping: &proberv1.PingSpec{}}}, "spec.ping.target"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Ping{Ping: &proberv1.PingSpec{Target: "127.0.0.1", Count: 100000}}}, "spec.ping.count"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Ping{Ping: &proberv1.PingSpec{Target: "127.0.0.1", Interval: d(time.Microsecond)}}}, "spec.ping.interval"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Ping{Ping: &proberv1.PingSpec{Target: "127.0.0.1", Size: 3}}}, "spec.ping.size"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Ping{Ping: &proberv1.PingSpec{Target: "not a host!"}}}, "spec.ping.target"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Traceroute{Traceroute: &proberv1.TracerouteSpec{Target: "127.0.0.1", MaxHops: 1000}}}, "spec.traceroute.max_hops"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Scan{Scan: &proberv1.ScanSpec{Target: "127.0.0.1", Ports: "1-70000"}}}, "spec.scan.ports"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Scan{Scan: &proberv1.ScanSpec{Target: "127.0.0.1", Concurrency: 5000}}}, "spec.scan.concurrency"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Scan{Scan: &proberv1.ScanSpec{Target: "127.0.0.1", Timeout: d(time.Hour)}}}, "spec.scan.timeout"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{Kind: "smtp", Target: "127.0.0.1:25"}}}, "spec.check.kind"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{Kind: "http", Target: "ftp://x/"}}}, "spec.check.target"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{Kind: "http", Target: "http://127.0.0.1/", ExpectBody: "("}}}, "spec.check.expect_body"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{Kind: "dns", Target: "127.0.0.1:53"}}}, "spec.check.dns_name"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{Kind: "dns", Target: "127.0.0.1:53", DnsName: "x", DnsType: "BOGUS"}}}, "spec.check.dns_type"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Bandwidth{Bandwidth: &proberv1.BandwidthSpec{Peer: "127.0.0.1:7402", Protocol: "sctp"}}}, "spec.bandwidth.protocol"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Bandwidth{Bandwidth: &proberv1.BandwidthSpec{Peer: "127.0.0.1"}}}, "spec.bandwidth.peer"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Bandwidth{Bandwidth: &proberv1.BandwidthSpec{Peer: "127.0.0.1:1", Duration: d(time.Hour)}}}, "spec.bandwidth.duration"},
		{&proberv1.JobSpec{Kind: &proberv1.JobSpec_Connections{Connections: &proberv1.ConnectionsSpec{Protocols: []string{"sctp"}}}}, "spec.connections.protocols[0]"},
	}
	for _, tt := range tests {
		_, _, err := run(t, c, tt.spec)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.field+":") {
			t.Errorf("%v: got %v, want InvalidArgument naming %s", tt.spec, err, tt.field)
		}
	}
	_, err := c.Schedule(context.Background(), &proberv1.ScheduleRequest{Job: &proberv1.Job{Id: "bad id!", Interval: d(time.Second)}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "job.id") {
		t.Errorf("bad id: %v", err)
	}
	_, err = c.Schedule(context.Background(), &proberv1.ScheduleRequest{Job: &proberv1.Job{Id: "x", Interval: d(time.Millisecond),
		Spec: &proberv1.JobSpec{Kind: &proberv1.JobSpec_Interfaces{Interfaces: &proberv1.InterfacesSpec{}}}}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "job.interval") {
		t.Errorf("bad interval: %v", err)
	}
	_, _, err = run(t, c, &proberv1.JobSpec{Kind: &proberv1.JobSpec_Peers{Peers: &proberv1.PeersSpec{}}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("peers with discovery off: %v", err)
	}
}

// TestAllowlistRefusesBeforeAnyPacket points every kind of job at an
// address in a namespace the test owns, outside the allowlist: each is
// PermissionDenied, and a counter on the far end sees no packet at all.
// The same jobs from a prober that allows the subnet reach it.
func TestAllowlistRefusesBeforeAnyPacket(t *testing.T) {
	l := netnstest.NewLink(t, true)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft")
	}
	target := l.Addr[1].String()
	count := netnstest.Counter(t, l.NS[1], "ip daddr "+target)
	specs := func() []*proberv1.JobSpec {
		return []*proberv1.JobSpec{
			{Kind: &proberv1.JobSpec_Ping{Ping: &proberv1.PingSpec{Target: target, Count: 1}}},
			{Kind: &proberv1.JobSpec_Traceroute{Traceroute: &proberv1.TracerouteSpec{Target: target, MaxHops: 2, Probes: 1}}},
			{Kind: &proberv1.JobSpec_Scan{Scan: &proberv1.ScanSpec{Target: target, Ports: "1-20"}}},
			{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{Kind: "http", Target: "http://" + target + "/"}}},
			{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{Kind: "tcp", Target: target + ":80"}}},
			{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{Kind: "dns", Target: target + ":53", DnsName: "x."}}},
			{Kind: &proberv1.JobSpec_Bandwidth{Bandwidth: &proberv1.BandwidthSpec{Peer: target + ":7402"}}},
		}
	}
	_, c := start(t) // default allowlist: loopback, registered, peers
	for _, s := range specs() {
		_, _, err := run(t, c, s)
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%v: got %v, want PermissionDenied", s, err)
		}
	}
	_, err := c.Schedule(context.Background(), &proberv1.ScheduleRequest{Job: &proberv1.Job{Id: "outside", Interval: durationpb.New(time.Second), Spec: specs()[0]}})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("schedule: got %v, want PermissionDenied", err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d packets reached the refused target", n)
	}
	// Positive control: the counter does see a prober that is allowed.
	_, c2 := start(t, "--allow=loopback,"+l.Addr[1].String()+"/32")
	_, res, err := run(t, c2, specs()[0])
	if err != nil || !res.GetSuccess() {
		t.Fatalf("allowed ping: %v %v", res, err)
	}
	if n := count(); n == 0 {
		t.Fatal("the counter saw nothing from an allowed ping")
	}
}

// TestScheduleResultsAndPersistence schedules a job, reads its results
// and metrics, restarts the prober on the same data dir and finds the job
// again, then unschedules it.
func TestScheduleResultsAndPersistence(t *testing.T) {
	dir := t.TempDir()
	inst, c := start(t, "--data-dir="+dir)
	ctx := context.Background()
	job := &proberv1.Job{Id: "lo-ping", Interval: durationpb.New(time.Second), Spec: &proberv1.JobSpec{Kind: &proberv1.JobSpec_Ping{Ping: &proberv1.PingSpec{
		Target: "127.0.0.1", Count: 2, Interval: durationpb.New(10 * time.Millisecond)}}}}
	if _, err := c.Schedule(ctx, &proberv1.ScheduleRequest{Job: job}); err != nil {
		t.Fatal(err)
	}
	var results []*proberv1.JobResult
	deadline := time.Now().Add(15 * time.Second)
	for len(results) < 2 && time.Now().Before(deadline) {
		r, err := c.Results(ctx, &proberv1.ResultsRequest{Id: "lo-ping"})
		if err != nil {
			t.Fatal(err)
		}
		results = r.GetResults()
		time.Sleep(50 * time.Millisecond)
	}
	if len(results) < 2 {
		t.Fatalf("results %v", results)
	}
	if !results[0].GetStartedAt().AsTime().After(results[1].GetStartedAt().AsTime()) || results[0].GetJobId() != "lo-ping" || !results[0].GetSuccess() {
		t.Fatalf("results not newest first or failed: %v", results)
	}
	body := get(t, "http://"+inst.Addrs["admin"]+"/metrics")
	for _, want := range []string{`switchboard_prober_probe_success{job_id="lo-ping",kind="ping"} 1`, `switchboard_prober_ping_rtt_seconds{job_id="lo-ping",stat="avg"}`, `switchboard_prober_ping_loss_ratio{job_id="lo-ping"} 0`, `switchboard_prober_jobs_total{kind="ping",result="success"}`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if err := inst.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := filepath.Glob(filepath.Join(dir, "jobs.json.tmp*")); err != nil {
		t.Fatal(err)
	}

	_, c = start(t, "--data-dir="+dir)
	list, err := c.ListJobs(ctx, &proberv1.ListJobsRequest{})
	if err != nil || len(list.GetJobs()) != 1 || list.GetJobs()[0].GetId() != "lo-ping" || list.GetJobs()[0].GetSpec().GetPing().GetCount() != 2 {
		t.Fatalf("after restart: %v %v", list, err)
	}
	if _, err := c.Unschedule(ctx, &proberv1.UnscheduleRequest{Id: "lo-ping"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Unschedule(ctx, &proberv1.UnscheduleRequest{Id: "lo-ping"}); status.Code(err) != codes.NotFound {
		t.Fatalf("second unschedule: %v", err)
	}
	if _, err := c.Results(ctx, &proberv1.ResultsRequest{Id: "lo-ping"}); status.Code(err) != codes.NotFound {
		t.Fatalf("results of a removed job: %v", err)
	}
}

// TestHealthLoopFlipsInstance registers (in a fake registry) an instance
// whose TCP check hits a listener the test controls; closing it makes
// the prober report CRITICAL after --fall failures, reopening it PASSING
// after --rise passes. TTL instances are left alone.
func TestHealthLoopFlipsInstance(t *testing.T) {
	reg, addr := startFakeRegistry(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	go acceptAll(ln)
	every := durationpb.New(100 * time.Millisecond)
	reg.put(&registryv1.Instance{Service: "web", Id: "w1", Address: "127.0.0.1", Port: uint32(port), Health: registryv1.HealthStatus_HEALTH_STATUS_PASSING,
		Check: &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_TCP, Interval: every, Timeout: every}})
	reg.put(&registryv1.Instance{Service: "web", Id: "ttl", Address: "127.0.0.1", Port: 1, Health: registryv1.HealthStatus_HEALTH_STATUS_PASSING,
		Check: &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_TTL, Interval: every}})
	inst, _ := start(t, "--registry-addr="+addr, "--rise=2", "--fall=3")

	waitHealth := func(want registryv1.HealthStatus) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for reg.health("web", "w1") != want {
			if time.Now().After(deadline) {
				t.Fatalf("instance is %v, want %v; SetHealth calls %v", reg.health("web", "w1"), want, reg.setCalls())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ln.Close()
	waitHealth(registryv1.HealthStatus_HEALTH_STATUS_CRITICAL)
	ln, err = net.Listen("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go acceptAll(ln)
	waitHealth(registryv1.HealthStatus_HEALTH_STATUS_PASSING)

	calls := reg.setCalls()
	if len(calls) != 2 || calls[0].GetStatus() != registryv1.HealthStatus_HEALTH_STATUS_CRITICAL || calls[1].GetStatus() != registryv1.HealthStatus_HEALTH_STATUS_PASSING ||
		!strings.Contains(calls[0].GetOutput(), "tcp check") {
		t.Fatalf("SetHealth calls %v, want one CRITICAL then one PASSING", calls)
	}
	for _, c := range calls {
		if c.GetId() == "ttl" {
			t.Fatalf("TTL instance checked: %v", c)
		}
	}
	body := get(t, "http://"+inst.Addrs["admin"]+"/metrics")
	if !strings.Contains(body, `switchboard_prober_instance_up{id="w1",service="web"} 1`) || !strings.Contains(body, `switchboard_prober_health_checks_total{result="fail"}`) {
		t.Errorf("/metrics lacks health loop series")
	}
}

// TestRegisteredInstancesAreAllowed: with the default allowlist, an
// instance address learnt from the registry becomes a permitted target.
func TestRegisteredInstancesAreAllowed(t *testing.T) {
	l := netnstest.NewLink(t, true)
	reg, addr := startFakeRegistry(t)
	_, c := start(t, "--registry-addr="+addr)
	spec := &proberv1.JobSpec{Kind: &proberv1.JobSpec_Ping{Ping: &proberv1.PingSpec{Target: l.Addr[1].String(), Count: 1}}}
	if _, _, err := run(t, c, spec); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("before registration: %v", err)
	}
	reg.put(&registryv1.Instance{Service: "db", Id: "d1", Address: l.Addr[1].String(), Port: 5432})
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, res, err := run(t, c, spec)
		if err == nil {
			if !res.GetSuccess() {
				t.Fatalf("ping of a registered instance: %v", res)
			}
			return
		}
		if status.Code(err) != codes.PermissionDenied || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestGrpcurl(t *testing.T) {
	grpcurl := servicetest.Tool(t, "grpcurl")
	inst, _ := start(t)
	out, err := exec.Command(grpcurl, "-plaintext", "-max-time", "20", "-d", `{"spec":{"ping":{"target":"127.0.0.1","count":2,"interval":"0.05s"}}}`,
		inst.Addrs["grpc"], "switchboard.prober.v1.Prober/Run").CombinedOutput()
	if err != nil {
		t.Fatalf("grpcurl: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `"received": 2`) || !strings.Contains(string(out), `"pingReply"`) {
		t.Fatalf("grpcurl output:\n%s", out)
	}
	out, _ = exec.Command(grpcurl, "-plaintext", "-max-time", "10", "-d", `{"spec":{"scan":{"target":"192.0.2.1"}}}`,
		inst.Addrs["grpc"], "switchboard.prober.v1.Prober/Run").CombinedOutput()
	if !strings.Contains(string(out), "PermissionDenied") {
		t.Fatalf("grpcurl outside target:\n%s", out)
	}
}

func acceptAll(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func itoa(i int) string { return strconv.Itoa(i) }
