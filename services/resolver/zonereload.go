package resolver

import (
	"context"
	"crypto/sha256"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"
)

// zoneCheckInterval is how often the zone files are looked at for changes.
const zoneCheckInterval = time.Second

// watchZoneFiles reloads the zone files when one changes (its size,
// modification time or the file itself — a rename over it) and on every
// SIGHUP, until ctx ends. hup is already subscribed to SIGHUP.
func (s *server) watchZoneFiles(ctx context.Context, hup chan os.Signal) error {
	defer signal.Stop(hup)
	var tick <-chan time.Time
	if len(s.looked) > 0 {
		t := time.NewTicker(zoneCheckInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-hup:
			s.log.Info("SIGHUP: reloading zone files", "files", len(s.looked))
			s.reloadZones(true)
		case <-tick:
			s.reloadZones(false)
		}
	}
}

// subscribeHUP starts delivering SIGHUP to the returned channel (instead
// of the default action, which ends the process).
func subscribeHUP() chan os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	return ch
}

// zoneWatch is what the last look at one zone file saw.
type zoneWatch struct {
	// fi is the file as last read; nil to read it at the next look (never
	// read, unreadable, or modified so recently that a further change
	// could keep its size and modification time: timestamps are coarse).
	fi os.FileInfo
	// sum is the content last read, loaded or refused: the same content
	// is neither parsed nor reported again.
	sum    [sha256.Size]byte
	failed bool // the last look failed (stat or read), reported once
}

// racyWindow is how recently a file may have been modified for its size
// and modification time not to be trusted to show a further change.
const racyWindow = 2 * time.Second

// reloadZones reads again every zone file that changed since it was last
// looked at (every file when force, on SIGHUP), and serves the new zones
// at once, in one new snapshot. A file is taken only when it parses and
// checks (else the error is logged with the file and line) and when its
// SOA serial is newer than the one served (RFC 1982 serial arithmetic),
// as a secondary would need to see the change; otherwise the zone served
// so far stays. A file whose content did not change is left alone. It
// returns how many zones were replaced.
func (s *server) reloadZones(force bool) int {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.mu.Lock()
	cur := slices.Clone(s.static)
	s.mu.Unlock()
	next := slices.Clone(cur)
	changed := 0
	for i, old := range cur {
		w := &s.looked[i]
		path := old.src.path
		fi, err := os.Stat(path)
		if err == nil && !force && w.fi != nil && sameFile(w.fi, fi) {
			continue
		}
		var data []byte
		if err == nil {
			data, err = os.ReadFile(path)
		}
		if err != nil {
			if !w.failed || force {
				s.log.Error("zone file not reloaded; serving the zone loaded before", "file", path, "zone", old.soa.Hdr.Name, "err", err)
			}
			w.fi, w.failed = nil, true
			continue
		}
		w.failed = false
		w.fi = fi
		if time.Since(fi.ModTime()) < racyWindow {
			w.fi = nil
		}
		sum := sha256.Sum256(data)
		if sum == old.sum || (sum == w.sum && !force) {
			w.sum = sum
			continue
		}
		w.sum = sum
		z, err := parseZone(data, old.src)
		switch {
		case err != nil:
			s.log.Error("zone file not reloaded; serving the zone loaded before", "file", path, "zone", old.soa.Hdr.Name, "err", err)
			continue
		case lowerASCII(z.soa.Hdr.Name) == lowerASCII(old.soa.Hdr.Name) && !serialNewer(z.soa.Serial, old.soa.Serial):
			s.log.Warn("zone file changed but its SOA serial is not newer; serving the zone loaded before (increase the serial)",
				"file", path, "zone", old.soa.Hdr.Name, "serial", old.soa.Serial, "file_serial", z.soa.Serial)
			continue
		}
		s.log.Info("zone file reloaded", "file", path, "zone", z.soa.Hdr.Name, "serial", z.soa.Serial, "previous_serial", old.soa.Serial)
		next[i] = z
		changed++
	}
	if changed == 0 {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.static
	s.static = next
	if err := s.rebuildLocked(); err != nil {
		s.static = prev
		s.log.Error("zone files not reloaded; serving the zones loaded before", "err", err)
		return 0
	}
	return changed
}

// sameFile reports whether a file looks unchanged since it was looked at.
func sameFile(before, now os.FileInfo) bool {
	return before != nil && os.SameFile(before, now) && before.Size() == now.Size() && before.ModTime().Equal(now.ModTime())
}

// serialNewer reports whether SOA serial a is newer than b (RFC 1982 §3.2).
func serialNewer(a, b uint32) bool {
	return a != b && a-b < 1<<31
}
