package prober

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	"github.com/switchboard-net/switchboard/services/prober/check"
)

// probeModule is one module of --probe-modules: a check without its target,
// in the words of the Run API's CheckSpec.
type probeModule struct {
	Kind               string        `yaml:"kind"`
	Timeout            time.Duration `yaml:"timeout"`
	ExpectStatus       uint32        `yaml:"expect_status"`
	ExpectBody         string        `yaml:"expect_body"`
	GRPCService        string        `yaml:"grpc_service"`
	DNSName            string        `yaml:"dns_name"`
	DNSType            string        `yaml:"dns_type"`
	InsecureSkipVerify bool          `yaml:"insecure_skip_verify"`
}

// defaultProbeModules are the modules /probe knows without a file, named
// as blackbox_exporter names its examples.
func defaultProbeModules() map[string]probeModule {
	return map[string]probeModule{
		"http_2xx":    {Kind: check.HTTP},
		"https_2xx":   {Kind: check.HTTPS},
		"tcp_connect": {Kind: check.TCP},
		"grpc_health": {Kind: check.GRPC},
	}
}

// moduleName is what a module may be called.
var moduleName = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,64}$`)

// loadProbeModules reads a modules file (YAML: `modules: {NAME: {kind: ...}}`)
// on top of the defaults; every module is checked as a check with a
// placeholder target would be.
func loadProbeModules(path string) (map[string]probeModule, error) {
	mods := defaultProbeModules()
	if path == "" {
		return mods, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f struct {
		Modules map[string]probeModule `yaml:"modules"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for name, m := range f.Modules {
		if !moduleName.MatchString(name) {
			return nil, fmt.Errorf("%s: modules.%s: want letters, digits, '_', '.', '-'", path, name)
		}
		switch m.Kind = strings.ToLower(m.Kind); m.Kind {
		case check.HTTP, check.HTTPS, check.TCP, check.GRPC, check.DNS:
		default:
			return nil, fmt.Errorf("%s: modules.%s.kind: %q: want http, https, tcp, grpc or dns", path, name, m.Kind)
		}
		if m.ExpectBody != "" {
			if _, err := regexp.Compile(m.ExpectBody); err != nil {
				return nil, fmt.Errorf("%s: modules.%s.expect_body: %w", path, name, err)
			}
		}
		if m.Kind == check.DNS && m.DNSName == "" {
			return nil, fmt.Errorf("%s: modules.%s.dns_name: required for a dns module", path, name)
		}
		if m.Timeout < 0 || m.Timeout > maxTimeout {
			return nil, fmt.Errorf("%s: modules.%s.timeout: want 0 (the default) to %v", path, name, maxTimeout)
		}
		mods[name] = m
	}
	return mods, nil
}

// spec is the module's check of target: a bare host:port becomes a URL
// for http and https modules.
func (m probeModule) spec(target string) *proberv1.CheckSpec {
	if (m.Kind == check.HTTP || m.Kind == check.HTTPS) && !strings.Contains(target, "://") {
		target = m.Kind + "://" + target
	}
	s := &proberv1.CheckSpec{Kind: m.Kind, Target: target, ExpectStatus: m.ExpectStatus, ExpectBody: m.ExpectBody,
		GrpcService: m.GRPCService, DnsName: m.DNSName, DnsType: m.DNSType, InsecureSkipVerify: m.InsecureSkipVerify}
	if m.Timeout > 0 {
		s.Timeout = durationpb.New(m.Timeout)
	}
	return s
}

// probeHandler serves /probe?target=…&module=…, as Prometheus'
// blackbox_exporter does: it runs the module's check of the target (the
// allowlist applies, as to every job) and answers with probe_success and
// the check's figures in the Prometheus text format. A bad target or
// module is a 400 naming the parameter; a check that fails is still a 200
// with probe_success 0, so Prometheus records the failure.
func (r *runner) probeHandler(mods map[string]probeModule) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		target, name := q.Get("target"), q.Get("module")
		if name == "" {
			name = "http_2xx"
		}
		m, ok := mods[name]
		if !ok {
			names := make([]string, 0, len(mods))
			for n := range mods {
				names = append(names, n)
			}
			sort.Strings(names)
			http.Error(w, fmt.Sprintf("module: unknown module %q (known: %s)", name, strings.Join(names, ", ")), http.StatusBadRequest)
			return
		}
		if target == "" {
			http.Error(w, "target: required", http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(req.Context(), maxTimeout)
		defer cancel()
		cs, err := r.checkSpec(ctx, m.spec(target), "target")
		if err != nil {
			code := http.StatusBadRequest
			if errors.As(err, new(*resolveError)) {
				code = http.StatusOK // a name that does not resolve is a failed probe
				writeProbe(w, name, check.Result{Detail: err.Error(), Failure: check.FailDNS})
				return
			}
			http.Error(w, strings.Replace(err.Error(), "target.target", "target", 1), code)
			return
		}
		res := check.Run(ctx, cs, r.allow.DialContext(&net.Dialer{}))
		r.met.probes.WithLabelValues(name, boolLabel(res.OK)).Inc()
		writeProbe(w, name, res)
	})
}

func boolLabel(ok bool) string {
	if ok {
		return "success"
	}
	return "failure"
}

// writeProbe writes a check's result as Prometheus metrics.
func writeProbe(w http.ResponseWriter, module string, res check.Result) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	var b strings.Builder
	metric := func(name, help string, v float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s %g\n", name, help, name, name, v)
	}
	ok := 0.0
	if res.OK {
		ok = 1
	}
	metric("probe_success", "Whether the probe succeeded (module "+module+").", ok)
	metric("probe_duration_seconds", "How long the probe took.", res.Duration.Seconds())
	if res.StatusCode != 0 {
		metric("probe_http_status_code", "The HTTP status of the response.", float64(res.StatusCode))
	}
	if !res.CertExpiry.IsZero() {
		metric("probe_ssl_earliest_cert_expiry", "The leaf certificate's expiry, in Unix seconds.", float64(res.CertExpiry.Unix()))
	}
	if !res.OK && res.Failure != "" {
		fmt.Fprintf(&b, "# HELP probe_failure_info Why the probe failed.\n# TYPE probe_failure_info gauge\nprobe_failure_info{reason=%q} 1\n", res.Failure)
	}
	_, _ = w.Write([]byte(b.String()))
}
