package resolver

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// Zone transfers out (AXFR, RFC 5936; IXFR, RFC 1995) of every zone we are
// authoritative for, to the networks of --transfer-allow, optionally
// signed with TSIG (RFC 8945); and TSIG on any query that carries it, so
// secondaries that sign their SOA queries get signed answers.
//
// What a request gets, in order:
//
//  1. A TSIG record that does not verify (unknown key or algorithm, bad
//     MAC, time outside the fudge): NOTAUTH with the TSIG error BADKEY,
//     BADSIG or BADTIME (RFC 8945 §5.2), whatever was asked.
//  2. AXFR or IXFR from a client outside --transfer-allow: REFUSED.
//  3. With a key configured, an unsigned AXFR or IXFR: NOTAUTH.
//  4. A zone we do not serve: NOTAUTH (RFC 5936 §2.2.1); the service zone
//     before the registry's first snapshot: SERVFAIL.
//  5. AXFR over UDP: NOTIMP (as Knot DNS answers; AXFR is TCP only, RFC
//     5936 §4.2).
//  6. IXFR: a single SOA when the client's serial is not older than ours
//     (RFC 1995 §2); the changes since its serial when the journal holds
//     them (and they are smaller than the zone); otherwise the whole zone
//     in AXFR form (RFC 1995 §4). Over UDP an answer that does not fit is
//     a single SOA, telling the client to ask over TCP (RFC 1995 §2).
//  7. AXFR over TCP: the zone, SOA first and last, in messages of at most
//     about 16 KiB.

// TransferConfig is the configuration of zone transfers and NOTIFY.
type TransferConfig struct {
	// Allow lists the client networks that may transfer zones (CIDR);
	// empty: transfers are refused to everyone.
	Allow listFlag
	// TSIG is a key "name:algorithm:secret" that transfers must be signed
	// with and NOTIFY is signed with.
	TSIG string
	// TSIGFile is a file holding the key, instead of TSIG.
	TSIGFile string
	// Notify lists secondaries (host:port) to NOTIFY on every zone change.
	Notify listFlag
	// Journal is how many changes per zone IXFR can answer from.
	Journal int
}

// registerTransferFlags adds the transfer flags to fs.
func (c *TransferConfig) registerTransferFlags(fs *flag.FlagSet) {
	fs.Var(&c.Allow, "transfer-allow", "client networks allowed AXFR/IXFR of every zone (CIDR list; default none: transfers refused)")
	fs.StringVar(&c.TSIG, "transfer-tsig", "", "TSIG key name:algorithm:secret (base64) that transfers must be signed with and NOTIFY is signed with; algorithms hmac-sha1, -sha224, -sha256, -sha384, -sha512")
	fs.StringVar(&c.TSIGFile, "transfer-tsig-file", "", "file holding the TSIG key as one name:algorithm:secret line (instead of --transfer-tsig)")
	fs.Var(&c.Notify, "notify", "secondary host:port to send NOTIFY to on every zone change (repeatable)")
	fs.IntVar(&c.Journal, "transfer-journal", 100, "zone changes kept per zone for IXFR (and at most 4 MiB of them); older serials get the whole zone")
}

// transferSettings is the validated TransferConfig.
type transferSettings struct {
	allow  []netip.Prefix
	key    *tsigKey // nil: no TSIG
	notify []string
}

// validate checks the configuration.
func (c *TransferConfig) validate() (*transferSettings, error) {
	ts := &transferSettings{}
	for _, a := range c.Allow {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return nil, fmt.Errorf("--transfer-allow: %w", err)
		}
		ts.allow = append(ts.allow, p.Masked())
	}
	switch {
	case c.TSIG != "" && c.TSIGFile != "":
		return nil, errors.New("--transfer-tsig and --transfer-tsig-file: give one")
	case c.TSIG != "":
		k, err := parseTSIGKey(c.TSIG)
		if err != nil {
			return nil, fmt.Errorf("--transfer-tsig: %w", err)
		}
		ts.key = k
	case c.TSIGFile != "":
		k, err := loadTSIGKey(c.TSIGFile)
		if err != nil {
			return nil, fmt.Errorf("--transfer-tsig-file: %w", err)
		}
		ts.key = k
	}
	for _, n := range c.Notify {
		host, port, err := net.SplitHostPort(n)
		if err == nil && (host == "" || port == "") {
			err = errors.New("missing host or port")
		}
		if err != nil {
			return nil, fmt.Errorf("--notify: %q: %w", n, err)
		}
		ts.notify = append(ts.notify, n)
	}
	if c.Journal < 0 {
		return nil, fmt.Errorf("--transfer-journal: must not be negative, got %d", c.Journal)
	}
	return ts, nil
}

// transferAllowed reports whether client may transfer zones.
func (s *server) transferAllowed(client netip.Addr) bool {
	for _, p := range s.xfrAllow {
		if p.Contains(client) {
			return true
		}
	}
	return false
}

// isTransfer reports whether r asks for a zone transfer.
func isTransfer(r *dns.Msg) bool {
	_, ok := transferType(r)
	return ok
}

// serveSpecial answers (over TCP, through miekg/dns's server) what the packed-answer path does not:
// zone transfers and TSIG-signed requests. It reports whether it answered.
func (s *server) serveSpecial(w dns.ResponseWriter, r *dns.Msg, client netip.Addr, udp bool) bool {
	rt := r.IsTsig()
	if rt == nil && !isTransfer(r) {
		return false
	}
	var verr error
	if rt != nil {
		verr = w.TsigStatus()
		if s.xfrKey == nil {
			verr = dns.ErrSecret
		}
	}
	s.special(r, client, udp, verr, func(b []byte) error {
		_, err := w.Write(b)
		return err
	})
	return true
}

// serveWireSpecial is serveSpecial for a raw query (UDP): r was unpacked
// from pkt, whose TSIG is verified here. It
// returns the reply and whether it answered.
func (s *server) serveWireSpecial(pkt []byte, r *dns.Msg, client netip.Addr, udp bool) ([]byte, bool) {
	rt := r.IsTsig()
	if rt == nil && !isTransfer(r) {
		return nil, false
	}
	var verr error
	if rt != nil {
		verr = dns.ErrSecret
		if s.xfrKey != nil {
			verr = dns.TsigVerifyWithProvider(pkt, s.xfrKey, "", false)
		}
	}
	var out []byte
	s.special(r, client, udp, verr, func(b []byte) error {
		out = b
		return nil
	})
	return out, true
}

// special answers a transfer or a signed request; verr is the request's
// TSIG verification (nil: unsigned or good). Replies go to write, signed
// when the request was; over UDP there is one.
func (s *server) special(r *dns.Msg, client netip.Addr, udp bool, verr error, write func([]byte) error) {
	rt := r.IsTsig()
	proto := protoTCP
	if udp {
		proto = protoUDP
	}
	if rt != nil && verr != nil {
		if typ, ok := transferType(r); ok {
			s.met.transfer(typ, resultRefused)
		} else {
			s.met.shared().count(proto, r.Question[0].Qtype, dns.RcodeNotAuth)
		}
		b, err := tsigFailure(r, s.xfrKey, verr)
		if err != nil {
			s.log.Debug("tsig failure reply", "err", err)
			return
		}
		s.log.Debug("tsig verification failed", "client", client, "key", rt.Hdr.Name, "err", verr)
		_ = write(b)
		return
	}
	var msgs []*dns.Msg
	if isTransfer(r) {
		msgs = s.transfer(r, client, udp)
	} else {
		out, _, err := s.respond(nil, r, client, udp, false)
		if err != nil {
			out = nil
		}
		m := new(dns.Msg)
		if err == nil {
			err = m.Unpack(out)
		}
		if err != nil {
			m = new(dns.Msg)
			m.SetRcode(r, dns.RcodeServerFailure)
		}
		s.met.shared().count(proto, r.Question[0].Qtype, m.Rcode)
		msgs = []*dns.Msg{m}
	}
	mac := ""
	if rt != nil {
		mac = rt.MAC
	}
	for i, m := range msgs {
		var b []byte
		var err error
		if rt != nil {
			// Each message signed; after the first, over the previous
			// MAC and the timers (RFC 8945 §5.3.1).
			b, mac, err = signMsg(m, rt, s.xfrKey, mac, i > 0, 0)
		} else {
			b, err = m.Pack()
		}
		if err != nil {
			s.log.Warn("packing a transfer reply", "zone", r.Question[0].Name, "err", err)
			return
		}
		if err := write(b); err != nil {
			s.log.Debug("writing a transfer reply", "zone", r.Question[0].Name, "err", err)
			return
		}
	}
}

// transferType is the type label of a transfer request, and whether r is
// one.
func transferType(r *dns.Msg) (string, bool) {
	if len(r.Question) != 1 {
		return "", false
	}
	switch r.Question[0].Qtype {
	case dns.TypeAXFR:
		return transferAXFR, true
	case dns.TypeIXFR:
		return transferIXFR, true
	}
	return "", false
}

// transferChunk is the size of records past which a transfer message ends.
const transferChunk = 16 << 10

// transfer builds the reply messages to an AXFR or IXFR request (see the
// list at the top of this file).
func (s *server) transfer(r *dns.Msg, client netip.Addr, udp bool) []*dns.Msg {
	q := r.Question[0]
	origin := lowerASCII(dns.Fqdn(q.Name))
	typ, _ := transferType(r)
	fail := func(rcode int) []*dns.Msg {
		if rcode == dns.RcodeFormatError || rcode == dns.RcodeServerFailure {
			s.met.transfer(typ, resultFailed)
		} else {
			s.met.transfer(typ, resultRefused)
		}
		m := new(dns.Msg)
		m.SetRcode(r, rcode)
		m.Extra = nil
		return []*dns.Msg{m}
	}
	if !s.transferAllowed(client) {
		s.log.Debug("transfer refused: client outside --transfer-allow", "client", client, "zone", origin)
		return fail(dns.RcodeRefused)
	}
	if s.xfrKey != nil && r.IsTsig() == nil {
		s.log.Debug("transfer refused: not signed with the TSIG key", "client", client, "zone", origin)
		return fail(dns.RcodeNotAuth)
	}
	if q.Qclass != dns.ClassINET {
		return fail(dns.RcodeNotAuth)
	}
	cur := s.journal.current(origin)
	if cur == nil {
		if origin == s.origin && !s.synced.Load() {
			return fail(dns.RcodeServerFailure)
		}
		return fail(dns.RcodeNotAuth)
	}
	if q.Qtype == dns.TypeAXFR {
		if udp {
			return fail(dns.RcodeNotImplemented)
		}
		s.met.transfer(typ, resultOK)
		return transferMessages(r, axfrRecords(cur))
	}
	// IXFR: the client's version is the SOA in the authority section.
	var have *dns.SOA
	if len(r.Ns) == 1 {
		have, _ = r.Ns[0].(*dns.SOA)
	}
	if have == nil || !strings.EqualFold(dns.Fqdn(have.Hdr.Name), origin) {
		return fail(dns.RcodeFormatError)
	}
	cur, changes, ok := s.journal.since(origin, have.Serial)
	if cur == nil {
		return fail(dns.RcodeNotAuth) // the zone went away meanwhile
	}
	s.met.transfer(typ, resultOK)
	var rrs []dns.RR
	switch {
	case !serialNewer(cur.soa.Serial, have.Serial):
		rrs = []dns.RR{cur.soa} // up to date (RFC 1995 §2)
	case ok:
		rrs = ixfrRecords(cur, changes)
		if len(rrs) > len(cur.rrs)+2 {
			rrs = axfrRecords(cur) // the changes outweigh the zone
		}
	default:
		rrs = axfrRecords(cur) // the journal does not reach back
	}
	msgs := transferMessages(r, rrs)
	limit := udpLimit(r)
	if rt := r.IsTsig(); rt != nil {
		limit -= dns.Len(rt) // the reply's TSIG: the same key and algorithm
	}
	if udp && (len(msgs) > 1 || msgs[0].Len() > limit) {
		msgs = transferMessages(r, []dns.RR{cur.soa})
	}
	return msgs
}

// udpLimit is the reply size a UDP client takes: its EDNS buffer (at most
// ours), or 512 bytes.
func udpLimit(r *dns.Msg) int {
	if opt := r.IsEdns0(); opt != nil {
		return min(max(int(opt.UDPSize()), minUDPSize), advertisedUDPSize)
	}
	return minUDPSize
}

// axfrRecords is the zone in AXFR form: SOA, every record, SOA (RFC 5936
// §2.2).
func axfrRecords(v *zoneVersion) []dns.RR {
	out := make([]dns.RR, 0, len(v.rrs)+2)
	out = append(out, v.soa)
	out = append(out, v.rrs...)
	return append(out, v.soa)
}

// ixfrRecords is the IXFR form of changes (RFC 1995 §4): the current SOA,
// then per change the old SOA, the deleted records, the new SOA and the
// added records, and the current SOA again.
func ixfrRecords(cur *zoneVersion, changes []zoneChange) []dns.RR {
	n := 2
	for _, ch := range changes {
		n += 2 + len(ch.del) + len(ch.add)
	}
	out := make([]dns.RR, 0, n)
	out = append(out, cur.soa)
	for _, ch := range changes {
		out = append(out, ch.from)
		out = append(out, ch.del...)
		out = append(out, ch.to)
		out = append(out, ch.add...)
	}
	return append(out, cur.soa)
}

// transferMessages splits rrs into reply messages to r, each with the
// question, AA set, and records of at most about transferChunk bytes.
func transferMessages(r *dns.Msg, rrs []dns.RR) []*dns.Msg {
	var msgs []*dns.Msg
	var m *dns.Msg
	size := 0
	for _, rr := range rrs {
		l := dns.Len(rr)
		if m == nil || size+l > transferChunk && len(m.Answer) > 0 {
			m = new(dns.Msg)
			m.SetReply(r)
			m.Authoritative = true
			m.Compress = true
			m.Ns, m.Extra = nil, nil
			msgs = append(msgs, m)
			size = 0
		}
		m.Answer = append(m.Answer, rr)
		size += l
	}
	return msgs
}
