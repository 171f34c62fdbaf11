package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// server is the DNS handler and the zone data behind it.
type server struct {
	log        *slog.Logger
	origin     string // service zone, lower case
	nsName     string // the service zone's name server (NS, SOA MNAME)
	advertise  []netip.Addr
	serviceTTL uint32

	reloadMu  sync.Mutex    // one zone-file reload at a time; guards looked
	looked    []zoneWatch   // per zone file: what the last look saw
	mu        sync.Mutex    // guards the inputs below and rebuilds
	static    []*staticZone // the zone files as served, in flag order
	instances []*registryv1.Instance
	svcIndex  uint64
	recIndex  uint64 // the registry index of managed
	managed   []*registryv1.Record
	svcSynced bool        // a service snapshot has arrived (under mu)
	synced    atomic.Bool // a service snapshot has arrived and is served

	journal  *journal  // zone versions, serials, IXFR changes; nil: transfers off
	notifier *notifier // nil: no --notify
	xfrAllow []netip.Prefix
	xfrKey   *tsigKey // nil: no TSIG

	auth  atomic.Pointer[authority]
	cache *cache
	fwd   *forwarder // nil: no forwarding
	allow []netip.Prefix
	rrl   *limiter // nil: no rate limiting

	flightMu sync.Mutex
	flights  map[cacheKey]*flight // upstream exchanges in progress
	ctx      context.Context
	bufs     sync.Pool

	met *metrics
	// mismatched exports the forwarder's count of dropped upstream replies.
	mismatched prometheus.CounterFunc
}

func newServer(ctx context.Context, log *slog.Logger, cfg *Config, static []*staticZone, allow []netip.Prefix, advertise []netip.Addr) *server {
	origin := lowerASCII(dns.Fqdn(cfg.Zone))
	nsName := "ns." + origin
	if cfg.NSName != "" {
		nsName = lowerASCII(dns.Fqdn(cfg.NSName))
	}
	s := &server{
		log:        log,
		origin:     origin,
		nsName:     nsName,
		advertise:  advertise,
		serviceTTL: uint32(cfg.ServiceTTL / time.Second),
		static:     static,
		looked:     make([]zoneWatch, len(static)),
		cache:      newCache(cfg.CacheSize),
		allow:      allow,
		ctx:        ctx,
		flights:    map[cacheKey]*flight{},
	}
	if len(cfg.Upstreams) > 0 {
		s.fwd = newForwarder(cfg.Upstreams, cfg.UpstreamTimeout, cfg.UpstreamRandomizeCase)
	}
	if cfg.RRLRate > 0 {
		s.rrl = newLimiter(cfg.RRLRate, cfg.RRLExemptLoopback)
	}
	s.bufs.New = func() any { b := make([]byte, 0, 4096); return &b }
	s.met = newMetrics()
	s.mismatched = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "switchboard_resolver_forward_mismatched_total",
		Help: "Upstream replies dropped because they did not answer the query sent (ID, QR, opcode or question differ, or malformed): forged or stray.",
	}, func() float64 {
		if s.fwd == nil {
			return 0
		}
		return float64(s.fwd.mismatched.Load())
	})
	return s
}

// rebuildLocked recomputes the authority snapshot from zone files, managed
// records and service instances, and swaps it in; on an error the old
// snapshot stays. Callers hold s.mu.
func (s *server) rebuildLocked() error {
	b := newAuthorityBuilder()
	files := make([]*zone, len(s.static))
	for i, z := range s.static {
		files[i] = b.addZone(z.soa, "zonefile:"+z.src.path)
	}
	// The service zone's serial is the registry's index (persisted by
	// the registry, so it does not go back when the resolver restarts);
	// the journal moves it on when the zone changes without the index.
	svc := b.addZone(serviceSOA(s.origin, s.nsName, uint32(max(s.svcIndex, s.recIndex)), s.serviceTTL), "service")
	for i, z := range s.static {
		for j, rr := range z.rrs {
			err := b.add(sourced{rr: rr, source: "zonefile:" + z.src.path}, files[i])
			if errors.Is(err, errOccluded) {
				continue // a zone we also serve answers for the name
			}
			if err != nil {
				return fmt.Errorf("zone file %s: line %d: %w", z.src.path, z.lines[j], err)
			}
		}
	}
	for _, rec := range s.managed {
		rr, err := recordRR(rec)
		if err == nil {
			err = b.add(sourced{rr: rr, source: "managed"}, nil)
		}
		if err != nil {
			s.log.Warn("skipping managed record", "name", rec.GetName(), "type", rec.GetType(), "err", err)
		}
	}
	for _, rr := range serviceRecords(s.origin, s.serviceTTL, s.instances) {
		if err := b.add(rr, nil); err != nil {
			s.log.Warn("skipping service record", "record", rr.rr.String(), "err", err)
		}
	}
	if !b.hasNS(svc) {
		// The zone's own name server, unless zone data names others.
		addrs := s.advertise
		if n := b.nodes[s.nsName]; n != nil && (n.set(dns.TypeA) != nil || n.set(dns.TypeAAAA) != nil) {
			addrs = nil // zone data gives its addresses
		}
		for _, rr := range serviceNS(s.origin, s.nsName, addrs, s.serviceTTL) {
			if err := b.add(rr, nil); err != nil {
				s.log.Warn("skipping the service zone's name server record", "record", rr.rr.String(), "err", err)
			}
		}
	}
	var unversioned *zone
	if !s.svcSynced && svc.source == "service" {
		unversioned = svc // no serial to give it before the registry's snapshot
	}
	plan := s.journal.plan(b, unversioned)
	a, err := b.build()
	if err != nil {
		return err
	}
	s.auth.Store(a)
	s.notifier.changed(s.journal.commit(plan))
	return nil
}

// setInstances replaces the service snapshot.
func (s *server) setInstances(index uint64, ins []*registryv1.Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.instances, s.svcIndex, s.svcSynced = ins, index, true
	if err := s.rebuildLocked(); err != nil {
		s.log.Error("rebuilding zones", "err", err)
	}
	s.synced.Store(true)
}

// setManaged replaces the managed record set, at the registry's index.
func (s *server) setManaged(index uint64, recs []*registryv1.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.managed, s.recIndex = recs, index
	if err := s.rebuildLocked(); err != nil {
		s.log.Error("rebuilding zones", "err", err)
	}
}

// recordRR parses a registry record into a resource record.
func recordRR(rec *registryv1.Record) (dns.RR, error) {
	t, ok := dns.StringToType[rec.GetType()]
	if !ok {
		return nil, fmt.Errorf("type: unknown DNS type %q", rec.GetType())
	}
	rr, err := dns.NewRR(fmt.Sprintf("%s %d IN %s %s", dns.Fqdn(rec.GetName()), rec.GetTtl(), dns.TypeToString[t], rec.GetData()))
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	if rr == nil {
		return nil, fmt.Errorf("data: empty record")
	}
	return rr, nil
}

// acceptQuery rejects, from the header alone, what is not a plain query:
// responses are ignored, other opcodes get NOTIMP, and anything but one
// question (or records in the answer or authority sections) FORMERR.
func acceptQuery(h dns.Header) dns.MsgAcceptAction {
	if h.Bits&(1<<15) != 0 {
		return dns.MsgIgnore
	}
	if opcode := int(h.Bits>>11) & 0xF; opcode != dns.OpcodeQuery {
		return dns.MsgRejectNotImplemented
	}
	// One record in the authority section: the client's SOA of an IXFR.
	if h.Qdcount != 1 || h.Ancount != 0 || h.Nscount > 1 || h.Arcount > 2 {
		return dns.MsgReject
	}
	return dns.MsgAccept
}

// clientOf returns the client address and whether it came over UDP.
func clientOf(a net.Addr) (netip.Addr, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), true
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), false
	}
	return netip.Addr{}, false
}

func (s *server) recursionAllowed(client netip.Addr) bool {
	if s.fwd == nil {
		return false
	}
	for _, p := range s.allow {
		if p.Contains(client) {
			return true
		}
	}
	return false
}

// ServeDNS answers one query (TCP; UDP goes through udpServer).
func (s *server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	start := time.Now()
	client, udp := clientOf(w.RemoteAddr())
	proto := protoTCP
	if udp {
		proto = protoUDP
	}
	if s.serveSpecial(w, r, client, udp) {
		return
	}
	slip := false
	if s.rrl != nil && udp {
		switch s.rrl.check(client, start) {
		case rrlDrop:
			s.met.rrlDrop.Inc()
			return
		case rrlSlip:
			s.met.rrlSlip.Inc()
			slip = true
		}
	}
	bp := s.bufs.Get().(*[]byte)
	out, _, err := s.respond(*bp, r, client, udp, slip)
	var qtype uint16
	if len(r.Question) > 0 {
		qtype = r.Question[0].Qtype
	}
	if err != nil {
		s.log.Debug("answering", "err", err)
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		_ = w.WriteMsg(m)
		s.met.shared().count(proto, qtype, dns.RcodeServerFailure)
	} else {
		_, _ = w.Write(out)
		s.met.shared().count(proto, qtype, replyRcode(out))
	}
	s.met.latency[proto].observe(time.Since(start), 1)
	if cap(out) <= 64<<10 {
		*bp = out[:0]
		s.bufs.Put(bp)
	}
}

// respond builds the response to r into dst. cached reports an answer
// from the forwarding cache.
func (s *server) respond(dst []byte, r *dns.Msg, client netip.Addr, udp, slip bool) (out []byte, cached bool, err error) {
	rep := reply{id: r.Id, rd: r.RecursionDesired, maxSize: dns.MaxMsgSize}
	if udp {
		rep.maxSize = minUDPSize
	}
	nOpt := 0
	for _, rr := range r.Extra {
		opt, ok := rr.(*dns.OPT)
		if !ok {
			continue
		}
		nOpt++
		if opt.Version() != 0 {
			return s.badVersion(dst, r)
		}
		rep.edns, rep.do = true, opt.Do()
		if udp {
			rep.maxSize = min(max(int(opt.UDPSize()), minUDPSize), advertisedUDPSize)
		}
	}
	if slip {
		rep.maxSize = 0
	}
	if len(r.Question) != 1 || nOpt > 1 || len(r.Ns) > 0 {
		return s.rcodeReply(dst, r, &rep, dns.RcodeFormatError)
	}
	q := r.Question[0]
	rep.qname, rep.qtype, rep.qclass = q.Name, q.Qtype, q.Qclass
	rep.ra = s.recursionAllowed(client)
	switch {
	case q.Qtype == dns.TypeOPT:
		return s.rcodeReply(dst, r, &rep, dns.RcodeFormatError)
	case q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY,
		q.Qtype == dns.TypeAXFR, q.Qtype == dns.TypeIXFR:
		return s.rcodeReply(dst, r, &rep, dns.RcodeRefused)
	}
	name := lowerASCII(q.Name)
	a := s.auth.Load()
	if a.zoneOf(name) != nil {
		// Our zones: the precomputed answer of the name's node, or lookup
		// (names that do not exist, wildcards, CNAMEs of other types).
		var p *prepared
		if n := a.nodes[name]; n != nil {
			p = n.answer(q.Qtype)
		}
		if p == nil {
			if p, err = a.synthesized(name, q.Qtype); err != nil {
				return dst, false, err
			}
		}
		out, err = p.appendTo(dst, &rep)
		return out, false, err
	}
	if !rep.ra || !r.RecursionDesired {
		// RD clear: the client asked us not to recurse. As with unbound's
		// default access control ("allow", not "allow_snoop"), such a
		// query is neither forwarded nor answered from the cache (which
		// would tell anyone what our clients looked up): REFUSED, with RA
		// still saying whether this client may ask recursively.
		return s.rcodeReply(dst, r, &rep, dns.RcodeRefused)
	}
	now := time.Now()
	if p, elapsed := s.cache.get(name, q.Qtype, now); p != nil {
		rep.elapsed = elapsed
		out, err = p.appendTo(dst, &rep)
		return out, true, err
	}
	s.cache.miss()
	p, err := s.forward(name, q.Qtype, now)
	if err != nil {
		s.log.Debug("forwarding", "name", name, "err", err)
		return s.rcodeReply(dst, r, &rep, dns.RcodeServerFailure)
	}
	out, err = p.appendTo(dst, &rep)
	return out, false, err
}

// flight is one upstream exchange that concurrent misses of the same name
// and type wait for, instead of each asking the upstream.
type flight struct {
	done chan struct{}
	p    *prepared
	err  error
}

// forward resolves (name, qtype) upstream, once for all concurrent askers,
// and caches the reply.
func (s *server) forward(name string, qtype uint16, now time.Time) (*prepared, error) {
	k := cacheKey{name, qtype}
	s.flightMu.Lock()
	if f := s.flights[k]; f != nil {
		s.flightMu.Unlock()
		<-f.done
		return f.p, f.err
	}
	f := &flight{done: make(chan struct{})}
	s.flights[k] = f
	s.flightMu.Unlock()
	defer func() {
		s.flightMu.Lock()
		delete(s.flights, k)
		s.flightMu.Unlock()
		close(f.done)
	}()
	s.met.forwarded.Inc()
	resp, err := s.fwd.exchange(s.ctx, name, qtype)
	if err != nil {
		s.met.fwdErrors.Inc()
		f.err = err
		return nil, err
	}
	ttl, negative, cacheable := cacheTTL(resp)
	if negative && cacheable {
		// RFC 2308 5: the SOA of a negative answer carries the negative TTL.
		for _, rr := range resp.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				soa.Hdr.Ttl = ttl
			}
		}
	}
	f.p, f.err = prepare(resp, false)
	if f.err != nil {
		return nil, f.err
	}
	if cacheable {
		s.cache.put(name, qtype, f.p, ttl, negative, now)
	}
	return f.p, nil
}

// rcodeReply is an empty, non-authoritative reply with rcode.
func (s *server) rcodeReply(dst []byte, r *dns.Msg, rep *reply, rcode int) ([]byte, bool, error) {
	m := new(dns.Msg)
	m.SetRcode(r, rcode)
	m.Extra = nil
	if len(m.Question) > 1 {
		m.Question = m.Question[:1]
	}
	p, err := prepare(m, false)
	if err != nil {
		return dst, false, err
	}
	rep.qname, rep.qtype, rep.qclass = "", 0, 0
	if len(m.Question) == 1 {
		rep.qname, rep.qtype, rep.qclass = m.Question[0].Name, m.Question[0].Qtype, m.Question[0].Qclass
	}
	out, err := p.appendTo(dst, rep)
	return out, false, err
}

// badVersion answers a query with an EDNS version we do not speak
// (RFC 6891 6.1.3): BADVERS, with our OPT at version 0.
func (s *server) badVersion(dst []byte, r *dns.Msg) ([]byte, bool, error) {
	m := new(dns.Msg)
	m.SetRcode(r, dns.RcodeBadVers)
	m.Extra = nil
	m.SetEdns0(advertisedUDPSize, false)
	m.Rcode = dns.RcodeBadVers
	out, err := m.PackBuffer(dst)
	return out, false, err
}
