package edge

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-net/switchboard/pkg/service"
)

// Live reload.
//
// SIGHUP (when the edge runs as its own program), the runtime API's
// `reload`, and a change on disk of the --config file or of an HTTPS
// certificate or key file (polled every --config-poll, after the content
// has settled for configSettle) reload the configuration in this process:
//
//   - routes (matches, header rules, strip_prefix, try_timeout, hedge,
//     targets), static services and the addresses of TCP and UDP
//     listeners apply at once: the new route table is swapped in
//     atomically, so each request is routed by either the old table or
//     the new one, and requests in flight finish on what they started
//     with (a backend the new file drops takes no new connections, and
//     its connections close as their requests end);
//   - the HTTPS certificates are re-read (crypto/tls asks for one per
//     handshake, so new connections get the new ones);
//   - what would need a socket rebound or a stream restarted — a TCP or
//     UDP listener's address, service, options, listeners added or
//     removed, allow_loopback — keeps its old value, and the reload says
//     it needs a restart (SIGUSR2) in its log line and in `show config`.
//
// A file that does not parse or validate is refused as a whole with one
// log line naming the file, the line and the field; the old configuration
// stays. Flags are fixed for the life of the process (a restart re-reads
// them).

// configSettle is how long a changed file must stay unchanged before it
// is reloaded: editors and cert renewers write in several steps.
const configSettle = 100 * time.Millisecond

// configState is what the runtime API's `show config` reports.
type configState struct {
	version      uint64 // configurations applied, 1 at start
	sum          string // the config file's SHA-256, hex; "" without --config
	trigger      string // what loaded it: start, sighup, file, runtime
	loadedAt     time.Time
	needsRestart []string // changes not applied (listeners, allow_loopback)
	lastErr      string   // the last refused reload, "" if none since this one
	lastErrAt    time.Time
	ok, failed   uint64
}

// shortSum is the SHA-256 prefix shown to operators.
func (s *configState) shortSum() string {
	if s.sum == "" {
		return "none"
	}
	return s.sum[:12]
}

// loadedFiles is one reading of the configuration's files.
type loadedFiles struct {
	file  *FileConfig
	sum   string // of the config file
	certs []tls.Certificate
	print [sha256.Size]byte // of every file read, to tell a change on disk
}

// reloadMetrics are the reload series.
type reloadMetrics struct {
	reloads *prometheus.CounterVec
	info    *prometheus.GaugeVec
	success prometheus.Gauge
	at      prometheus.Gauge
}

func newReloadMetrics(reg prometheus.Registerer) *reloadMetrics {
	m := &reloadMetrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_edge_config_reloads_total", Help: "Configuration reloads by result: ok (applied) or error (refused; the old configuration stays)."},
			[]string{"result"}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchboard_edge_config_info", Help: "The live configuration: version (configurations applied, 1 at start) and the config file's SHA-256 prefix; always 1."},
			[]string{"version", "sha256"}),
		success: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_edge_config_last_reload_successful", Help: "1 when the last reload was applied, 0 when it was refused."}),
		at: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_edge_config_last_reload_success_timestamp_seconds", Help: "When the live configuration was loaded (Unix time)."}),
	}
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("error")
	if reg != nil {
		reg.MustRegister(m.reloads, m.info, m.success, m.at)
	}
	return m
}

// errFilesMoved says the files changed again between the watcher's look
// and the reload's read: the watcher's next look reloads them.
var errFilesMoved = errors.New("the files changed while being read")

// readFiles reads and checks the config file and the HTTPS certificates,
// without applying anything. With want set (the watcher's settled
// fingerprint), files that no longer match it give errFilesMoved before
// anything is parsed: a file caught in the middle of an in-place write is
// neither applied nor counted as an error.
func (e *Edge) readFiles(want *[sha256.Size]byte) (*loadedFiles, error) {
	l := &loadedFiles{file: &FileConfig{}}
	h := sha256.New()
	var conf []byte
	if p := e.cfg.ConfigFile; p != "" {
		var err error
		if conf, err = os.ReadFile(p); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		s := sha256.Sum256(conf)
		l.sum = hex.EncodeToString(s[:])
		h.Write(s[:])
	}
	pems := make([][2][]byte, len(e.cfg.HTTPSCerts))
	for i := range e.cfg.HTTPSCerts {
		var err error
		if pems[i][0], err = os.ReadFile(e.cfg.HTTPSCerts[i]); err == nil {
			pems[i][1], err = os.ReadFile(e.cfg.HTTPSKeys[i])
		}
		if err != nil {
			return nil, fmt.Errorf("--https-cert %s / --https-key %s: %w", e.cfg.HTTPSCerts[i], e.cfg.HTTPSKeys[i], err)
		}
		h.Write(pems[i][0])
		h.Write(pems[i][1])
	}
	h.Sum(l.print[:0])
	if want != nil && l.print != *want {
		return nil, errFilesMoved
	}
	if p := e.cfg.ConfigFile; p != "" {
		var err error
		if l.file, err = parseConfig(p, conf); err != nil {
			return nil, err
		}
	}
	for i, pair := range pems {
		kp, err := tls.X509KeyPair(pair[0], pair[1])
		if err != nil {
			return nil, fmt.Errorf("--https-cert %s / --https-key %s: %w", e.cfg.HTTPSCerts[i], e.cfg.HTTPSKeys[i], err)
		}
		l.certs = append(l.certs, kp)
	}
	return l, nil
}

// filesPrint fingerprints the watched files as they are on disk now (a
// missing or unreadable file counts as its error).
func (e *Edge) filesPrint() [sha256.Size]byte {
	h := sha256.New()
	files := e.watchedFiles()
	for i, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintf(h, "%d:%v\n", i, err)
			continue
		}
		if i == 0 && e.cfg.ConfigFile != "" {
			s := sha256.Sum256(b)
			h.Write(s[:])
			continue
		}
		h.Write(b)
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// watchedFiles are the files a reload reads, the config file first, then
// each certificate and its key (the order readFiles hashes them in).
func (e *Edge) watchedFiles() []string {
	var out []string
	if e.cfg.ConfigFile != "" {
		out = append(out, e.cfg.ConfigFile)
	}
	for i := range e.cfg.HTTPSCerts {
		out = append(out, e.cfg.HTTPSCerts[i], e.cfg.HTTPSKeys[i])
	}
	return out
}

// getCertificate picks the HTTPS certificate for a handshake from the
// live set as crypto/tls would from Config.Certificates: the first the
// client supports (its SNI name among them), else the first.
func (e *Edge) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	cs := *e.certs.Load()
	for i := range cs {
		if hello.SupportsCertificate(&cs[i]) == nil {
			return &cs[i], nil
		}
	}
	return &cs[0], nil
}

// reload reads the files again and applies what can change live. On any
// error nothing changes. trigger names the cause (sighup, file, runtime).
func (e *Edge) reload(trigger string) (*configState, error) { return e.reloadIf(trigger, nil) }

// reloadIf is reload, when the files on disk still have the fingerprint
// want (nil: whatever they hold).
func (e *Edge) reloadIf(trigger string, want *[sha256.Size]byte) (*configState, error) {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	cur := e.live.Load()
	next := *cur
	l, err := e.readFiles(want)
	if errors.Is(err, errFilesMoved) {
		return nil, err
	}
	if err != nil {
		next.lastErr, next.lastErrAt = err.Error(), time.Now()
		next.failed++
		e.live.Store(&next)
		e.rmet.reloads.WithLabelValues("error").Inc()
		e.rmet.success.Set(0)
		e.log.Error("config reload refused; the old configuration stays", "err", err.Error(),
			"trigger", trigger, "version", cur.version, "sha256", cur.shortSum())
		return nil, err
	}
	e.loadedPrint.Store(&l.print)
	eff, pending := keepUnreloadable(e.file, l.file)
	e.applyFile(eff)
	if len(l.certs) > 0 {
		e.certs.Store(&l.certs)
	}
	next = configState{version: cur.version + 1, sum: l.sum, trigger: trigger, loadedAt: time.Now(),
		needsRestart: pending, ok: cur.ok + 1, failed: cur.failed}
	e.publish(cur, &next)
	e.rmet.reloads.WithLabelValues("ok").Inc()
	e.rmet.success.Set(1)
	attrs := []any{"version", next.version, "sha256", next.shortSum(), "trigger", trigger,
		"routes", len(eff.Routes), "services", len(eff.Services)}
	if len(pending) > 0 {
		e.log.Warn("config reloaded; needs a restart (SIGUSR2): "+strings.Join(pending, ", "), attrs...)
	} else {
		e.log.Info("config reloaded", attrs...)
	}
	return &next, nil
}

// publish makes next the live state and its metrics.
func (e *Edge) publish(prev, next *configState) {
	e.live.Store(next)
	if prev != nil {
		e.rmet.info.DeleteLabelValues(fmt.Sprint(prev.version), prev.shortSum())
	}
	e.rmet.info.WithLabelValues(fmt.Sprint(next.version), next.shortSum()).Set(1)
	e.rmet.at.Set(float64(next.loadedAt.UnixNano()) / 1e9)
}

// keepUnreloadable returns the configuration to apply: next, with the
// parts that cannot change without rebinding a socket or restarting the
// balancer stream kept as in cur, and those parts named.
func keepUnreloadable(cur, next *FileConfig) (*FileConfig, []string) {
	eff := *next
	var pending []string
	if !slices.Equal(cur.AllowLoopback, next.AllowLoopback) {
		pending = append(pending, "allow_loopback changed")
	}
	eff.AllowLoopback = cur.AllowLoopback
	eff.TCP = slices.Clone(cur.TCP)
	for i := range max(len(cur.TCP), len(next.TCP)) {
		f := fmt.Sprintf("tcp[%d]", i)
		switch {
		case i >= len(cur.TCP):
			pending = append(pending, f+" added")
			continue
		case i >= len(next.TCP):
			pending = append(pending, f+" removed")
			continue
		}
		o, n := cur.TCP[i], next.TCP[i]
		pending = changed(pending, f+".listen", o.Listen != n.Listen)
		pending = changed(pending, f+".service", o.Service != n.Service || (len(o.Addresses) > 0) != (len(n.Addresses) > 0))
		pending = changed(pending, f+".proxy_protocol", o.ProxyProtocol != n.ProxyProtocol)
		pending = changed(pending, f+".idle_timeout", o.IdleTimeout != n.IdleTimeout)
		pending = changed(pending, f+".socket_buffer", o.SocketBuffer != n.SocketBuffer)
		if len(o.Addresses) > 0 && len(n.Addresses) > 0 {
			eff.TCP[i].Addresses = n.Addresses // a static service of its own: live
		}
	}
	eff.UDP = slices.Clone(cur.UDP)
	for i := range max(len(cur.UDP), len(next.UDP)) {
		f := fmt.Sprintf("udp[%d]", i)
		switch {
		case i >= len(cur.UDP):
			pending = append(pending, f+" added")
			continue
		case i >= len(next.UDP):
			pending = append(pending, f+" removed")
			continue
		}
		o, n := cur.UDP[i], next.UDP[i]
		pending = changed(pending, f+".listen", o.Listen != n.Listen)
		pending = changed(pending, f+".service", o.Service != n.Service || (len(o.Addresses) > 0) != (len(n.Addresses) > 0))
		pending = changed(pending, f+".max_flows", o.MaxFlows != n.MaxFlows)
		pending = changed(pending, f+".idle_timeout", o.IdleTimeout != n.IdleTimeout)
		if len(o.Addresses) > 0 && len(n.Addresses) > 0 {
			eff.UDP[i].Addresses = n.Addresses
		}
	}
	return &eff, pending
}

func changed(pending []string, field string, c bool) []string {
	if c {
		return append(pending, field+" changed")
	}
	return pending
}

// staticServices names the upstream services a configuration defines,
// each with its addresses and policy.
func staticServices(f *FileConfig) map[string]staticService {
	out := map[string]staticService{}
	for name, addrs := range f.Services {
		out[name] = staticService{addrs: addrs}
	}
	for _, r := range f.Routes {
		if len(r.Addresses) > 0 {
			out["static:"+r.Name] = staticService{policy: r.Policy, addrs: r.Addresses}
		}
	}
	for i, t := range f.TCP {
		if len(t.Addresses) > 0 {
			out[fmt.Sprintf("static:tcp%d", i)] = staticService{addrs: t.Addresses}
		}
	}
	for i, u := range f.UDP {
		if len(u.Addresses) > 0 {
			out[fmt.Sprintf("static:udp%d", i)] = staticService{addrs: u.Addresses}
		}
	}
	return out
}

type staticService struct {
	policy string
	addrs  []string
}

// applyFile makes f the configuration: its static services, then its
// routes in one swap of the route table, then the release of services the
// previous configuration defined and f does not. f has been validated,
// so nothing here fails (a policy name is checked by Validate).
func (e *Edge) applyFile(f *FileConfig) {
	e.mu.Lock()
	prev := e.file
	e.mu.Unlock()
	var had map[string]staticService
	if prev != nil {
		had = staticServices(prev)
	}
	next := staticServices(f)
	for _, name := range sortedKeys(next) {
		s := next[name]
		old, ok := had[name]
		if ok && old.policy == s.policy && slices.Equal(old.addrs, s.addrs) {
			continue
		}
		if !ok && !strings.HasPrefix(name, "static:") {
			// A balancer service the file now defines: a fresh service
			// of that name, since requests read an upService's static
			// flag without a lock (the old one serves its requests in
			// flight until the new route table is in).
			e.ups.releaseStatic(name)
		}
		if err := e.ups.setStatic(name, s.policy, s.addrs); err != nil {
			e.log.Error("static service not applied", "service", name, "err", err)
		}
	}
	// Released before the routes are built, so a route naming a service
	// that moved from the file back to the balancer gets the balancer's.
	// Until the swap, the old routes still reach the released services'
	// endpoints (their sets stay; only their pools close).
	if prev != nil {
		for name := range had {
			if _, ok := next[name]; !ok {
				e.ups.releaseStatic(name)
				if e.watch != nil && !strings.HasPrefix(name, "static:") {
					e.watch.replay(name)
				}
			}
		}
	}
	var rs []*route
	for _, r := range f.Routes {
		svc := r.Service
		if len(r.Addresses) > 0 {
			svc = "static:" + r.Name
		}
		rt := &route{name: r.Name, host: r.Host, prefix: r.PathPrefix, strip: r.StripPrefix,
			service: svc, source: "config", svc: e.ups.service(svc), try: routeTryOf(&r)}
		for k, v := range r.Headers {
			rt.headers = append(rt.headers, [2]string{strings.ToLower(k), v})
		}
		e.met.routeSeries(rt)
		rs = append(rs, rt)
	}
	e.mu.Lock()
	e.file, e.static = f, rs
	e.mu.Unlock()
	e.rebuildRoutes()
}

// releaseStatic forgets a service the configuration no longer defines:
// its backends take no new connections and their idle ones close, while
// requests in flight on them finish; a registry service's name goes back
// to the balancer's endpoint sets.
func (u *upstreams) releaseStatic(name string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.svcs[name]
	delete(u.fixed, name)
	delete(u.svcs, name)
	for k := range u.overrides {
		if k.svc == name {
			delete(u.overrides, k)
		}
	}
	if s == nil {
		return
	}
	for _, b := range *s.backends.Load() {
		b.close()
		u.met.forgetBackend(b)
	}
}

// startReloads installs the reload triggers: SIGHUP (as its own program),
// and the file watcher (--config-poll).
func (e *Edge) startReloads(rt *service.Runtime) error {
	if e.cfg.ConfigPoll < 0 {
		return &service.FlagError{Err: fmt.Errorf("--config-poll must not be negative, got %v", e.cfg.ConfigPoll)}
	}
	if e.cfg.restart && reloadSignal != nil {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, reloadSignal)
		rt.Go("reload-signal", func(ctx context.Context) error {
			defer signal.Stop(sig)
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-sig:
					e.reload("sighup")
				}
			}
		})
	}
	if e.cfg.ConfigPoll > 0 && len(e.watchedFiles()) > 0 {
		rt.Go("config-watch", e.watchFiles)
	}
	return nil
}

// watchFiles reloads when the watched files' content changes. It polls
// the paths (not inodes), so editors and tools that write a new file and
// rename it over the old one are seen like those that write in place.
func (e *Edge) watchFiles(ctx context.Context) error {
	t := time.NewTicker(e.cfg.ConfigPoll)
	defer t.Stop()
	seen := *e.loadedPrint.Load()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := e.filesPrint()
		if now == seen || now == *e.loadedPrint.Load() {
			seen = now
			continue
		}
		// Settle: wait until two looks configSettle apart agree (at most
		// ten tries, then take what is there).
		for range 10 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(configSettle):
			}
			again := e.filesPrint()
			if again == now {
				break
			}
			now = again
		}
		seen = now
		if now != *e.loadedPrint.Load() {
			e.reloadIf("file", &now)
		}
	}
}

// replay applies the last endpoint set the balancer sent for a service
// again: the configuration defined the service while it came, and has
// now given the name back.
func (w *watcher) replay(name string) {
	w.applyMu.Lock()
	defer w.applyMu.Unlock()
	if resp := w.last[name]; resp != nil {
		if err := w.apply(resp); err != nil {
			w.log.Warn("endpoint set rejected", "service", name, "err", err)
		}
	}
}

// errNoReload is the runtime API's answer when there is nothing to reload.
var errNoReload = errors.New("nothing to reload: no --config file and no --https-cert")

// reloadNow is the runtime API's reload.
func (e *Edge) reloadNow() (*configState, error) {
	if len(e.watchedFiles()) == 0 {
		return nil, errNoReload
	}
	return e.reload("runtime")
}

// showConfig is the runtime API's `show config`.
func (e *Edge) showConfig() string {
	s := e.live.Load()
	var b strings.Builder
	row := func(k, v string) { fmt.Fprintf(&b, "%-14s %s\n", k, v) }
	row("version", fmt.Sprint(s.version))
	row("sha256", s.shortSum())
	file := e.cfg.ConfigFile
	if file == "" {
		file = "-"
	}
	row("file", file)
	row("loaded", s.loadedAt.UTC().Format(time.RFC3339)+" ("+s.trigger+")")
	row("reloads", fmt.Sprintf("ok %d, error %d", s.ok, s.failed))
	if len(s.needsRestart) > 0 {
		row("needs_restart", strings.Join(s.needsRestart, ", "))
	} else {
		row("needs_restart", "-")
	}
	if s.lastErr != "" {
		row("last_error", s.lastErrAt.UTC().Format(time.RFC3339)+" "+s.lastErr)
	} else {
		row("last_error", "-")
	}
	return b.String()
}
