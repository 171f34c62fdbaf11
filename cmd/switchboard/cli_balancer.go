package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
)

// policiesIgnoringWeights are the balancing policies that pick without
// looking at weights (pkg/balance: round_robin takes endpoints in turn).
var policiesIgnoringWeights = map[string]bool{"round_robin": true}

func (c *client) balancer() (balancerv1.BalancerClient, error) {
	cc, err := c.conn("balancer")
	if err != nil {
		return nil, err
	}
	return balancerv1.NewBalancerClient(cc), nil
}

func runPick(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pick", flag.ContinueOnError)
	key := fs.String("hash-key", "", "affinity key for consistent_hash (a client IP, header or cookie value)")
	n := fs.Int("n", 1, "picks to make (see the policy spread calls)")
	c, err := newClient("pick", "pick SERVICE [--hash-key KEY] [-n N]", fs, args, 1, 1, stdout, stderr)
	if err != nil {
		return err
	}
	defer c.close()
	if *n < 1 || *n > 10000 {
		return usageError{fmt.Errorf("-n %d: want 1-10000", *n)}
	}
	bal, err := c.balancer()
	if err != nil {
		return err
	}
	var t *table
	if !c.structured() {
		t = newTable(stdout, "ID", "ADDRESS", "WEIGHT", "EFFECTIVE", "ZONE", "HEALTHY")
	}
	for range *n {
		cctx, cancel := c.call(ctx)
		resp, err := bal.Pick(cctx, &balancerv1.PickRequest{Service: c.args[0], HashKey: *key})
		cancel()
		if err != nil {
			return rpcError("balancer", err)
		}
		if c.structured() {
			if *n == 1 {
				return c.emit(resp)
			}
			if err := c.emitLine(resp); err != nil {
				return err
			}
			continue
		}
		e := resp.GetEndpoint()
		t.row(e.GetId(), net.JoinHostPort(e.GetAddress(), strconv.Itoa(int(e.GetPort()))), strconv.Itoa(int(e.GetWeight())),
			strconv.FormatFloat(e.GetEffectiveWeight(), 'g', 4, 64), dash(e.GetZone()), strconv.FormatBool(e.GetHealthy()))
	}
	if t != nil {
		return t.flush()
	}
	return nil
}

func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("policy", args, "get", "set")
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("policy "+sub, flag.ContinueOnError)
	var (
		syn                                     = "policy get SERVICE"
		minArgs                                 = 1
		hashOn                                  *string
		panicPct, outFails, maxEject, brkFails  *uint
		slowStart, baseEject, maxEjectT, brkOpn *durationFlag
	)
	if sub == "set" {
		syn = "policy set SERVICE round_robin|weighted_round_robin|least_conn|p2c|consistent_hash|random [flags]"
		minArgs = 2
		hashOn = fs.String("hash-on", "", "consistent_hash key: client_ip, header:NAME or cookie:NAME")
		panicPct = fs.Uint("panic-threshold", 0, "below this percentage of healthy endpoints, use all (0: default 50)")
		slowStart, baseEject, maxEjectT, brkOpn = &durationFlag{}, &durationFlag{}, &durationFlag{}, &durationFlag{}
		fs.Var(slowStart, "slow-start", "ramp a new endpoint's weight up over this time (0: off)")
		outFails = fs.Uint("outlier-failures", 0, "consecutive failures that eject an endpoint (0: default 5)")
		fs.Var(baseEject, "outlier-base-ejection", "first ejection time, doubling on each re-ejection (0: default 30s)")
		fs.Var(maxEjectT, "outlier-max-ejection", "cap on one ejection (0: default 5m)")
		maxEject = fs.Uint("outlier-max-percent", 0, "most endpoints ejected at once, in percent (0: default 50)")
		brkFails = fs.Uint("breaker-failures", 0, "failures in a row that open the circuit breaker (0: off)")
		fs.Var(brkOpn, "breaker-open", "time the breaker stays open before a trial call")
	}
	c, err := newClient("policy "+sub, syn, fs, args, minArgs, minArgs, stdout, stderr)
	if err != nil {
		return err
	}
	defer c.close()
	bal, err := c.balancer()
	if err != nil {
		return err
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	cur, err := bal.GetPolicy(cctx, &balancerv1.GetPolicyRequest{Service: c.args[0]})
	if err != nil {
		return rpcError("balancer", err)
	}
	var out proto.Message = cur
	pol := cur.GetPolicy()
	if sub == "set" {
		// Only what the command line says changes; the rest stays.
		p := proto.Clone(pol).(*balancerv1.Policy)
		if p == nil {
			p = &balancerv1.Policy{}
		}
		if p.Outlier == nil {
			p.Outlier = &balancerv1.OutlierDetection{}
		}
		if p.Breaker == nil {
			p.Breaker = &balancerv1.CircuitBreaker{}
		}
		p.Name = c.args[1]
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "hash-on":
				p.HashOn = *hashOn
			case "panic-threshold":
				p.PanicThresholdPercent = uint32(*panicPct)
			case "slow-start":
				p.SlowStart = slowStart.pb()
			case "outlier-failures":
				p.Outlier.ConsecutiveFailures = uint32(*outFails)
			case "outlier-base-ejection":
				p.Outlier.BaseEjectionTime = baseEject.pb()
			case "outlier-max-ejection":
				p.Outlier.MaxEjectionTime = maxEjectT.pb()
			case "outlier-max-percent":
				p.Outlier.MaxEjectionPercent = uint32(*maxEject)
			case "breaker-failures":
				p.Breaker.FailureThreshold = uint32(*brkFails)
			case "breaker-open":
				p.Breaker.OpenTime = brkOpn.pb()
			}
		})
		resp, err := bal.SetPolicy(cctx, &balancerv1.SetPolicyRequest{Service: c.args[0], Policy: p})
		if err != nil {
			return rpcError("balancer", err)
		}
		out, pol = resp, resp.GetPolicy()
	}
	if c.structured() {
		return c.emit(out)
	}
	t := newTable(stdout, "SETTING", "VALUE")
	t.row("service", c.args[0])
	t.row("policy", pol.GetName())
	if policiesIgnoringWeights[pol.GetName()] {
		t.row("weights", "ignored by "+pol.GetName())
	} else {
		t.row("weights", "honoured")
	}
	t.row("hash on", dash(pol.GetHashOn()))
	t.row("panic threshold", fmt.Sprintf("%d%%", pol.GetPanicThresholdPercent()))
	t.row("slow start", offIfZero(pol.GetSlowStart()))
	t.row("outlier: consecutive failures", strconv.Itoa(int(pol.GetOutlier().GetConsecutiveFailures())))
	t.row("outlier: base ejection", humanPB(pol.GetOutlier().GetBaseEjectionTime()))
	t.row("outlier: max ejection", humanPB(pol.GetOutlier().GetMaxEjectionTime()))
	t.row("outlier: max ejected", fmt.Sprintf("%d%%", pol.GetOutlier().GetMaxEjectionPercent()))
	if pol.GetBreaker().GetFailureThreshold() == 0 {
		t.row("breaker", "off")
	} else {
		t.row("breaker", fmt.Sprintf("opens after %d failures for %s", pol.GetBreaker().GetFailureThreshold(), humanPB(pol.GetBreaker().GetOpenTime())))
	}
	return t.flush()
}

// offIfZero writes a duration, "off" when unset or zero.
func offIfZero(d *durationpb.Duration) string {
	if d == nil || d.AsDuration() == 0 {
		return "off"
	}
	return human(d.AsDuration())
}

// durationFlag is a duration flag whose value goes into a proto field.
type durationFlag struct{ d *durationpb.Duration }

func (f *durationFlag) String() string {
	if f == nil || f.d == nil {
		return ""
	}
	return f.d.AsDuration().String()
}

func (f *durationFlag) Set(v string) error {
	d, err := parseDurationFlag(v)
	if err != nil {
		return err
	}
	f.d = durationpb.New(d)
	return nil
}

func (f *durationFlag) pb() *durationpb.Duration { return f.d }

// weightWarning says when a weight will not change what the balancer picks:
// the service's policy ignores weights. It returns "" when weights count or
// the policy could not be read (then it says so instead).
func weightWarning(ctx context.Context, c *client, service string) string {
	if strings.HasPrefix(service, "static:") {
		// Static services take their policy from the edge's config file.
		return "note: " + service + " takes its policy from the edge's config file: the weight counts unless that policy is round_robin"
	}
	bal, err := c.balancer()
	if err != nil {
		return "note: could not read the policy of " + service + " to check that it honours weights: " + err.Error()
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	resp, err := bal.GetPolicy(cctx, &balancerv1.GetPolicyRequest{Service: service})
	if err != nil {
		return "note: could not read the policy of " + service + " to check that it honours weights: " + strings.TrimSpace(rpcError("balancer", err).Error())
	}
	if name := resp.GetPolicy().GetName(); policiesIgnoringWeights[name] {
		return fmt.Sprintf("warning: service %q uses the %s policy, which ignores weights: this weight has no effect on its picks "+
			"until the policy weighs them (switchboard policy set %s weighted_round_robin)", service, name, service)
	}
	return ""
}
