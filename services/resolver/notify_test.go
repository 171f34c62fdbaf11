package resolver

import (
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeSecondary answers NOTIFY on loopback UDP, after dropping the first
// drop ones, and records the serials it acknowledged; hold, when set,
// blocks each answer until it is closed.
type fakeSecondary struct {
	addr string
	mu   sync.Mutex
	drop int
	got  []uint32 // serials acknowledged
	seen int      // NOTIFY messages received
	hold chan struct{}
}

func startFakeSecondary(t *testing.T, drop int, hold chan struct{}) *fakeSecondary {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSecondary{addr: pc.LocalAddr().String(), drop: drop, hold: hold}
	srv := &dns.Server{PacketConn: pc, MsgAcceptFunc: func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			f.mu.Lock()
			f.seen++
			if f.drop > 0 {
				f.drop--
				f.mu.Unlock()
				return
			}
			f.mu.Unlock()
			if f.hold != nil {
				<-f.hold
			}
			if r.Opcode != dns.OpcodeNotify || len(r.Answer) != 1 {
				return
			}
			f.mu.Lock()
			f.got = append(f.got, r.Answer[0].(*dns.SOA).Serial)
			f.mu.Unlock()
			m := new(dns.Msg)
			m.SetReply(r)
			_ = w.WriteMsg(m)
		})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return f
}

func (f *fakeSecondary) state() (seen int, got []uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen, slices.Clone(f.got)
}

// notifyResult is one sent callback.
type notifyResult struct {
	serial uint32
	err    error
}

// startNotifier runs a notifier to targets with short timeouts, and
// returns it and the channel of its results.
func startNotifier(t *testing.T, targets ...string) (*notifier, <-chan notifyResult) {
	t.Helper()
	n := newNotifier(slog.New(slog.NewTextHandler(io.Discard, nil)), targets, nil)
	n.timeout, n.retry = 200*time.Millisecond, 10*time.Millisecond
	results := make(chan notifyResult, 100)
	n.sent = func(_ notifyKey, serial uint32, err error) { results <- notifyResult{serial, err} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = n.run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return n, results
}

func soaAt(serial uint32) []committed {
	return []committed{{"n.test.", mustRR("n.test. 60 IN SOA ns.n.test. h.n.test. " + strconv.FormatUint(uint64(serial), 10) + " 3600 600 86400 60").(*dns.SOA)}}
}

func waitResult(t *testing.T, results <-chan notifyResult) notifyResult {
	t.Helper()
	select {
	case r := <-results:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("no NOTIFY outcome within 15s")
		return notifyResult{}
	}
}

// TestNotifyRetries: an unanswered NOTIFY is sent again after a timeout,
// and after notifyAttempts the notifier gives up with an error.
func TestNotifyRetries(t *testing.T) {
	t.Run("acknowledged at the third attempt", func(t *testing.T) {
		sec := startFakeSecondary(t, 2, nil)
		n, results := startNotifier(t, sec.addr)
		n.changed(soaAt(7))
		if r := waitResult(t, results); r.err != nil || r.serial != 7 {
			t.Fatalf("outcome %+v, want serial 7 acknowledged", r)
		}
		if seen, got := sec.state(); seen != 3 || !slices.Equal(got, []uint32{7}) {
			t.Fatalf("secondary saw %d NOTIFYs and acknowledged %v, want 3 and [7]", seen, got)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		sec := startFakeSecondary(t, 1000, nil)
		n, results := startNotifier(t, sec.addr)
		n.changed(soaAt(8))
		if r := waitResult(t, results); r.err == nil {
			t.Fatalf("outcome %+v, want an error after %d attempts", r, notifyAttempts)
		}
		if seen, _ := sec.state(); seen != notifyAttempts {
			t.Fatalf("secondary saw %d NOTIFYs, want %d", seen, notifyAttempts)
		}
	})
}

// TestNotifyCoalesces: changes made while a NOTIFY is in flight become one
// NOTIFY of the latest serial, and queueing never blocks.
func TestNotifyCoalesces(t *testing.T) {
	hold := make(chan struct{})
	sec := startFakeSecondary(t, 0, hold)
	n, results := startNotifier(t, sec.addr)
	n.changed(soaAt(1))
	deadline := time.Now().Add(10 * time.Second)
	for seen, _ := sec.state(); seen == 0; seen, _ = sec.state() {
		if time.Now().After(deadline) {
			t.Fatal("the first NOTIFY did not arrive")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	for s := uint32(2); s <= 1000; s++ {
		n.changed(soaAt(s))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("queueing 999 changes took %v: it must not wait for the secondary", d)
	}
	n.mu.Lock()
	states := len(n.states)
	n.mu.Unlock()
	if states != 1 {
		t.Fatalf("%d pending states for one zone and one secondary, want 1", states)
	}
	close(hold)
	var outcomes []uint32
	for len(outcomes) == 0 || outcomes[len(outcomes)-1] != 1000 {
		r := waitResult(t, results)
		if r.err != nil {
			continue // the first NOTIFY timed out while held
		}
		outcomes = append(outcomes, r.serial)
	}
	if _, got := sec.state(); len(got) > 3 || got[len(got)-1] != 1000 {
		t.Fatalf("secondary acknowledged %v, want the latest serial 1000 after at most a couple of others", got)
	}
}
