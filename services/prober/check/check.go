// Package check runs one health check: HTTP(S) (status, body match, TLS
// certificate expiry), TCP connect, grpc.health.v1 and a DNS query that
// must be answered.
package check

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/switchboard-net/switchboard/services/prober/allow"
)

// Kinds of check.
const (
	HTTP  = "http"
	HTTPS = "https"
	TCP   = "tcp"
	GRPC  = "grpc"
	DNS   = "dns"
)

// MaxBody bounds how much of an HTTP body is read for matching.
const MaxBody = 1 << 20

// Spec is one check.
type Spec struct {
	// Kind is http, https, tcp, grpc or dns.
	Kind string
	// Target is a URL (http/https) or host:port (tcp, grpc, dns server).
	Target string
	// Timeout bounds the whole check (default 2s).
	Timeout time.Duration
	// ExpectStatus is the HTTP status wanted (0: any 2xx).
	ExpectStatus int
	// ExpectBody, when set, must match the HTTP body.
	ExpectBody *regexp.Regexp
	// GRPCService is the grpc.health.v1 service name.
	GRPCService string
	// DNSName and DNSType are the query (type default A).
	DNSName string
	DNSType uint16
	// InsecureSkipVerify skips TLS certificate verification (the expiry
	// is still reported).
	InsecureSkipVerify bool
}

// Result is a check's outcome.
type Result struct {
	// OK says the check passed.
	OK bool
	// Detail explains the outcome for operators. It may quote what the
	// target sent (a malformed HTTP response's first bytes) and the
	// expect_body pattern: show it only to callers who may run checks.
	Detail string
	// Failure classifies a failed check in words of this package's own
	// (one of the Fail* constants), never bytes the target sent; "" when
	// the check passed.
	Failure string
	// Duration is how long the check took.
	Duration time.Duration
	// StatusCode is the HTTP status.
	StatusCode int
	// CertExpiry is the leaf certificate's NotAfter (https).
	CertExpiry time.Time
}

// Failure classes of Result.Failure.
const (
	FailTimeout     = "timeout"
	FailRefused     = "connection refused"
	FailReset       = "connection reset"
	FailUnreachable = "unreachable"
	FailDenied      = "target not permitted"
	FailTLS         = "TLS error"
	FailCertExpired = "certificate expired"
	FailStatus      = "unexpected status"
	FailBody        = "body does not match"
	FailNotServing  = "not serving"
	FailDNS         = "DNS error"
	FailProtocol    = "protocol error"
	FailOther       = "failed"
)

// checkError is a failure the check itself decided, with its class.
type checkError struct {
	class string
	err   error
}

func (e *checkError) Error() string { return e.err.Error() }
func (e *checkError) Unwrap() error { return e.err }

func failf(class, format string, a ...any) error {
	return &checkError{class: class, err: fmt.Errorf(format, a...)}
}

// classify maps an error to a failure class.
func classify(err error) string {
	var ce *checkError
	var ne net.Error
	var te *tls.CertificateVerificationError
	var re tls.RecordHeaderError
	switch {
	case errors.As(err, &ce):
		return ce.class
	case errors.Is(err, allow.ErrDenied):
		return FailDenied
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return FailTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return FailRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return FailReset
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EADDRNOTAVAIL):
		return FailUnreachable
	case errors.As(err, &te), errors.As(err, &re):
		return FailTLS
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return FailDNS
	}
	if s, ok := status.FromError(err); ok && s.Code() == codes.Unavailable {
		return FailUnreachable
	}
	return FailOther
}

// Summary describes the result without anything the target sent: "pass"
// or "fail: <class>", the HTTP status when there is one, and the time
// taken. It is safe to show to anyone who may see the result at all.
func (r Result) Summary() string {
	var b strings.Builder
	if r.OK {
		b.WriteString("pass")
	} else {
		b.WriteString("fail")
		if r.Failure != "" {
			b.WriteString(": " + r.Failure)
		}
	}
	if r.StatusCode != 0 {
		fmt.Fprintf(&b, ", HTTP %d", r.StatusCode)
	}
	fmt.Fprintf(&b, ", %s", r.Duration.Round(time.Microsecond))
	return b.String()
}

// DialFunc opens connections; the prober passes its allowlisted dialer.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Run runs spec, dialling through dial (a plain net.Dialer when nil).
func Run(ctx context.Context, s Spec, dial DialFunc) Result {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	if s.Timeout <= 0 {
		s.Timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	start := time.Now()
	var r Result
	var err error
	switch s.Kind {
	case HTTP, HTTPS:
		r, err = runHTTP(ctx, s, dial)
	case TCP:
		var c net.Conn
		if c, err = dial(ctx, "tcp", s.Target); err == nil {
			c.Close()
			r.Detail = "connected to " + s.Target
		}
	case GRPC:
		r, err = runGRPC(ctx, s, dial)
	case DNS:
		r, err = runDNS(ctx, s, dial)
	default:
		err = failf(FailOther, "unknown check kind %q", s.Kind)
	}
	r.Duration = time.Since(start)
	if err != nil {
		r.OK, r.Detail, r.Failure = false, err.Error(), classify(err)
	} else {
		r.OK = true
	}
	return r
}

func runHTTP(ctx context.Context, s Spec, dial DialFunc) (Result, error) {
	var r Result
	tr := &http.Transport{
		DialContext:            dial,
		TLSClientConfig:        &tls.Config{InsecureSkipVerify: s.InsecureSkipVerify}, //nolint:gosec // an explicit option
		DisableKeepAlives:      true,
		ResponseHeaderTimeout:  s.Timeout,
		MaxResponseHeaderBytes: 64 << 10,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		// A redirect is an answer of its own: do not follow it off to
		// another (perhaps not allowed) host.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Target, nil)
	if err != nil {
		return r, failf(FailOther, "target: %w", err)
	}
	req.Header.Set("User-Agent", "switchboard-prober")
	resp, err := client.Do(req)
	if err != nil {
		if class := classify(err); class != FailOther {
			return r, err
		}
		// Most often a response that is not HTTP; its bytes may be in
		// err, which is for operators only (Detail).
		return r, &checkError{class: FailProtocol, err: err}
	}
	defer resp.Body.Close()
	r.StatusCode = resp.StatusCode
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		r.CertExpiry = resp.TLS.PeerCertificates[0].NotAfter
		if time.Now().After(r.CertExpiry) {
			return r, failf(FailCertExpired, "certificate expired at %s", r.CertExpiry.Format(time.RFC3339))
		}
	}
	if s.ExpectStatus != 0 && resp.StatusCode != s.ExpectStatus {
		return r, failf(FailStatus, "status %d, want %d", resp.StatusCode, s.ExpectStatus)
	}
	if s.ExpectStatus == 0 && (resp.StatusCode < 200 || resp.StatusCode > 299) {
		return r, failf(FailStatus, "status %d, want 2xx", resp.StatusCode)
	}
	if s.ExpectBody != nil {
		body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody))
		if err != nil {
			return r, fmt.Errorf("read body: %w", err)
		}
		if !s.ExpectBody.Match(body) {
			return r, failf(FailBody, "body does not match %q", s.ExpectBody.String())
		}
	}
	r.Detail = fmt.Sprintf("HTTP %d", resp.StatusCode)
	if !r.CertExpiry.IsZero() {
		r.Detail += fmt.Sprintf(", certificate expires in %s", time.Until(r.CertExpiry).Round(time.Hour))
	}
	return r, nil
}

func runGRPC(ctx context.Context, s Spec, dial DialFunc) (Result, error) {
	var r Result
	cc, err := grpc.NewClient("passthrough:///"+s.Target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dial(ctx, "tcp", addr) }),
	)
	if err != nil {
		return r, failf(FailOther, "target: %w", err)
	}
	defer cc.Close()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: s.GRPCService}, grpc.WaitForReady(false))
	if err != nil {
		return r, fmt.Errorf("grpc health: %w", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return r, failf(FailNotServing, "grpc health: %s", resp.GetStatus())
	}
	r.Detail = "SERVING"
	return r, nil
}

func runDNS(ctx context.Context, s Spec, dial DialFunc) (Result, error) {
	var r Result
	qtype := s.DNSType
	if qtype == 0 {
		qtype = dns.TypeA
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(s.DNSName), qtype)
	conn, err := dial(ctx, "udp", s.Target)
	if err != nil {
		return r, err
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	c := &dns.Client{Net: "udp", Timeout: s.Timeout}
	in, _, err := c.ExchangeWithConnContext(ctx, m, &dns.Conn{Conn: conn})
	if err != nil {
		return r, fmt.Errorf("dns query: %w", err)
	}
	if in.Rcode != dns.RcodeSuccess {
		return r, failf(FailDNS, "dns answer: %s", dns.RcodeToString[in.Rcode])
	}
	n := 0
	for _, rr := range in.Answer {
		if rr.Header().Rrtype == qtype {
			n++
		}
	}
	if n == 0 {
		return r, failf(FailDNS, "dns answer: no %s record for %s", dns.TypeToString[qtype], s.DNSName)
	}
	r.Detail = fmt.Sprintf("%d %s record(s)", n, dns.TypeToString[qtype])
	return r, nil
}

// ParseDNSType maps a type mnemonic ("AAAA") to its number.
func ParseDNSType(s string) (uint16, error) {
	if s == "" {
		return dns.TypeA, nil
	}
	t, ok := dns.StringToType[strings.ToUpper(s)]
	if !ok {
		return 0, errors.New("unknown DNS type " + s)
	}
	return t, nil
}
