package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// NOTIFY (RFC 1996) to the secondaries of --notify on every zone change.
//
// A change only records the zone's new SOA for each secondary and wakes
// the sender: it never waits. Per zone and secondary one sender at a time
// sends the newest SOA over UDP, retrying a bounded number of times, each
// attempt with a timeout; changes made meanwhile are coalesced into one
// NOTIFY of the latest serial, sent as soon as the one in flight is
// answered, or notifyAbortAfter after it was sent if it is not. The
// pending set is bounded by zones times secondaries.

// notifyTimeout bounds each NOTIFY attempt; notifyAttempts bounds the
// attempts per change and secondary (RFC 1996 §3.6 asks for a few
// retries, each after a timeout), with the wait between them doubling
// from notifyRetryWait.
const (
	notifyTimeout   = time.Second
	notifyAttempts  = 5
	notifyRetryWait = 500 * time.Millisecond
	// notifyAbortAfter is how long an unanswered NOTIFY is waited for
	// once a newer serial is due.
	notifyAbortAfter = 100 * time.Millisecond
)

// notifyKey is one zone at one secondary.
type notifyKey struct {
	zone, target string
}

// notifyState is what is to be sent for one key.
type notifyState struct {
	soa     *dns.SOA      // the newest SOA not yet sent; nil: none
	running bool          // a sender runs for the key
	newer   chan struct{} // a newer SOA arrived while the sender waits to retry
}

// notifyOutcome is the metrics' result label of a NOTIFY's last attempt.
func notifyOutcome(err error) string {
	switch {
	case err == nil:
		return resultOK
	case errors.Is(err, errRefusedNotify):
		return resultRefused
	}
	return resultFailed
}

// errRefusedNotify is a secondary answering a NOTIFY with an error rcode.
var errRefusedNotify = errors.New("refused")

// errSuperseded ends the retries of a NOTIFY when a newer one is due.
var errSuperseded = errors.New("superseded by a newer serial")

// notifier sends NOTIFY messages.
type notifier struct {
	log     *slog.Logger
	targets []string
	key     *tsigKey
	timeout time.Duration
	retry   time.Duration

	mu     sync.Mutex
	states map[notifyKey]*notifyState // at most zones × targets
	wake   chan struct{}
	sent   func(notifyKey, uint32, error) // called after each NOTIFY's last attempt (tests)
	count  func(result string)            // counts each NOTIFY's outcome (metrics); may be nil
}

func newNotifier(log *slog.Logger, targets []string, key *tsigKey) *notifier {
	return &notifier{
		log: log, targets: targets, key: key,
		timeout: notifyTimeout, retry: notifyRetryWait,
		states: map[notifyKey]*notifyState{},
		wake:   make(chan struct{}, 1),
	}
}

// changed queues NOTIFY of the zones' new SOAs to every secondary; it
// does not block.
func (n *notifier) changed(zones []committed) {
	if n == nil || len(zones) == 0 || len(n.targets) == 0 {
		return
	}
	n.mu.Lock()
	for _, z := range zones {
		for _, t := range n.targets {
			k := notifyKey{z.origin, t}
			st := n.states[k]
			if st == nil {
				st = &notifyState{newer: make(chan struct{}, 1)}
				n.states[k] = st
			}
			st.soa = z.soa
			if st.running {
				select {
				case st.newer <- struct{}{}:
				default:
				}
			}
		}
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// run starts a sender for each key with something to send and no sender,
// until ctx ends, and waits for the senders.
func (n *notifier) run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.wake:
		}
		n.mu.Lock()
		for k, st := range n.states {
			if st.running || st.soa == nil {
				continue
			}
			st.running = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.send(ctx, k, st)
			}()
		}
		n.mu.Unlock()
	}
}

// send notifies one secondary of one zone until nothing newer is pending.
func (n *notifier) send(ctx context.Context, k notifyKey, st *notifyState) {
	for {
		n.mu.Lock()
		soa := st.soa
		st.soa = nil
		select {
		case <-st.newer:
		default:
		}
		if soa == nil || ctx.Err() != nil {
			delete(n.states, k)
			n.mu.Unlock()
			return
		}
		n.mu.Unlock()
		err := n.notify(ctx, k, soa, st.newer)
		switch {
		case errors.Is(err, errSuperseded):
			continue
		case err != nil:
			n.log.Warn("NOTIFY not acknowledged; the secondary will refresh on its SOA timer", "zone", k.zone, "secondary", k.target, "serial", soa.Serial, "err", err)
		default:
			n.log.Debug("NOTIFY acknowledged", "zone", k.zone, "secondary", k.target, "serial", soa.Serial)
		}
		if n.count != nil {
			n.count(notifyOutcome(err))
		}
		if n.sent != nil {
			n.sent(k, soa.Serial, err)
		}
	}
}

// notify sends one NOTIFY with bounded retries and returns the last error,
// or errSuperseded when newer fires while it waits to retry.
func (n *notifier) notify(ctx context.Context, k notifyKey, soa *dns.SOA, newer <-chan struct{}) error {
	c := &dns.Client{Net: "udp", Timeout: n.timeout}
	if n.key != nil {
		c.TsigProvider = n.key
	}
	wait := n.retry
	var err error
	for attempt := range notifyAttempts {
		if attempt > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-newer:
				t.Stop()
				return errSuperseded
			case <-t.C:
			}
			wait *= 2
		}
		m := new(dns.Msg)
		m.SetNotify(k.zone)
		m.Answer = []dns.RR{soa} // the new serial (RFC 1996 §3.7)
		if n.key != nil {
			m.SetTsig(n.key.name, n.key.alg, tsigFudge, time.Now().Unix())
		}
		var r *dns.Msg
		var superseded bool
		r, superseded, err = n.exchange(ctx, c, m, k.target, newer)
		if superseded {
			return errSuperseded
		}
		switch {
		case err != nil:
			err = fmt.Errorf("attempt %d: %w", attempt+1, err)
		case r.Opcode != dns.OpcodeNotify || r.Rcode != dns.RcodeSuccess:
			err = fmt.Errorf("attempt %d: answered %s (opcode %s): %w", attempt+1, dns.RcodeToString[r.Rcode], dns.OpcodeToString[r.Opcode], errRefusedNotify)
		default:
			return nil
		}
	}
	return err
}

// exchange sends m and reads the answer within n.timeout; a newer serial
// aborts the wait notifyAbortAfter after sending (superseded), ctx ending
// at once.
func (n *notifier) exchange(ctx context.Context, c *dns.Client, m *dns.Msg, target string, newer <-chan struct{}) (r *dns.Msg, superseded bool, err error) {
	actx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	co, err := c.DialContext(actx, target)
	if err != nil {
		return nil, false, err
	}
	defer co.Close()
	done := make(chan struct{})
	aborted := make(chan bool, 1)
	start := time.Now()
	go func() {
		select {
		case <-newer:
			// Past a round trip the answer is late (a secondary busy
			// with a transfer may not answer at all): NOTIFY the newer
			// serial instead. At most one NOTIFY per notifyAbortAfter
			// while changes keep coming.
			t := time.NewTimer(time.Until(start.Add(notifyAbortAfter)))
			defer t.Stop()
			select {
			case <-t.C:
				aborted <- true
				_ = co.SetDeadline(time.Now())
			case <-done:
			case <-actx.Done():
				_ = co.SetDeadline(time.Now())
			}
		case <-actx.Done():
			_ = co.SetDeadline(time.Now())
		case <-done:
		}
	}()
	r, _, err = c.ExchangeWithConnContext(actx, m, co)
	close(done)
	select {
	case <-aborted:
		return nil, true, nil
	default:
	}
	return r, false, err
}
