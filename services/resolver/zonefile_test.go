package resolver

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestParseZoneErrors: what a master file may not hold, each error with
// the line at fault (and, without $ORIGIN, how to name the zone).
func TestParseZoneErrors(t *testing.T) {
	const head = "$TTL 60\n@ SOA ns hostmaster 1 3600 600 86400 60\n"
	for _, tt := range []struct {
		name, text, origin string
		want               []string
	}{
		{"no $ORIGIN, no origin", head, "", []string{`bad owner name: "@" at line: 2`, "--zone-file=f.zone=<origin>"}},
		{"syntax", head + "www A 192.0.2.1\nbad A 192.0.2.300\n", "example.", []string{`"192.0.2.300" at line: 4`}},
		{"CNAME beside data", head + "; a comment\n\nwww A 192.0.2.1\nwww CNAME x\n", "example.", []string{"line 6", "CNAME at www.example. cannot sit beside other data"}},
		{"outside the zone", head + "www.example.org. A 192.0.2.1\n", "example.", []string{"line 3", "www.example.org. is outside the zone example."}},
		{"multi-line record", head + "big TXT (\n \"a\"\n \"b\" )\nbig CNAME x\n", "example.", []string{"line 6"}},
		{"second SOA", head + "@ SOA ns hostmaster 2 3600 600 86400 60\n", "example.", []string{"line 3", "second SOA"}},
		{"SOA is not the origin", "$TTL 60\nother. SOA ns hostmaster 1 3600 600 86400 60\n", "example.", []string{"not the zone example."}},
		{"no SOA", "$TTL 60\n$ORIGIN example.\nwww A 192.0.2.1\n", "", []string{"no SOA"}},
		{"class", head + "www CH A 192.0.2.1\n", "example.", []string{"line 3", "class CH"}},
		{"DNAME", head + "d DNAME example.net.\n", "example.", []string{"line 3", "DNAME is not supported"}},
		{"NS at a wildcard", head + "* NS ns.example.net.\n", "example.", []string{"line 3", "RFC 4592"}},
		{"DNSSEC", head + "@ DNSKEY 257 3 8 AwEAAa==\n", "example.", []string{"line 3", "DNSSEC is not supported"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := zoneSource{path: "f.zone", origin: tt.origin}
			_, err := parseZone([]byte(tt.text), src)
			if err == nil {
				t.Fatal("parsed")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestZoneFileWithOrigin: a file without $ORIGIN is read against the
// origin named after "=" ("@" and relative names).
func TestZoneFileWithOrigin(t *testing.T) {
	for _, v := range []string{"testdata/lookup/other.test.zone=other.test", "testdata/lookup/other.test.zone=OTHER.test."} {
		src, err := parseZoneSource(v)
		if err != nil {
			t.Fatal(err)
		}
		z, err := loadZoneFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if z.soa.Hdr.Name != "other.test." || z.soa.Ns != "ns.other.test." {
			t.Errorf("%s: SOA %v", v, z.soa)
		}
	}
	for _, tt := range []struct{ in, path, origin string }{
		{"a.zone", "a.zone", ""},
		{"a.zone=example.test", "a.zone", "example.test."},
		{"dir=x/a.zone=", "dir=x/a.zone", ""},
		{"dir=x/a.zone=Example.", "dir=x/a.zone", "example."},
	} {
		src, err := parseZoneSource(tt.in)
		if err != nil || src.path != tt.path || src.origin != tt.origin {
			t.Errorf("parseZoneSource(%q) = %+v, %v; want %q, %q", tt.in, src, err, tt.path, tt.origin)
		}
	}
	for _, bad := range []string{"=example.", "a.zone=bad..origin"} {
		if _, err := parseZoneSource(bad); err == nil {
			t.Errorf("parseZoneSource(%q) accepted", bad)
		}
	}
}

// reloadFixture is a server with one zone file in a temporary directory
// and its logs in a buffer.
type reloadFixture struct {
	path string
	s    *server
	mu   sync.Mutex
	logs bytes.Buffer
}

func (f *reloadFixture) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logs.Write(p)
}

// takeLogs returns the logs so far and forgets them.
func (f *reloadFixture) takeLogs() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.logs.String()
	f.logs.Reset()
	return s
}

func reloadZoneText(serial, addr string) string {
	return "$TTL 60\n@ SOA ns hostmaster " + serial + " 3600 600 86400 60\n@ NS ns\nns A 192.0.2.53\nwww A " + addr + "\n"
}

func newReloadFixture(t *testing.T) *reloadFixture {
	t.Helper()
	f := &reloadFixture{path: filepath.Join(t.TempDir(), "reload.zone")}
	if err := os.WriteFile(f.path, []byte(reloadZoneText("1", "192.0.2.1")), 0o644); err != nil {
		t.Fatal(err)
	}
	src := zoneSource{path: f.path, origin: "reload.test."}
	z, err := loadZoneFile(src)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Zone: "switchboard.", ServiceTTL: 5 * time.Second, UDPSockets: 1, UpstreamTimeout: time.Second}
	allow, _ := cfg.validate()
	f.s = newServer(context.Background(), slog.New(slog.NewTextHandler(f, nil)), cfg, []*staticZone{z}, allow, nil)
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.s.rebuildLocked(); err != nil {
		t.Fatal(err)
	}
	return f
}

// www returns the address served for www.reload.test.
func (f *reloadFixture) www(t *testing.T) string {
	t.Helper()
	m := f.s.auth.Load().lookup("www.reload.test.", dns.TypeA)
	if len(m.Answer) != 1 {
		t.Fatalf("www.reload.test. A: %v", m)
	}
	return m.Answer[0].(*dns.A).A.String()
}

func (f *reloadFixture) write(t *testing.T, text string) {
	t.Helper()
	if err := os.WriteFile(f.path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReloadZones: a changed file with a newer serial is served at once;
// a bad file, or a changed one whose serial did not increase, leaves the
// zone as it was and says why (file, line, reason); an unchanged file is
// left alone.
func TestReloadZones(t *testing.T) {
	f := newReloadFixture(t)
	if n := f.s.reloadZones(false); n != 0 {
		t.Fatalf("unchanged file: %d zones reloaded", n)
	}
	f.write(t, reloadZoneText("2", "192.0.2.22"))
	if n := f.s.reloadZones(false); n != 1 || f.www(t) != "192.0.2.22" {
		t.Fatalf("after a change with serial 2: %d reloaded, www %s", n, f.www(t))
	}
	if logs := f.takeLogs(); !strings.Contains(logs, "zone file reloaded") || !strings.Contains(logs, "serial=2") {
		t.Errorf("logs: %s", logs)
	}

	// A syntax error on line 5: the old zone stays.
	f.write(t, reloadZoneText("3", "192.0.2.300"))
	if n := f.s.reloadZones(false); n != 0 || f.www(t) != "192.0.2.22" {
		t.Fatalf("bad file: %d reloaded, www %s", n, f.www(t))
	}
	logs := f.takeLogs()
	for _, w := range []string{"level=ERROR", "zone file not reloaded", f.path, "at line: 5", "192.0.2.300"} {
		if !strings.Contains(logs, w) {
			t.Errorf("logs lack %q: %s", w, logs)
		}
	}
	// Looked at once: the same bad file is not reported again.
	if n := f.s.reloadZones(false); n != 0 || f.takeLogs() != "" {
		t.Errorf("the same bad file reloaded or logged again")
	}

	// A semantic error: the line of the record.
	f.write(t, reloadZoneText("3", "192.0.2.3")+"www CNAME ns\n")
	f.s.reloadZones(false)
	if logs := f.takeLogs(); !strings.Contains(logs, "line 6") || !strings.Contains(logs, "CNAME") {
		t.Errorf("logs: %s", logs)
	}

	// Changed, but serial 2 again (and then older): the old zone stays.
	for _, serial := range []string{"2", "1"} {
		f.write(t, reloadZoneText(serial, "192.0.2.99"))
		if n := f.s.reloadZones(false); n != 0 || f.www(t) != "192.0.2.22" {
			t.Fatalf("serial %s: %d reloaded, www %s", serial, n, f.www(t))
		}
		if logs := f.takeLogs(); !strings.Contains(logs, "serial is not newer") || !strings.Contains(logs, "file_serial="+serial) {
			t.Errorf("logs: %s", logs)
		}
	}

	// RFC 1982: serials wrap; 2 → 2147483649 → 0 are increases.
	f.write(t, reloadZoneText("2147483649", "192.0.2.4"))
	if n := f.s.reloadZones(false); n != 1 || f.www(t) != "192.0.2.4" {
		t.Fatalf("serial 2147483649: %d reloaded, www %s", n, f.www(t))
	}
	f.write(t, reloadZoneText("0", "192.0.2.5"))
	if n := f.s.reloadZones(false); n != 1 || f.www(t) != "192.0.2.5" {
		t.Fatalf("serial wrapping to 0: %d reloaded, www %s", n, f.www(t))
	}

	// Forced (SIGHUP): read even if it looks unchanged; same content is
	// no change.
	if n := f.s.reloadZones(true); n != 0 {
		t.Errorf("forced reload of an unchanged file: %d", n)
	}

	// A file that disappears: the zone stays, the error is logged once.
	if err := os.Remove(f.path); err != nil {
		t.Fatal(err)
	}
	f.takeLogs()
	f.s.reloadZones(false)
	f.s.reloadZones(false)
	if logs := f.takeLogs(); strings.Count(logs, "zone file not reloaded") != 1 || f.www(t) != "192.0.2.5" {
		t.Errorf("removed file: www %s, logs: %s", f.www(t), logs)
	}
}

// TestReloadZonesUnchangedStamp: a file whose size and modification time
// (long past) did not change is not read again by the watch; SIGHUP
// (force) reads it all the same.
func TestReloadZonesUnchangedStamp(t *testing.T) {
	f := newReloadFixture(t)
	old := time.Now().Add(-time.Hour)
	writeOld := func(text string) {
		t.Helper()
		f.write(t, text)
		if err := os.Chtimes(f.path, old, old); err != nil {
			t.Fatal(err)
		}
	}
	writeOld(reloadZoneText("2", "192.0.2.2"))
	if n := f.s.reloadZones(false); n != 1 || f.www(t) != "192.0.2.2" {
		t.Fatalf("%d reloaded, www %s", n, f.www(t))
	}
	writeOld(reloadZoneText("3", "192.0.2.3")) // same size, same time
	if n := f.s.reloadZones(false); n != 0 || f.www(t) != "192.0.2.2" {
		t.Fatalf("the watch read a file that looks unchanged: %d reloaded, www %s", n, f.www(t))
	}
	if n := f.s.reloadZones(true); n != 1 || f.www(t) != "192.0.2.3" {
		t.Fatalf("forced: %d reloaded, www %s", n, f.www(t))
	}
}

// TestWatchZoneFilesOnHUP: the watch loop reloads on the signal it is
// given, and stops with its context.
func TestWatchZoneFilesOnHUP(t *testing.T) {
	f := newReloadFixture(t)
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(f.path, old, old); err != nil {
		t.Fatal(err)
	}
	f.s.reloadZones(false) // the watch has seen the file
	f.write(t, reloadZoneText("2", "192.0.2.2"))
	if err := os.Chtimes(f.path, old, old); err != nil {
		t.Fatal(err)
	}
	hup := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.s.watchZoneFiles(ctx, hup) }()
	hup <- syscall.SIGHUP
	eventually(t, "reloaded on HUP", func() (bool, string) {
		m := f.s.auth.Load().lookup("www.reload.test.", dns.TypeA)
		return len(m.Answer) == 1 && m.Answer[0].(*dns.A).A.String() == "192.0.2.2", m.String()
	})
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("watch ended with %v", err)
	}
}

func TestSerialNewer(t *testing.T) {
	for _, tt := range []struct {
		a, b uint32
		want bool
	}{{2, 1, true}, {1, 2, false}, {1, 1, false}, {0, 4294967295, true}, {1 << 31, 0, false}, {1<<31 - 1, 0, true}} {
		if got := serialNewer(tt.a, tt.b); got != tt.want {
			t.Errorf("serialNewer(%d, %d) = %v", tt.a, tt.b, got)
		}
	}
}

var _ io.Writer = (*reloadFixture)(nil)
