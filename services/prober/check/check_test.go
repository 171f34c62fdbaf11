package check

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/switchboard-net/switchboard/services/prober/allow"
)

func TestHTTPChecks(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			_, _ = w.Write([]byte(`{"status":"green"}`))
		case "/redirect":
			http.Redirect(w, r, "http://192.0.2.1/", http.StatusFound)
		default:
			http.Error(w, "down", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	tls := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer tls.Close()

	tests := []struct {
		name string
		spec Spec
		ok   bool
		want string
	}{
		{"2xx", Spec{Kind: HTTP, Target: srv.URL + "/ok"}, true, "HTTP 200"},
		{"body matches", Spec{Kind: HTTP, Target: srv.URL + "/ok", ExpectBody: regexp.MustCompile(`"green"`)}, true, ""},
		{"body differs", Spec{Kind: HTTP, Target: srv.URL + "/ok", ExpectBody: regexp.MustCompile(`red`)}, false, "does not match"},
		{"503", Spec{Kind: HTTP, Target: srv.URL + "/down"}, false, "status 503"},
		{"expected 503", Spec{Kind: HTTP, Target: srv.URL + "/down", ExpectStatus: 503}, true, ""},
		{"redirect not followed", Spec{Kind: HTTP, Target: srv.URL + "/redirect", ExpectStatus: 302}, true, ""},
		{"self-signed refused", Spec{Kind: HTTPS, Target: tls.URL}, false, "certificate"},
		{"self-signed allowed", Spec{Kind: HTTPS, Target: tls.URL, InsecureSkipVerify: true}, true, "certificate expires in"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Run(context.Background(), tt.spec, nil)
			if r.OK != tt.ok || !strings.Contains(r.Detail, tt.want) || r.Duration <= 0 {
				t.Fatalf("Run = %+v, want ok=%v detail containing %q", r, tt.ok, tt.want)
			}
			if tt.spec.Kind == HTTPS && tt.ok && r.CertExpiry.Before(time.Now()) {
				t.Fatalf("cert expiry %v", r.CertExpiry)
			}
		})
	}
}

func TestTCPAndGRPCChecks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	hs.SetServingStatus("up", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("down", healthpb.HealthCheckResponse_NOT_SERVING)
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()

	tests := []struct {
		spec Spec
		ok   bool
	}{
		{Spec{Kind: TCP, Target: ln.Addr().String()}, true},
		{Spec{Kind: TCP, Target: closedAddr}, false},
		{Spec{Kind: GRPC, Target: ln.Addr().String()}, true},
		{Spec{Kind: GRPC, Target: ln.Addr().String(), GRPCService: "up"}, true},
		{Spec{Kind: GRPC, Target: ln.Addr().String(), GRPCService: "down"}, false},
		{Spec{Kind: GRPC, Target: closedAddr, Timeout: 500 * time.Millisecond}, false},
	}
	for _, tt := range tests {
		if r := Run(context.Background(), tt.spec, nil); r.OK != tt.ok {
			t.Errorf("%+v: %+v, want ok=%v", tt.spec, r, tt.ok)
		}
	}
}

func TestDNSCheck(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc("up.test.", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		rr, _ := dns.NewRR("up.test. 60 IN A 192.0.2.1")
		m.Answer = append(m.Answer, rr)
		_ = w.WriteMsg(m)
	})
	mux.HandleFunc(".", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		_ = w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	go func() { _ = srv.ActivateAndServe() }()
	defer srv.Shutdown()
	addr := pc.LocalAddr().String()
	for _, tt := range []struct {
		name, typ string
		ok        bool
	}{{"up.test", "A", true}, {"up.test", "AAAA", false}, {"nope.test", "A", false}} {
		typ, _ := ParseDNSType(tt.typ)
		r := Run(context.Background(), Spec{Kind: DNS, Target: addr, DNSName: tt.name, DNSType: typ}, nil)
		if r.OK != tt.ok {
			t.Errorf("%s %s: %+v, want ok=%v", tt.name, tt.typ, r, tt.ok)
		}
	}
}

// TestSummaryNeverQuotesTheTarget: Detail may carry what the target sent
// (for operators); Failure and Summary never do.
func TestSummaryNeverQuotesTheTarget(t *testing.T) {
	const secret = "SECRET-7f3a"
	garbage, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	go func() {
		for {
			c, err := garbage.Accept()
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
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("token=" + secret))
	}))
	defer page.Close()
	refused, _ := net.Listen("tcp", "127.0.0.1:0")
	refusedAddr := refused.Addr().String()
	refused.Close()
	denyAll, _ := allow.Parse("")

	tests := []struct {
		name       string
		spec       Spec
		dial       DialFunc
		ok         bool
		failure    string
		detailHas  string // what the operators' Detail shows
		statusCode int
	}{
		{"not http", Spec{Kind: HTTP, Target: "http://" + garbage.Addr().String() + "/"}, nil, false, FailProtocol, secret, 0},
		{"body match", Spec{Kind: HTTP, Target: page.URL, ExpectBody: regexp.MustCompile("token=SECRET")}, nil, true, "", "HTTP 200", 200},
		{"body mismatch", Spec{Kind: HTTP, Target: page.URL, ExpectBody: regexp.MustCompile("token=SECRET-0")}, nil, false, FailBody, "token=SECRET-0", 200},
		{"refused", Spec{Kind: TCP, Target: refusedAddr}, nil, false, FailRefused, "refused", 0},
		{"denied", Spec{Kind: TCP, Target: refusedAddr}, denyAll.DialContext(&net.Dialer{}), false, FailDenied, "allowlist", 0},
		{"timeout", Spec{Kind: HTTP, Target: "http://" + garbage.Addr().String() + "/", Timeout: time.Nanosecond}, nil, false, FailTimeout, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Run(context.Background(), tt.spec, tt.dial)
			if r.OK != tt.ok || r.Failure != tt.failure || r.StatusCode != tt.statusCode || !strings.Contains(r.Detail, tt.detailHas) {
				t.Fatalf("Run = %+v, want ok=%v failure %q status %d detail containing %q", r, tt.ok, tt.failure, tt.statusCode, tt.detailHas)
			}
			sum := r.Summary()
			if strings.Contains(sum, "SECRET") || strings.Contains(sum, "token") {
				t.Fatalf("Summary %q quotes the target or the pattern", sum)
			}
			want := "pass"
			if !tt.ok {
				want = "fail: " + tt.failure
			}
			if !strings.HasPrefix(sum, want) {
				t.Fatalf("Summary %q, want it to start with %q", sum, want)
			}
		})
	}
}
