package prober

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	"github.com/switchboard-net/switchboard/services/prober/allow"
	"github.com/switchboard-net/switchboard/services/prober/bandwidth"
	"github.com/switchboard-net/switchboard/services/prober/check"
	"github.com/switchboard-net/switchboard/services/prober/discovery"
	"github.com/switchboard-net/switchboard/services/prober/netstat"
	"github.com/switchboard-net/switchboard/services/prober/ping"
	"github.com/switchboard-net/switchboard/services/prober/scan"
)

// Bounds on job specs; a spec outside them is InvalidArgument.
const (
	maxPingCount   = 1000
	minPingEvery   = 10 * time.Millisecond
	maxTimeout     = 60 * time.Second
	maxHops        = 64
	maxProbes      = 10
	maxConcurrency = 1024
	maxScanTimeout = 10 * time.Second
	maxPeersWait   = 10 * time.Second
)

// fieldError is a bad spec field; it maps to InvalidArgument.
type fieldError struct{ field, msg string }

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

func bad(field, format string, a ...any) error {
	return &fieldError{field: field, msg: fmt.Sprintf(format, a...)}
}

// emitFunc receives progress; it may be nil.
type emitFunc func(*proberv1.Progress)

// job is a validated, allowlisted job ready to run.
type job struct {
	kind string
	run  func(ctx context.Context, emit emitFunc, res *proberv1.JobResult) error
}

// runner prepares and runs jobs.
type runner struct {
	cfg           *Config
	allow         *allow.List
	met           *metrics
	sem           chan struct{}
	log           *slog.Logger
	disc          *discovery.Node
	bandwidthAddr string
	resolver      allow.Resolver // nil: the system resolver
}

// kindOf names a spec's kind ("" when unset).
func kindOf(s *proberv1.JobSpec) string {
	switch s.GetKind().(type) {
	case *proberv1.JobSpec_Ping:
		return "ping"
	case *proberv1.JobSpec_Traceroute:
		return "traceroute"
	case *proberv1.JobSpec_Scan:
		return "scan"
	case *proberv1.JobSpec_Check:
		return "check"
	case *proberv1.JobSpec_Bandwidth:
		return "bandwidth"
	case *proberv1.JobSpec_Connections:
		return "connections"
	case *proberv1.JobSpec_Interfaces:
		return "interfaces"
	case *proberv1.JobSpec_Peers:
		return "peers"
	}
	return ""
}

func dur(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}

func checkDur(field string, d *durationpb.Duration, lo, hi time.Duration) error {
	if d == nil {
		return nil
	}
	if err := d.CheckValid(); err != nil {
		return bad(field, "%v", err)
	}
	if v := d.AsDuration(); v < lo || v > hi {
		return bad(field, "must be %v-%v, got %v", lo, hi, v)
	}
	return nil
}

// prepare validates spec (field errors name "spec.<kind>.<field>") and
// checks its target against the allowlist, resolving names; nothing is
// sent to the target. Denials wrap allow.ErrDenied.
func (r *runner) prepare(ctx context.Context, s *proberv1.JobSpec, field string) (*job, error) {
	if s == nil {
		return nil, bad(field, "required")
	}
	kind := kindOf(s)
	if kind == "" {
		return nil, bad(field, "one of ping, traceroute, scan, check, bandwidth, connections, interfaces, peers is required")
	}
	f := field + "." + kind
	j := &job{kind: kind}
	switch k := s.GetKind().(type) {
	case *proberv1.JobSpec_Ping:
		p := k.Ping
		if p.GetCount() > maxPingCount {
			return nil, bad(f+".count", "at most %d", maxPingCount)
		}
		if err := checkDur(f+".interval", p.GetInterval(), minPingEvery, maxTimeout); err != nil {
			return nil, err
		}
		if err := checkDur(f+".timeout", p.GetTimeout(), time.Millisecond, maxTimeout); err != nil {
			return nil, err
		}
		if p.GetSize() != 0 && (p.GetSize() < 16 || p.GetSize() > ping.MaxSize) {
			return nil, bad(f+".size", "must be 16-%d", ping.MaxSize)
		}
		addr, err := r.target(ctx, f+".target", p.GetTarget(), p.GetIpv6())
		if err != nil {
			return nil, err
		}
		j.run = func(ctx context.Context, emit emitFunc, res *proberv1.JobResult) error {
			pr, err := ping.Ping(ctx, addr, ping.Options{
				Count: int(p.GetCount()), Interval: dur(p.GetInterval(), 0), Timeout: dur(p.GetTimeout(), 0), Size: int(p.GetSize()),
				OnReply: func(rep ping.Reply) {
					if emit != nil {
						emit(&proberv1.Progress{PingReply: pingReply(rep)})
					}
				},
			})
			if err != nil {
				return err
			}
			out := &proberv1.PingResult{Address: addr.String(), Sent: uint32(pr.Sent), Received: uint32(pr.Received),
				LossPercent: pr.Loss(), Min: durationpb.New(pr.Min), Avg: durationpb.New(pr.Avg), Max: durationpb.New(pr.Max), Mdev: durationpb.New(pr.Mdev)}
			for _, rep := range pr.Replies {
				out.Replies = append(out.Replies, pingReply(rep))
			}
			res.Result = &proberv1.JobResult_Ping{Ping: out}
			if pr.Received == 0 {
				return fmt.Errorf("no replies from %s", addr)
			}
			return nil
		}
	case *proberv1.JobSpec_Traceroute:
		tr := k.Traceroute
		if tr.GetMaxHops() > maxHops {
			return nil, bad(f+".max_hops", "at most %d", maxHops)
		}
		if tr.GetProbes() > maxProbes {
			return nil, bad(f+".probes", "at most %d", maxProbes)
		}
		if err := checkDur(f+".timeout", tr.GetTimeout(), time.Millisecond, 10*time.Second); err != nil {
			return nil, err
		}
		addr, err := r.target(ctx, f+".target", tr.GetTarget(), false)
		if err != nil {
			return nil, err
		}
		j.run = func(ctx context.Context, emit emitFunc, res *proberv1.JobResult) error {
			hops, reached, err := ping.Trace(ctx, addr, ping.TraceOptions{MaxHops: int(tr.GetMaxHops()), Probes: int(tr.GetProbes()),
				Timeout: dur(tr.GetTimeout(), 0), OnHop: func(h ping.Hop) {
					if emit != nil {
						emit(&proberv1.Progress{Hop: hopOf(h)})
					}
				}})
			if err != nil {
				return err
			}
			out := &proberv1.TracerouteResult{Address: addr.String(), Reached: reached}
			for _, h := range hops {
				out.Hops = append(out.Hops, hopOf(h))
			}
			res.Result = &proberv1.JobResult_Traceroute{Traceroute: out}
			if !reached {
				return fmt.Errorf("%s not reached within %d hops", addr, len(hops))
			}
			return nil
		}
	case *proberv1.JobSpec_Scan:
		sc := k.Scan
		spec := sc.GetPorts()
		if spec == "" {
			spec = "1-1024"
		}
		ports, err := scan.ParsePorts(spec)
		if err != nil {
			return nil, bad(f+".ports", "%v", err)
		}
		if len(ports) > r.cfg.ScanMaxPorts {
			return nil, bad(f+".ports", "%d ports; at most %d per scan", len(ports), r.cfg.ScanMaxPorts)
		}
		if sc.GetConcurrency() > maxConcurrency {
			return nil, bad(f+".concurrency", "at most %d", maxConcurrency)
		}
		if err := checkDur(f+".timeout", sc.GetTimeout(), time.Millisecond, maxScanTimeout); err != nil {
			return nil, err
		}
		addr, err := r.target(ctx, f+".target", sc.GetTarget(), false)
		if err != nil {
			return nil, err
		}
		j.run = func(ctx context.Context, emit emitFunc, res *proberv1.JobResult) error {
			sr, err := scan.Scan(ctx, addr, ports, scan.Options{Concurrency: int(sc.GetConcurrency()), Timeout: dur(sc.GetTimeout(), 0),
				Rate: r.cfg.ScanRate, OnPort: func(p uint16, st scan.State, done, total int) {
					if emit == nil {
						return
					}
					if st == scan.Open {
						emit(&proberv1.Progress{Port: &proberv1.PortResult{Port: uint32(p), State: proberv1.PortState_PORT_STATE_OPEN}})
					} else {
						emit(&proberv1.Progress{Message: fmt.Sprintf("%d/%d ports", done, total), Fraction: float64(done) / float64(total)})
					}
				}})
			if err != nil {
				return err
			}
			out := &proberv1.ScanResult{Address: addr.String(), Scanned: uint32(len(ports)), Open: uint32(sr.Open), Closed: uint32(sr.Closed), Filtered: uint32(sr.Filtered)}
			listFiltered := sr.Filtered <= 100
			for i, st := range sr.States {
				if st == scan.Open || (st == scan.Filtered && listFiltered) {
					out.Ports = append(out.Ports, &proberv1.PortResult{Port: uint32(ports[i]), State: portState(st)})
				}
			}
			res.Result = &proberv1.JobResult_Scan{Scan: out}
			return nil
		}
	case *proberv1.JobSpec_Check:
		cs, err := r.checkSpec(ctx, k.Check, f)
		if err != nil {
			return nil, err
		}
		j.run = func(ctx context.Context, _ emitFunc, res *proberv1.JobResult) error {
			cr := check.Run(ctx, cs, r.allow.DialContext(&net.Dialer{}))
			out := &proberv1.CheckResult{Ok: cr.OK, Detail: cr.Detail, Duration: durationpb.New(cr.Duration), StatusCode: uint32(cr.StatusCode)}
			if !cr.CertExpiry.IsZero() {
				out.CertExpiry = timestamppb.New(cr.CertExpiry)
			}
			res.Result = &proberv1.JobResult_Check{Check: out}
			if !cr.OK {
				return errors.New(cr.Detail)
			}
			return nil
		}
	case *proberv1.JobSpec_Bandwidth:
		bw := k.Bandwidth
		proto := bw.GetProtocol()
		if proto == "" {
			proto = "tcp"
		}
		if proto != "tcp" && proto != "udp" {
			return nil, bad(f+".protocol", "want tcp or udp")
		}
		if err := checkDur(f+".duration", bw.GetDuration(), 100*time.Millisecond, bandwidth.MaxDuration); err != nil {
			return nil, err
		}
		if bw.GetRateBps() > bandwidth.MaxRate {
			return nil, bad(f+".rate_bps", "at most %d", uint64(bandwidth.MaxRate))
		}
		if n := bw.GetPacketSize(); n != 0 && (n < bandwidth.MinPacket || n > bandwidth.MaxPacket) {
			return nil, bad(f+".packet_size", "must be %d-%d", bandwidth.MinPacket, bandwidth.MaxPacket)
		}
		peer := bw.GetPeer()
		if peer == "" {
			// No peer named: the first prober discovery has heard.
			if r.disc == nil {
				return nil, bad(f+".peer", "required (peer discovery is off)")
			}
			for _, p := range r.disc.Peers() {
				if p.BandwidthAddr != "" {
					peer = p.BandwidthAddr
					break
				}
			}
			if peer == "" {
				return nil, bad(f+".peer", "required (no prober discovered yet)")
			}
		}
		host, _, err := net.SplitHostPort(peer)
		if err != nil {
			return nil, bad(f+".peer", "want host:port: %v", err)
		}
		if _, err := r.resolve(ctx, f+".peer", host, "ip"); err != nil {
			return nil, err
		}
		j.run = func(ctx context.Context, emit emitFunc, res *proberv1.JobResult) error {
			br, err := bandwidth.Run(ctx, r.allow.DialContext(&net.Dialer{}), peer, bandwidth.Options{
				Protocol: proto, Duration: dur(bw.GetDuration(), 0), Reverse: bw.GetReverse(), Rate: bw.GetRateBps(), PacketSize: int(bw.GetPacketSize()),
				OnProgress: func(m string) {
					if emit != nil {
						emit(&proberv1.Progress{Message: m})
					}
				}})
			if err != nil {
				return err
			}
			res.Result = &proberv1.JobResult_Bandwidth{Bandwidth: &proberv1.BandwidthResult{
				Bytes: br.Bytes, Duration: durationpb.New(br.Duration), BitsPerSecond: br.BitsPerSecond,
				PacketsSent: br.PacketsSent, PacketsLost: br.PacketsLost, PacketsReordered: br.Reordered,
				Jitter: durationpb.New(br.Jitter), LossPercent: br.LossPercent}}
			return nil
		}
	case *proberv1.JobSpec_Connections:
		c := k.Connections
		for i, p := range c.GetProtocols() {
			switch p {
			case "tcp", "tcp6", "udp", "udp6":
			default:
				return nil, bad(fmt.Sprintf("%s.protocols[%d]", f, i), "want tcp, tcp6, udp or udp6")
			}
		}
		j.run = func(_ context.Context, _ emitFunc, res *proberv1.JobResult) error {
			socks, err := netstat.Sockets(r.cfg.ProcRoot, c.GetProtocols()...)
			if err != nil {
				return err
			}
			out := &proberv1.ConnectionsResult{}
			for _, s := range socks {
				if c.GetState() != "" && !strings.EqualFold(s.State, c.GetState()) {
					continue
				}
				out.Connections = append(out.Connections, &proberv1.Connection{Protocol: s.Protocol, Local: s.Local.String(),
					Remote: s.Remote.String(), State: s.State, Uid: s.UID, Inode: s.Inode})
			}
			res.Result = &proberv1.JobResult_Connections{Connections: out}
			return nil
		}
	case *proberv1.JobSpec_Interfaces:
		j.run = func(_ context.Context, _ emitFunc, res *proberv1.JobResult) error {
			ifs, err := netstat.Interfaces(r.cfg.ProcRoot)
			if err != nil {
				return err
			}
			out := &proberv1.InterfacesResult{}
			for _, i := range ifs {
				out.Interfaces = append(out.Interfaces, &proberv1.Interface{Name: i.Name, RxBytes: i.RxBytes, RxPackets: i.RxPackets,
					RxErrors: i.RxErrors, RxDropped: i.RxDropped, TxBytes: i.TxBytes, TxPackets: i.TxPackets, TxErrors: i.TxErrors, TxDropped: i.TxDropped})
			}
			res.Result = &proberv1.JobResult_Interfaces{Interfaces: out}
			return nil
		}
	case *proberv1.JobSpec_Peers:
		if err := checkDur(f+".wait", k.Peers.GetWait(), 0, maxPeersWait); err != nil {
			return nil, err
		}
		if k.Peers.GetRttCount() > 20 {
			return nil, bad(f+".rtt_count", "at most 20")
		}
		if r.disc == nil {
			return nil, &preconditionError{"peer discovery is off (--discovery is not set, or its socket could not be opened)"}
		}
		wait := dur(k.Peers.GetWait(), time.Second)
		j.run = func(ctx context.Context, emit emitFunc, res *proberv1.JobResult) error {
			peers, err := r.disc.Query(ctx, wait)
			if err != nil {
				return err
			}
			r.notePeers(peers)
			out := &proberv1.PeersResult{}
			for _, p := range peers {
				pp := &proberv1.Peer{Name: p.Name, GrpcAddr: p.GRPCAddr, BandwidthAddr: p.BandwidthAddr,
					LastSeen: timestamppb.New(p.LastSeen), Address: p.Addr.String()}
				if k.Peers.GetMeasureRtt() && r.allow.AllowedAddr(p.Addr) {
					count := int(max(k.Peers.GetRttCount(), 3))
					pr, err := ping.Ping(ctx, p.Addr, ping.Options{Count: count, Interval: 20 * time.Millisecond, Timeout: time.Second})
					if err == nil {
						pp.LossPercent = pr.Loss()
						if pr.Received > 0 {
							pp.Rtt = durationpb.New(pr.Avg)
						}
					}
				}
				if emit != nil {
					emit(&proberv1.Progress{Message: "peer " + p.Name + " at " + p.Addr.String()})
				}
				out.Peers = append(out.Peers, pp)
			}
			res.Result = &proberv1.JobResult_Peers{Peers: out}
			return nil
		}
	}
	return j, nil
}

// preconditionError maps to FailedPrecondition.
type preconditionError struct{ msg string }

func (e *preconditionError) Error() string { return e.msg }

// target validates and resolves a ping/trace/scan target to one address.
func (r *runner) target(ctx context.Context, field, host string, v6 bool) (netip.Addr, error) {
	if host == "" {
		return netip.Addr{}, bad(field, "required")
	}
	network := "ip"
	if v6 {
		network = "ip6"
	}
	addrs, err := r.resolve(ctx, field, host, network)
	if err != nil {
		return netip.Addr{}, err
	}
	if !v6 {
		for _, a := range addrs {
			if a.Is4() {
				return a, nil // prefer IPv4 unless asked, like ping
			}
		}
	}
	return addrs[0], nil
}

func (r *runner) resolve(ctx context.Context, field, host, network string) ([]netip.Addr, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := r.allow.Resolve(rctx, r.resolver, network, host)
	if err != nil {
		if errors.Is(err, allow.ErrDenied) {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			return nil, &resolveError{field: field, err: err}
		}
		return nil, bad(field, "%v", err)
	}
	return addrs, nil
}

// resolveError is a target that does not resolve: the job fails (it is
// not bad input, and may resolve later).
type resolveError struct {
	field string
	err   error
}

func (e *resolveError) Error() string { return e.field + ": " + e.err.Error() }
func (e *resolveError) Unwrap() error { return e.err }

// checkSpec validates a check and checks its target.
func (r *runner) checkSpec(ctx context.Context, c *proberv1.CheckSpec, f string) (check.Spec, error) {
	s := check.Spec{Kind: strings.ToLower(c.GetKind()), Target: c.GetTarget(), Timeout: dur(c.GetTimeout(), 0),
		ExpectStatus: int(c.GetExpectStatus()), GRPCService: c.GetGrpcService(), DNSName: c.GetDnsName(),
		InsecureSkipVerify: c.GetInsecureSkipVerify()}
	if err := checkDur(f+".timeout", c.GetTimeout(), time.Millisecond, maxTimeout); err != nil {
		return s, err
	}
	if c.GetTarget() == "" {
		return s, bad(f+".target", "required")
	}
	var host string
	switch s.Kind {
	case check.HTTP, check.HTTPS:
		u, err := url.Parse(c.GetTarget())
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return s, bad(f+".target", "want an http:// or https:// URL")
		}
		if u.Scheme != s.Kind {
			return s, bad(f+".target", "scheme %s does not match kind %s", u.Scheme, s.Kind)
		}
		host = u.Hostname()
		if c.GetExpectStatus() != 0 && (c.GetExpectStatus() < 100 || c.GetExpectStatus() > 599) {
			return s, bad(f+".expect_status", "must be 100-599")
		}
		if c.GetExpectBody() != "" {
			re, err := regexp.Compile(c.GetExpectBody())
			if err != nil {
				return s, bad(f+".expect_body", "%v", err)
			}
			s.ExpectBody = re
		}
	case check.TCP, check.GRPC, check.DNS:
		h, p, err := net.SplitHostPort(c.GetTarget())
		if err != nil || p == "" {
			return s, bad(f+".target", "want host:port")
		}
		host = h
		if s.Kind == check.DNS {
			if c.GetDnsName() == "" {
				return s, bad(f+".dns_name", "required for a dns check")
			}
			t, err := check.ParseDNSType(c.GetDnsType())
			if err != nil {
				return s, bad(f+".dns_type", "%v", err)
			}
			s.DNSType = t
		}
	default:
		return s, bad(f+".kind", "want http, https, tcp, grpc or dns")
	}
	if _, err := r.resolve(ctx, f+".target", host, "ip"); err != nil {
		return s, err
	}
	return s, nil
}

// execute runs a prepared job under the running bound and records metrics.
func (r *runner) execute(ctx context.Context, j *job, jobID string, emit emitFunc) *proberv1.JobResult {
	res := &proberv1.JobResult{JobId: jobID}
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		res.StartedAt = timestamppb.Now()
		res.Duration = durationpb.New(0)
		res.Error = ctx.Err().Error()
		return res
	}
	defer func() { <-r.sem }()
	start := time.Now()
	res.StartedAt = timestamppb.New(start)
	err := j.run(ctx, emit, res)
	res.Duration = durationpb.New(time.Since(start))
	res.Success = err == nil
	if err != nil {
		res.Error = err.Error()
	}
	r.met.observe(j.kind, jobID, res)
	return res
}

// notePeers puts discovered probers' addresses on the allowlist's peer set.
func (r *runner) notePeers(peers []discovery.Peer) {
	addrs := make([]string, 0, len(peers))
	for _, p := range peers {
		addrs = append(addrs, p.Addr.String())
	}
	r.allow.SetPeers(addrs)
}

// syncPeers keeps the allowlist's discovered-peer set current.
func (r *runner) syncPeers(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		r.notePeers(r.disc.Peers())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func pingReply(r ping.Reply) *proberv1.PingReply {
	out := &proberv1.PingReply{Seq: uint32(r.Seq), Ttl: uint32(r.TTL), Received: r.Received}
	if r.Received {
		out.Rtt = durationpb.New(r.RTT)
		out.From = r.From.String()
	}
	return out
}

func hopOf(h ping.Hop) *proberv1.Hop {
	out := &proberv1.Hop{Ttl: uint32(h.TTL), Reached: h.Reached}
	if h.Addr.IsValid() {
		out.Address = h.Addr.String()
	}
	for _, d := range h.RTTs {
		out.Rtts = append(out.Rtts, durationpb.New(d)) // zero: lost
	}
	return out
}

func portState(s scan.State) proberv1.PortState {
	switch s {
	case scan.Open:
		return proberv1.PortState_PORT_STATE_OPEN
	case scan.Closed:
		return proberv1.PortState_PORT_STATE_CLOSED
	case scan.Filtered:
		return proberv1.PortState_PORT_STATE_FILTERED
	}
	return proberv1.PortState_PORT_STATE_UNSPECIFIED
}

// lockedEmit serialises emit calls from several goroutines.
func lockedEmit(fn emitFunc) emitFunc {
	var mu sync.Mutex
	return func(p *proberv1.Progress) {
		mu.Lock()
		defer mu.Unlock()
		fn(p)
	}
}
