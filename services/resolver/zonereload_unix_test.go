//go:build unix

package resolver

import (
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/miekg/dns"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
)

// TestZoneFileReloadLive runs the resolver on a zone file without
// $ORIGIN (named with path=origin), changes the file and sees the change
// served, then changes it again and sends SIGHUP.
func TestZoneFileReloadLive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.zone")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(reloadZoneText("1", "192.0.2.1"))
	_, regAddr := startFakeRegistry(t)
	inst := servicetest.Start(t, Spec(), "--dns-addr=127.0.0.1:0", "--registry-addr="+regAddr, "--zone-file="+path+"=reload.test")
	c := &dns.Client{Net: "udp"}
	www := func() string {
		r, _, err := c.Exchange(q("www.reload.test.", dns.TypeA), inst.Addrs["dns"])
		if err != nil || len(r.Answer) != 1 {
			return ""
		}
		return r.Answer[0].(*dns.A).A.String()
	}
	if got := www(); got != "192.0.2.1" {
		t.Fatalf("www.reload.test. = %q", got)
	}

	write(reloadZoneText("2", "192.0.2.2"))
	eventually(t, "the changed file served", func() (bool, string) { return www() == "192.0.2.2", www() })

	// A real SIGHUP reaches the resolver's handler (and does not end the
	// process); this subscription only keeps the test process alive
	// should it arrive when no resolver is running. That SIGHUP reads a
	// file the watch thinks unchanged is TestReloadZonesUnchangedStamp's.
	keep := make(chan os.Signal, 1)
	signal.Notify(keep, syscall.SIGHUP)
	defer signal.Stop(keep)
	write(reloadZoneText("3", "192.0.2.3"))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the file served after SIGHUP", func() (bool, string) { return www() == "192.0.2.3", www() })
}
