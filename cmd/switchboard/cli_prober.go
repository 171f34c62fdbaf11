package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
)

// probeKinds are the one-off jobs `probe` runs (and `jobs add` schedules).
var probeKinds = []string{"ping", "trace", "scan", "check", "bandwidth"}

func parseDurationFlag(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, errors.New("must not be negative")
	}
	return d, nil
}

// pbDur is a proto duration, nil for zero (the prober's default).
func pbDur(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

// specFlags registers kind's flags on fs and returns the synopsis of its
// arguments, their count, and a builder of the spec from the positional
// arguments (after the kind).
func specFlags(kind string, fs *flag.FlagSet) (string, int, func(args []string) (*proberv1.JobSpec, error), error) {
	switch kind {
	case "ping":
		count := fs.Uint("c", 4, "echo requests to send")
		interval := fs.Duration("i", time.Second, "time between requests")
		timeout := fs.Duration("W", time.Second, "wait for each reply")
		size := fs.Uint("s", 56, "ICMP payload bytes")
		v6 := fs.Bool("6", false, "use IPv6")
		return "ping TARGET [-c COUNT] [-i INTERVAL] [-W TIMEOUT] [-s SIZE] [-6]", 1, func(a []string) (*proberv1.JobSpec, error) {
			return &proberv1.JobSpec{Kind: &proberv1.JobSpec_Ping{Ping: &proberv1.PingSpec{Target: a[0], Count: uint32(*count),
				Interval: pbDur(*interval), Timeout: pbDur(*timeout), Size: uint32(*size), Ipv6: *v6}}}, nil
		}, nil
	case "trace":
		hops := fs.Uint("m", 30, "highest TTL")
		probes := fs.Uint("q", 3, "probes per hop")
		timeout := fs.Duration("W", time.Second, "wait per probe")
		return "trace TARGET [-m MAX_HOPS] [-q PROBES] [-W TIMEOUT]", 1, func(a []string) (*proberv1.JobSpec, error) {
			return &proberv1.JobSpec{Kind: &proberv1.JobSpec_Traceroute{Traceroute: &proberv1.TracerouteSpec{Target: a[0],
				MaxHops: uint32(*hops), Probes: uint32(*probes), Timeout: pbDur(*timeout)}}}, nil
		}, nil
	case "scan":
		ports := fs.String("p", "1-1024", "ports: 22,80,8000-8100")
		conc := fs.Uint("concurrency", 256, "connections in flight at once")
		timeout := fs.Duration("W", time.Second, "per-port connect timeout")
		return "scan TARGET [-p PORTS] [--concurrency N] [-W TIMEOUT]", 1, func(a []string) (*proberv1.JobSpec, error) {
			return &proberv1.JobSpec{Kind: &proberv1.JobSpec_Scan{Scan: &proberv1.ScanSpec{Target: a[0], Ports: *ports,
				Concurrency: uint32(*conc), Timeout: pbDur(*timeout)}}}, nil
		}, nil
	case "check":
		timeout := fs.Duration("W", 2*time.Second, "timeout")
		status := fs.Uint("expect-status", 0, "http: the status to accept (0: any 2xx)")
		body := fs.String("expect-body", "", "http: a regular expression the body must match")
		gsvc := fs.String("grpc-service", "", "grpc: the service name for grpc.health.v1")
		dnsName := fs.String("dns-name", "", "dns: the name to query")
		dnsType := fs.String("dns-type", "A", "dns: the type to query")
		insec := fs.Bool("insecure", false, "https: do not verify the certificate (its expiry is still reported)")
		return "check http|https|tcp|grpc|dns TARGET [flags]   (TARGET: a URL, or host:port)", 2, func(a []string) (*proberv1.JobSpec, error) {
			return &proberv1.JobSpec{Kind: &proberv1.JobSpec_Check{Check: &proberv1.CheckSpec{Kind: a[0], Target: a[1], Timeout: pbDur(*timeout),
				ExpectStatus: uint32(*status), ExpectBody: *body, GrpcService: *gsvc, DnsName: *dnsName, DnsType: *dnsType, InsecureSkipVerify: *insec}}}, nil
		}, nil
	case "bandwidth":
		udp := fs.Bool("u", false, "use UDP (default TCP)")
		dur := fs.Duration("t", 5*time.Second, "how long to send")
		rev := fs.Bool("R", false, "reverse: the peer sends to the prober")
		rate := fs.String("b", "", "UDP target rate in bits/s, with K, M or G (default 100M)")
		size := fs.Uint("l", 0, "UDP datagram size (default 1200)")
		return "bandwidth PEER_HOST:PORT [-u] [-t DURATION] [-R] [-b RATE] [-l SIZE]", 1, func(a []string) (*proberv1.JobSpec, error) {
			p := "tcp"
			if *udp {
				p = "udp"
			}
			bps, err := parseRate(*rate)
			if err != nil {
				return nil, usageError{fmt.Errorf("-b %q: %w", *rate, err)}
			}
			return &proberv1.JobSpec{Kind: &proberv1.JobSpec_Bandwidth{Bandwidth: &proberv1.BandwidthSpec{Peer: a[0], Protocol: p,
				Duration: pbDur(*dur), Reverse: *rev, RateBps: bps, PacketSize: uint32(*size)}}}, nil
		}, nil
	}
	return "", 0, nil, usageError{fmt.Errorf("unknown probe %q: want one of %s", kind, strings.Join(probeKinds, ", "))}
}

// parseRate reads "100M" as 100e6 bits/s ("" is 0, the prober's default).
func parseRate(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	mult := uint64(1)
	switch s[len(s)-1] {
	case 'k', 'K':
		mult, s = 1e3, s[:len(s)-1]
	case 'm', 'M':
		mult, s = 1e6, s[:len(s)-1]
	case 'g', 'G':
		mult, s = 1e9, s[:len(s)-1]
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, errors.New("want bits/s, e.g. 50M")
	}
	return v * mult, nil
}

func (c *client) prober() (proberv1.ProberClient, error) {
	cc, err := c.conn("prober")
	if err != nil {
		return nil, err
	}
	return proberv1.NewProberClient(cc), nil
}

func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	kind, args, err := subcommand("probe", args, probeKinds...)
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("probe "+kind, flag.ContinueOnError)
	syn, n, build, err := specFlags(kind, fs)
	if err != nil {
		return err
	}
	c, err := newClient("probe "+kind, "probe "+syn, fs, args, n, n, stdout, stderr)
	if err != nil {
		return err
	}
	defer c.close()
	spec, err := build(c.args)
	if err != nil {
		return err
	}
	pr, err := c.prober()
	if err != nil {
		return err
	}
	if err := c.ready(ctx, "prober"); err != nil {
		return err
	}
	stream, err := pr.Run(ctx, &proberv1.RunRequest{Spec: spec})
	if err != nil {
		return rpcError("prober", err)
	}
	if !c.structured() {
		switch kind {
		case "ping":
			fmt.Fprintf(stdout, "PING %s\n", c.args[0])
		case "trace":
			fmt.Fprintf(stdout, "trace to %s\n", c.args[0])
		case "scan":
			fmt.Fprintf(stdout, "scanning %s\n", c.args[0])
		}
	}
	lastTenth := -1
	for {
		ev, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return errors.New("prober: the run ended without a result")
			}
			return rpcError("prober", err)
		}
		if p := ev.GetProgress(); p != nil {
			if c.structured() {
				continue
			}
			switch {
			case p.GetPingReply() != nil:
				fmt.Fprintln(stdout, pingLine(p.GetPingReply()))
			case p.GetHop() != nil:
				fmt.Fprintln(stdout, hopLine(p.GetHop()))
			case p.GetPort() != nil:
				fmt.Fprintf(stdout, "%d/tcp open\n", p.GetPort().GetPort())
			case p.GetMessage() != "":
				// Scan progress arrives often: print every tenth.
				if p.GetFraction() > 0 {
					if tenth := int(p.GetFraction() * 10); tenth > lastTenth {
						lastTenth = tenth
						fmt.Fprintf(stderr, "progress: %s (%.0f%%)\n", p.GetMessage(), 100*p.GetFraction())
					}
				} else {
					fmt.Fprintf(stderr, "%s: %s\n", kind, p.GetMessage())
				}
			}
			continue
		}
		res := ev.GetResult()
		if res == nil {
			continue
		}
		if c.structured() {
			if err := c.emit(res); err != nil {
				return err
			}
		} else if err := printResult(stdout, c.args, res); err != nil {
			return err
		}
		return resultErr(res)
	}
}

// resultErr is the exit status of a finished job: a failed job, a failed
// check, a ping without replies are failures.
func resultErr(r *proberv1.JobResult) error {
	if !r.GetSuccess() {
		msg := r.GetError()
		if msg == "" {
			msg = "failed"
		}
		if ck := r.GetCheck(); ck != nil && ck.GetDetail() != "" && msg == "failed" {
			msg = ck.GetDetail()
		}
		return errors.New(msg)
	}
	if ck := r.GetCheck(); ck != nil && !ck.GetOk() {
		return fmt.Errorf("check failed: %s", ck.GetDetail())
	}
	if p := r.GetPing(); p != nil && p.GetReceived() == 0 {
		return fmt.Errorf("no reply from %s", p.GetAddress())
	}
	return nil
}

func pingLine(r *proberv1.PingReply) string {
	if !r.GetReceived() {
		return fmt.Sprintf("no reply: seq=%d", r.GetSeq())
	}
	return fmt.Sprintf("reply from %s: seq=%d ttl=%d time=%s", r.GetFrom(), r.GetSeq(), r.GetTtl(), humanPB(r.GetRtt()))
}

func hopLine(h *proberv1.Hop) string {
	rtts := make([]string, 0, len(h.GetRtts()))
	for _, d := range h.GetRtts() {
		if d.AsDuration() == 0 {
			rtts = append(rtts, "*")
		} else {
			rtts = append(rtts, human(d.AsDuration()))
		}
	}
	return fmt.Sprintf("%2d  %-39s %s", h.GetTtl(), dash(h.GetAddress()), strings.Join(rtts, "  "))
}

// bits writes a rate as iperf3 does: 941 Mbits/sec.
func bits(bps float64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.2f Gbits/sec", bps/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.1f Mbits/sec", bps/1e6)
	case bps >= 1e3:
		return fmt.Sprintf("%.1f Kbits/sec", bps/1e3)
	}
	return fmt.Sprintf("%.0f bits/sec", bps)
}

// bytesHuman writes a byte count in binary units.
func bytesHuman(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GBytes", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MBytes", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KBytes", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d Bytes", b)
}

// printResult prints a finished job's summary (after its streamed lines).
func printResult(w io.Writer, args []string, r *proberv1.JobResult) error {
	var err error
	switch {
	case r.GetPing() != nil:
		p := r.GetPing()
		fmt.Fprintf(w, "--- %s (%s) ping statistics ---\n", args[0], p.GetAddress())
		fmt.Fprintf(w, "%d sent, %d received, %g%% loss\n", p.GetSent(), p.GetReceived(), p.GetLossPercent())
		if p.GetReceived() > 0 {
			_, err = fmt.Fprintf(w, "rtt min/avg/max/mdev = %s/%s/%s/%s\n", humanPB(p.GetMin()), humanPB(p.GetAvg()), humanPB(p.GetMax()), humanPB(p.GetMdev()))
		}
	case r.GetTraceroute() != nil:
		t := r.GetTraceroute()
		word := "reached"
		if !t.GetReached() {
			word = "not reached"
		}
		_, err = fmt.Fprintf(w, "%s (%s) %s in %d hops\n", args[0], t.GetAddress(), word, len(t.GetHops()))
	case r.GetScan() != nil:
		s := r.GetScan()
		_, err = fmt.Fprintf(w, "%s (%s): %d ports scanned: %d open, %d closed, %d filtered in %s\n",
			args[0], s.GetAddress(), s.GetScanned(), s.GetOpen(), s.GetClosed(), s.GetFiltered(), humanPB(r.GetDuration()))
	case r.GetCheck() != nil:
		ck := r.GetCheck()
		t := newTable(w, "RESULT", "DURATION", "STATUS", "CERT EXPIRES", "DETAIL")
		res := "ok"
		if !ck.GetOk() {
			res = "failed"
		}
		st := "-"
		if ck.GetStatusCode() != 0 {
			st = strconv.Itoa(int(ck.GetStatusCode()))
		}
		exp := "-"
		if e := ck.GetCertExpiry(); e != nil {
			exp = e.AsTime().UTC().Format(time.DateOnly)
		}
		t.row(res, humanPB(ck.GetDuration()), st, exp, dash(ck.GetDetail()))
		err = t.flush()
	case r.GetBandwidth() != nil:
		b := r.GetBandwidth()
		fmt.Fprintf(w, "[ ID] Interval           Transfer     Bitrate\n")
		_, err = fmt.Fprintf(w, "[  1] 0.00-%-6.2f sec  %-12s %s\n", b.GetDuration().AsDuration().Seconds(), bytesHuman(b.GetBytes()), bits(b.GetBitsPerSecond()))
		if b.GetPacketsSent() > 0 {
			_, err = fmt.Fprintf(w, "udp: jitter %s, lost %d/%d (%g%%), reordered %d\n", humanPB(b.GetJitter()),
				b.GetPacketsLost(), b.GetPacketsSent(), b.GetLossPercent(), b.GetPacketsReordered())
		}
	default:
		if !r.GetSuccess() {
			return nil
		}
		_, err = fmt.Fprintf(w, "done in %s\n", humanPB(r.GetDuration()))
	}
	return err
}

// resultSummary is one line about a result, for `jobs results`.
func resultSummary(r *proberv1.JobResult) string {
	switch {
	case !r.GetSuccess():
		return "error: " + r.GetError()
	case r.GetPing() != nil:
		p := r.GetPing()
		return fmt.Sprintf("%d/%d replies, %g%% loss, avg %s", p.GetReceived(), p.GetSent(), p.GetLossPercent(), humanPB(p.GetAvg()))
	case r.GetTraceroute() != nil:
		return fmt.Sprintf("%d hops, reached %v", len(r.GetTraceroute().GetHops()), r.GetTraceroute().GetReached())
	case r.GetScan() != nil:
		s := r.GetScan()
		return fmt.Sprintf("%d open of %d", s.GetOpen(), s.GetScanned())
	case r.GetCheck() != nil:
		ck := r.GetCheck()
		if ck.GetOk() {
			return "ok: " + ck.GetDetail()
		}
		return "failed: " + ck.GetDetail()
	case r.GetBandwidth() != nil:
		return bits(r.GetBandwidth().GetBitsPerSecond())
	}
	return "ok"
}

// specSummary names a job's kind and target.
func specSummary(s *proberv1.JobSpec) (string, string) {
	switch {
	case s.GetPing() != nil:
		return "ping", s.GetPing().GetTarget()
	case s.GetTraceroute() != nil:
		return "trace", s.GetTraceroute().GetTarget()
	case s.GetScan() != nil:
		return "scan", s.GetScan().GetTarget() + " " + s.GetScan().GetPorts()
	case s.GetCheck() != nil:
		return "check", s.GetCheck().GetKind() + " " + s.GetCheck().GetTarget()
	case s.GetBandwidth() != nil:
		return "bandwidth", s.GetBandwidth().GetPeer()
	case s.GetConnections() != nil:
		return "connections", "-"
	case s.GetInterfaces() != nil:
		return "interfaces", "-"
	case s.GetPeers() != nil:
		return "peers", "-"
	}
	return "?", "-"
}

func runJobs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("jobs", args, "list", "add", "rm", "results")
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("jobs "+sub, flag.ContinueOnError)
	syn, minA, maxA := "jobs list", 0, 0
	var build func([]string) (*proberv1.JobSpec, error)
	var every *time.Duration
	var limit *uint
	switch sub {
	case "rm":
		syn, minA, maxA = "jobs rm ID", 1, 1
	case "results":
		syn, minA, maxA = "jobs results ID [-n LIMIT]", 1, 1
		limit = fs.Uint("n", 20, "most results to show, newest first")
	case "add":
		// jobs add ID KIND ARGS...: the kind's flags come from specFlags.
		if len(args) < 2 || strings.HasPrefix(args[0], "-") || strings.HasPrefix(args[1], "-") {
			return usageError{fmt.Errorf("usage: switchboard jobs add ID %s ARGS... --every DURATION", strings.Join(probeKinds, "|"))}
		}
		id, kind := args[0], args[1]
		ksyn, n, b, err := specFlags(kind, fs)
		if err != nil {
			return err
		}
		every = fs.Duration("every", time.Minute, "how often to run (at least 1s)")
		syn, minA, maxA, build = "jobs add ID "+ksyn+" --every DURATION", n, n, b
		args = args[2:]
		c, err := newClient("jobs add", syn, fs, args, minA, maxA, stdout, stderr)
		if err != nil {
			return err
		}
		defer c.close()
		spec, err := build(c.args)
		if err != nil {
			return err
		}
		pr, err := c.prober()
		if err != nil {
			return err
		}
		cctx, cancel := c.call(ctx)
		defer cancel()
		resp, err := pr.Schedule(cctx, &proberv1.ScheduleRequest{Job: &proberv1.Job{Id: id, Spec: spec, Interval: durationpb.New(*every)}})
		if err != nil {
			return rpcError("prober", err)
		}
		if c.structured() {
			return c.emit(resp)
		}
		return jobTable(stdout, []*proberv1.Job{resp.GetJob()})
	}
	c, err := newClient("jobs "+sub, syn, fs, args, minA, maxA, stdout, stderr)
	if err != nil {
		return err
	}
	defer c.close()
	pr, err := c.prober()
	if err != nil {
		return err
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	switch sub {
	case "list":
		resp, err := pr.ListJobs(cctx, &proberv1.ListJobsRequest{})
		if err != nil {
			return rpcError("prober", err)
		}
		if c.structured() {
			return c.emit(resp)
		}
		return jobTable(stdout, resp.GetJobs())
	case "rm":
		resp, err := pr.Unschedule(cctx, &proberv1.UnscheduleRequest{Id: c.args[0]})
		if err != nil {
			return rpcError("prober", err)
		}
		if c.structured() {
			return c.emit(resp)
		}
		_, err = fmt.Fprintf(stdout, "removed job %s\n", c.args[0])
		return err
	default:
		resp, err := pr.Results(cctx, &proberv1.ResultsRequest{Id: c.args[0], Limit: uint32(*limit)})
		if err != nil {
			return rpcError("prober", err)
		}
		if c.structured() {
			return c.emit(resp)
		}
		t := newTable(stdout, "STARTED", "DURATION", "RESULT")
		now := time.Now()
		for _, r := range resp.GetResults() {
			t.row(ago(r.GetStartedAt(), now), humanPB(r.GetDuration()), resultSummary(r))
		}
		return t.flush()
	}
}

func jobTable(w io.Writer, jobs []*proberv1.Job) error {
	t := newTable(w, "ID", "KIND", "TARGET", "EVERY")
	for _, j := range jobs {
		k, tgt := specSummary(j.GetSpec())
		t.row(j.GetId(), k, tgt, humanPB(j.GetInterval()))
	}
	return t.flush()
}
