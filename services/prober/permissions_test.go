package prober

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/access"
	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	"github.com/switchboard-net/switchboard/services/prober/allow"
)

// TestMethodsCoverEveryRPC: every method of the Prober service descriptor
// has an entry (pkg/service refuses to start otherwise), the table names
// nothing else, and each entry asks what the security design says.
func TestMethodsCoverEveryRPC(t *testing.T) {
	desc := proberv1.Prober_ServiceDesc
	var names []string
	for _, m := range desc.Methods {
		names = append(names, m.MethodName)
	}
	for _, s := range desc.Streams {
		names = append(names, s.StreamName)
	}
	for _, n := range names {
		if _, ok := Methods["/"+desc.ServiceName+"/"+n]; !ok {
			t.Errorf("no permission entry for /%s/%s", desc.ServiceName, n)
		}
	}
	if len(Methods) != len(names) {
		t.Errorf("Methods has %d entries, the service %d methods", len(Methods), len(names))
	}
	readAll := []access.Need{access.Service("*", access.Read)}
	operator := []access.Need{access.Operator()}
	for method, want := range map[string][]access.Need{
		proberv1.Prober_Run_FullMethodName:        operator,
		proberv1.Prober_Schedule_FullMethodName:   operator,
		proberv1.Prober_Unschedule_FullMethodName: operator,
		proberv1.Prober_ListJobs_FullMethodName:   readAll,
		proberv1.Prober_Results_FullMethodName:    readAll,
	} {
		check, ok := Methods[method]
		if !ok {
			t.Errorf("%s: no entry", method)
			continue
		}
		if got := check(nil); !reflect.DeepEqual(got, want) {
			t.Errorf("%s needs %v, want %v", method, got, want)
		}
	}
}

// testCallers returns contexts carrying an operator and a viewer (read on
// every service) identified by an ACL file, as the interceptor would.
func testCallers(t *testing.T) (ops, viewer context.Context) {
	t.Helper()
	acl, err := access.Parse("acl.yaml", []byte(fmt.Sprintf(`
default: deny
tokens:
  - name: ops
    sha256: %s
    rules: [{operator: true}]
  - name: viewer
    sha256: %s
    rules: [{service: "*", access: read}]
`, access.HashToken("ops-token"), access.HashToken("viewer-token"))))
	if err != nil {
		t.Fatal(err)
	}
	o, err := acl.Identify("ops-token", nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := acl.Identify("viewer-token", nil)
	if err != nil {
		t.Fatal(err)
	}
	return access.WithCaller(context.Background(), o), access.WithCaller(context.Background(), v)
}

// testServer is a prober server allowing loopback, without a runtime.
func testServer(t *testing.T) *server {
	t.Helper()
	cfg := &Config{History: 10, ScanMaxPorts: 1024, MaxRunning: 4}
	al, err := allow.Parse("loopback")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	r := &runner{cfg: cfg, allow: al, met: newMetrics(prometheus.NewRegistry()), sem: make(chan struct{}, cfg.MaxRunning), log: log}
	sched, err := newScheduler(cfg, r, log, nil, newMembers("test"))
	if err != nil {
		t.Fatal(err)
	}
	return &server{r: r, sched: sched}
}

// runStream is the server side of a Run stream, collecting what is sent.
type runStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent []*proberv1.RunResponse
}

func (s *runStream) Context() context.Context { return s.ctx }

func (s *runStream) Send(m *proberv1.RunResponse) error {
	s.sent = append(s.sent, m)
	return nil
}

const secret = "SECRET-9c1e"

// secretTargets serves a page holding a secret, and a TCP port answering
// HTTP with a status line that quotes it (Go's HTTP client then quotes
// those bytes in its error).
func secretTargets(t *testing.T) (page, garbage string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("token=" + secret))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	g, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	go func() {
		for {
			c, err := g.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				b := make([]byte, 4096)
				_, _ = c.Read(b)
				_, _ = c.Write([]byte("HTTP/1.1 " + secret + "\r\n\r\n"))
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/", "http://" + g.Addr().String() + "/"
}

func checkJob(target, expectBody string) *proberv1.JobSpec {
	return &proberv1.JobSpec{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{
		Kind: "http", Target: target, ExpectBody: expectBody, Timeout: durationpb.New(5 * time.Second)}}}
}

// leaks reports whether m shows anything of the secret page or the
// pattern matched against it.
func leaks(m proto.Message) bool {
	s := prototext.Format(m)
	return strings.Contains(s, "SECRET") || strings.Contains(s, "token")
}

// TestChecksRedactedForNonOperators runs checks against a page holding a
// secret through Run, and reads the same results through Results: the
// operator sees the detail (what the target sent, how the body compared);
// a viewer sees pass/fail, the HTTP status and the duration, and not one
// byte of the page or of the pattern.
func TestChecksRedactedForNonOperators(t *testing.T) {
	ops, viewer := testCallers(t)
	page, garbage := secretTargets(t)
	s := testServer(t)
	tests := []struct {
		name      string
		spec      *proberv1.JobSpec
		ok        bool
		status    uint32
		opsSees   string // in the operator's detail or error
		viewerErr string
	}{
		{"body matches", checkJob(page, "token=SECRET"), true, 200, "HTTP 200", ""},
		{"body differs", checkJob(page, "token=SECRET-0"), false, 200, "token=SECRET-0", redactedError},
		{"not http", checkJob(garbage, ""), false, 0, secret, redactedError},
	}
	var stored []*proberv1.JobResult
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opsRes *proberv1.JobResult
			for _, who := range []struct {
				name string
				ctx  context.Context
			}{{"viewer", viewer}, {"operator", ops}, {"no ACL", context.Background()}} {
				st := &runStream{ctx: who.ctx}
				if err := s.Run(&proberv1.RunRequest{Spec: tt.spec}, st); err != nil {
					t.Fatalf("%s: Run: %v", who.name, err)
				}
				res := st.sent[len(st.sent)-1].GetResult()
				c := res.GetCheck()
				if c.GetOk() != tt.ok || res.GetSuccess() != tt.ok || c.GetStatusCode() != tt.status || c.GetDuration().AsDuration() <= 0 {
					t.Fatalf("%s: result %v, want ok=%v status %d and a duration", who.name, res, tt.ok, tt.status)
				}
				if who.name == "viewer" {
					if leaks(res) || c.GetDetail() != "" || res.GetError() != tt.viewerErr {
						t.Fatalf("viewer sees %v", prototext.Format(res))
					}
					continue
				}
				if !strings.Contains(c.GetDetail()+res.GetError(), tt.opsSees) {
					t.Fatalf("%s sees %v, want %q in it", who.name, res, tt.opsSees)
				}
				opsRes = res
			}
			stored = append(stored, opsRes)
		})
	}

	// The same results as a scheduled job's history.
	job := &proberv1.Job{Id: "secret-page", Interval: durationpb.New(time.Hour), Spec: checkJob(page, "token=SECRET")}
	if _, err := s.sched.add(ops, job); err != nil {
		t.Fatal(err)
	}
	sj := s.sched.jobs["secret-page"]
	for _, r := range stored {
		sj.add(r)
	}
	for _, who := range []struct {
		name     string
		ctx      context.Context
		redacted bool
	}{{"viewer", viewer, true}, {"operator", ops, false}} {
		resp, err := s.Results(who.ctx, &proberv1.ResultsRequest{Id: "secret-page"})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetResults()) != len(stored) {
			t.Fatalf("%s: %d results, want %d", who.name, len(resp.GetResults()), len(stored))
		}
		if leaks(resp) != !who.redacted {
			t.Fatalf("%s sees %v", who.name, prototext.Format(resp))
		}
		for i, r := range resp.GetResults() {
			want := stored[len(stored)-1-i] // newest first
			if r.GetCheck().GetOk() != want.GetCheck().GetOk() || r.GetCheck().GetStatusCode() != want.GetCheck().GetStatusCode() {
				t.Fatalf("%s: result %d is %v, want pass/fail and status of %v", who.name, i, r, want)
			}
		}
	}
}

// TestJobsRedactedForNonOperators: ListJobs hides a check's expect_body
// pattern and its URL's credentials and query from a viewer, not from an
// operator, and leaves the stored job alone.
func TestJobsRedactedForNonOperators(t *testing.T) {
	ops, viewer := testCallers(t)
	page, _ := secretTargets(t)
	s := testServer(t)
	target := strings.Replace(page, "http://", "http://user:pw-"+secret+"@", 1) + "?key=" + secret
	job := &proberv1.Job{Id: "secret", Interval: durationpb.New(time.Hour), Spec: checkJob(target, "token=SECRET")}
	ping := &proberv1.Job{Id: "ping", Interval: durationpb.New(time.Hour), Spec: &proberv1.JobSpec{Kind: &proberv1.JobSpec_Ping{Ping: &proberv1.PingSpec{Target: "127.0.0.1"}}}}
	for _, j := range []*proberv1.Job{job, ping} {
		if _, err := s.sched.add(ops, j); err != nil {
			t.Fatal(err)
		}
	}
	for _, who := range []struct {
		name     string
		ctx      context.Context
		redacted bool
	}{{"viewer", viewer, true}, {"operator", ops, false}, {"viewer again", viewer, true}} {
		resp, err := s.ListJobs(who.ctx, &proberv1.ListJobsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetJobs()) != 2 {
			t.Fatalf("%s: jobs %v", who.name, resp.GetJobs())
		}
		c := resp.GetJobs()[1].GetSpec().GetCheck()
		if !who.redacted {
			if c.GetExpectBody() != "token=SECRET" || c.GetTarget() != target {
				t.Fatalf("operator sees %v", c)
			}
			continue
		}
		if leaks(resp) || c.GetExpectBody() != redactedMark || !strings.HasPrefix(c.GetTarget(), "http://127.0.0.1:") ||
			!proto.Equal(resp.GetJobs()[0], ping) {
			t.Fatalf("%s sees %v", who.name, prototext.Format(resp))
		}
	}
}
