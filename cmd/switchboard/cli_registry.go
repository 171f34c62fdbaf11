package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/watch"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// healthWords names registry health as people say it.
var healthWords = map[registryv1.HealthStatus]string{
	registryv1.HealthStatus_HEALTH_STATUS_UNSPECIFIED: "unchecked",
	registryv1.HealthStatus_HEALTH_STATUS_PASSING:     "passing",
	registryv1.HealthStatus_HEALTH_STATUS_WARNING:     "warning",
	registryv1.HealthStatus_HEALTH_STATUS_CRITICAL:    "critical",
}

// checkWords names check kinds.
var checkWords = map[registryv1.CheckKind]string{
	registryv1.CheckKind_CHECK_KIND_UNSPECIFIED: "none",
	registryv1.CheckKind_CHECK_KIND_HTTP:        "http",
	registryv1.CheckKind_CHECK_KIND_TCP:         "tcp",
	registryv1.CheckKind_CHECK_KIND_GRPC:        "grpc",
	registryv1.CheckKind_CHECK_KIND_TTL:         "ttl",
}

func (c *client) registry() (registryv1.RegistryClient, error) {
	cc, err := c.conn("registry")
	if err != nil {
		return nil, err
	}
	return registryv1.NewRegistryClient(cc), nil
}

func runServices(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("services", flag.ContinueOnError)
	c, err := newClient("services", "services", fs, args, 0, 0, stdout, stderr)
	if err != nil {
		return err
	}
	defer c.close()
	reg, err := c.registry()
	if err != nil {
		return err
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	resp, err := reg.ListServices(cctx, &registryv1.ListServicesRequest{})
	if err != nil {
		return rpcError("registry", err)
	}
	if c.structured() {
		return c.emit(resp)
	}
	t := newTable(stdout, "NAME", "INSTANCES", "PASSING", "TAGS")
	for _, s := range resp.GetServices() {
		t.row(s.GetName(), strconv.Itoa(int(s.GetInstances())), strconv.Itoa(int(s.GetPassing())), dash(strings.Join(s.GetTags(), ",")))
	}
	return t.flush()
}

func runInstances(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("instances", flag.ContinueOnError)
	passing := fs.Bool("passing", false, "only instances whose health passes (those that receive traffic)")
	c, err := newClient("instances", "instances SERVICE [--passing]", fs, args, 1, 1, stdout, stderr)
	if err != nil {
		return err
	}
	defer c.close()
	reg, err := c.registry()
	if err != nil {
		return err
	}
	svc := c.args[0]
	cctx, cancel := c.call(ctx)
	defer cancel()
	resp, err := reg.GetService(cctx, &registryv1.GetServiceRequest{Service: svc, IncludeUnhealthy: !*passing})
	if err != nil {
		return rpcError("registry", err)
	}
	if len(resp.GetInstances()) == 0 {
		// No instances: an unknown service is "not found"; a known one with
		// none passing is an empty answer.
		list, err := reg.ListServices(cctx, &registryv1.ListServicesRequest{})
		if err != nil {
			return rpcError("registry", err)
		}
		known := false
		for _, s := range list.GetServices() {
			known = known || s.GetName() == svc
		}
		if !known {
			return notFoundError{fmt.Errorf("service %q: no instances registered", svc)}
		}
	}
	if c.structured() {
		return c.emit(resp)
	}
	return instanceTable(stdout, resp.GetInstances(), false)
}

// instanceTable prints instances; withService adds the service column.
func instanceTable(w io.Writer, insts []*registryv1.Instance, withService bool) error {
	head := []string{"ID", "ADDRESS", "HEALTH", "WEIGHT", "ZONE", "CHECK", "UPDATED", "OUTPUT"}
	if withService {
		head = append([]string{"SERVICE"}, head...)
	}
	t := newTable(w, head...)
	now := time.Now()
	for _, in := range insts {
		row := instanceRow(in, now)
		if withService {
			row = append([]string{in.GetService()}, row...)
		}
		t.row(row...)
	}
	return t.flush()
}

func instanceRow(in *registryv1.Instance, now time.Time) []string {
	w := in.GetWeight()
	if w == 0 {
		w = 1
	}
	check := checkWords[in.GetCheck().GetKind()]
	if in.GetCheck().GetKind() == registryv1.CheckKind_CHECK_KIND_HTTP {
		check += " " + dash(in.GetCheck().GetHttpPath())
	}
	if iv := in.GetCheck().GetInterval(); iv != nil {
		check += " every " + human(iv.AsDuration())
	}
	out := strings.ReplaceAll(in.GetHealthOutput(), "\n", " ")
	if len(out) > 60 {
		out = out[:57] + "..."
	}
	return []string{in.GetId(), net.JoinHostPort(in.GetAddress(), strconv.Itoa(int(in.GetPort()))),
		healthWords[in.GetHealth()], strconv.Itoa(int(w)), dash(in.GetZone()), check, ago(in.GetUpdatedAt(), now), dash(out)}
}

func runRegister(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("register", flag.ContinueOnError)
	var tags, meta stringList
	fs.Var(&tags, "tag", "a tag, e.g. primary or edge.route=example.com/api (repeatable)")
	fs.Var(&meta, "meta", "metadata KEY=VALUE (repeatable)")
	weight := fs.Uint("weight", 0, "relative weight for balancing (0: the default, 1)")
	zone := fs.String("zone", "", "zone or locality")
	check := fs.String("check", "none", "health check: none, http, tcp, grpc or ttl")
	checkPath := fs.String("check-path", "/", "HTTP path of an http check")
	checkTLS := fs.Bool("check-tls", false, "use https for an http check")
	grpcSvc := fs.String("check-grpc-service", "", "service name of a grpc check (empty: the server as a whole)")
	interval := fs.Duration("check-interval", 0, "how often to check (0: the registry's default, 10s; ttl checks: the TTL)")
	ctimeout := fs.Duration("check-timeout", 0, "per-check timeout (0: the default, 2s)")
	const syn = "register SERVICE ID HOST:PORT [--tag T]... [--meta K=V]... [--weight N] [--zone Z] [--check none|http|tcp|grpc|ttl]"
	c, err := newClient("register", syn, fs, args, 3, 3, stdout, stderr)
	if err != nil {
		return err
	}
	defer c.close()
	host, portS, err := net.SplitHostPort(c.args[2])
	if err != nil {
		return usageError{fmt.Errorf("address %q: want HOST:PORT", c.args[2])}
	}
	port, err := strconv.ParseUint(portS, 10, 16)
	if err != nil || port == 0 {
		return usageError{fmt.Errorf("address %q: port must be 1-65535", c.args[2])}
	}
	in := &registryv1.Instance{Service: c.args[0], Id: c.args[1], Address: host, Port: uint32(port),
		Tags: tags, Weight: uint32(*weight), Zone: *zone}
	if len(meta) > 0 {
		in.Metadata = map[string]string{}
		for _, kv := range meta {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return usageError{fmt.Errorf("--meta %q: want KEY=VALUE", kv)}
			}
			in.Metadata[k] = v
		}
	}
	kind := registryv1.CheckKind(-1)
	for k, w := range checkWords {
		if w == *check {
			kind = k
		}
	}
	if kind < 0 {
		return usageError{fmt.Errorf("--check %q: want none, http, tcp, grpc or ttl", *check)}
	}
	if kind != registryv1.CheckKind_CHECK_KIND_UNSPECIFIED {
		in.Check = &registryv1.HealthCheck{Kind: kind, Tls: *checkTLS, GrpcService: *grpcSvc}
		if kind == registryv1.CheckKind_CHECK_KIND_HTTP {
			in.Check.HttpPath = *checkPath
		}
		if *interval > 0 {
			in.Check.Interval = durationpb.New(*interval)
		}
		if *ctimeout > 0 {
			in.Check.Timeout = durationpb.New(*ctimeout)
		}
	}
	reg, err := c.registry()
	if err != nil {
		return err
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	resp, err := reg.Register(cctx, &registryv1.RegisterRequest{Instance: in})
	if err != nil {
		return rpcError("registry", err)
	}
	if c.structured() {
		return c.emit(resp)
	}
	got := resp.GetInstance()
	_, err = fmt.Fprintf(stdout, "registered %s/%s at %s (health: %s)\n", got.GetService(), got.GetId(),
		net.JoinHostPort(got.GetAddress(), strconv.Itoa(int(got.GetPort()))), healthWords[got.GetHealth()])
	return err
}

func runDeregister(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("deregister", flag.ContinueOnError)
	c, err := newClient("deregister", "deregister SERVICE ID", fs, args, 2, 2, stdout, stderr)
	if err != nil {
		return err
	}
	defer c.close()
	reg, err := c.registry()
	if err != nil {
		return err
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	if err := instanceExists(cctx, reg, c.args[0], c.args[1]); err != nil {
		return err
	}
	resp, err := reg.Deregister(cctx, &registryv1.DeregisterRequest{Service: c.args[0], Id: c.args[1]})
	if err != nil {
		return rpcError("registry", err)
	}
	if c.structured() {
		return c.emit(resp)
	}
	_, err = fmt.Fprintf(stdout, "deregistered %s/%s\n", c.args[0], c.args[1])
	return err
}

// instanceExists returns a not-found error when service has no instance id:
// deregistering or setting the health of nothing is no silent success.
func instanceExists(ctx context.Context, reg registryv1.RegistryClient, service, id string) error {
	resp, err := reg.GetService(ctx, &registryv1.GetServiceRequest{Service: service, IncludeUnhealthy: true})
	if err != nil {
		return rpcError("registry", err)
	}
	for _, in := range resp.GetInstances() {
		if in.GetId() == id {
			return nil
		}
	}
	return notFoundError{fmt.Errorf("instance %s/%s: not registered", service, id)}
}

func runHealthSet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if _, rest, err := subcommand("health", args, "set"); err != nil {
		return err
	} else {
		args = rest
	}
	fs := flag.NewFlagSet("health set", flag.ContinueOnError)
	msg := fs.String("message", "set by hand", "check output recorded with the status, for operators")
	c, err := newClient("health set", "health set SERVICE ID passing|warning|critical [--message TEXT]", fs, args, 3, 3, stdout, stderr)
	if err != nil {
		return err
	}
	defer c.close()
	st := registryv1.HealthStatus_HEALTH_STATUS_UNSPECIFIED
	for k, w := range healthWords {
		if w == strings.ToLower(c.args[2]) && k != registryv1.HealthStatus_HEALTH_STATUS_UNSPECIFIED {
			st = k
		}
	}
	if st == registryv1.HealthStatus_HEALTH_STATUS_UNSPECIFIED {
		return usageError{fmt.Errorf("status %q: want passing, warning or critical", c.args[2])}
	}
	reg, err := c.registry()
	if err != nil {
		return err
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	if err := instanceExists(cctx, reg, c.args[0], c.args[1]); err != nil {
		return err
	}
	resp, err := reg.SetHealth(cctx, &registryv1.SetHealthRequest{Service: c.args[0], Id: c.args[1], Status: st, Output: *msg})
	if err != nil {
		return rpcError("registry", err)
	}
	if c.structured() {
		return c.emit(resp)
	}
	_, err = fmt.Fprintf(stdout, "%s/%s is %s\n", c.args[0], c.args[1], healthWords[st])
	if st != registryv1.HealthStatus_HEALTH_STATUS_PASSING {
		fmt.Fprintln(stderr, "note: an instance with a check gets its health back from the prober at the next check")
	}
	return err
}

// watchKey identifies an instance across snapshots.
func watchKey(in *registryv1.Instance) string { return in.GetService() + "/" + in.GetId() }

func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	passing := fs.Bool("passing", false, "only instances whose health passes")
	c, err := newClient("watch", "watch [SERVICE] [--passing]", fs, args, 0, 1, stdout, stderr)
	if err != nil {
		return err
	}
	defer c.close()
	reg, err := c.registry()
	if err != nil {
		return err
	}
	svc := ""
	if len(c.args) == 1 {
		svc = c.args[0]
	}
	if err := c.ready(ctx, "registry"); err != nil {
		return err
	}
	// Incremental: a catalog larger than one message still arrives (in
	// parts), and each change costs its size, not the catalog's.
	stream, err := reg.Watch(ctx, &registryv1.WatchRequest{Service: svc, IncludeUnhealthy: !*passing, Incremental: true})
	if err != nil {
		return rpcError("registry", err)
	}
	prev := map[string]*registryv1.Instance{}
	first := true
	var cat watch.Catalog
	for {
		m, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return errors.New("registry: the watch ended")
			}
			return rpcError("registry", err)
		}
		done, err := cat.Apply(m)
		if err != nil {
			return fmt.Errorf("registry: %w", err)
		}
		if !done {
			continue
		}
		snap := &registryv1.WatchResponse{Index: cat.Index(), Instances: cat.Instances(), Stale: cat.Stale()}
		if c.structured() {
			if err := c.emitLine(snap); err != nil {
				return err
			}
			continue
		}
		if err := printChanges(stdout, prev, snap, first); err != nil {
			return err
		}
		first = false
	}
}

// printChanges prints what changed between prev and snap, one line per
// instance: + added, - removed, ~ changed (health, address or weight). The
// first snapshot prints every instance with "=". prev becomes snap.
func printChanges(w io.Writer, prev map[string]*registryv1.Instance, snap *registryv1.WatchResponse, first bool) error {
	now := time.Now()
	stamp := now.Format("15:04:05")
	next := map[string]*registryv1.Instance{}
	var lines []string
	for _, in := range snap.GetInstances() {
		k := watchKey(in)
		next[k] = in
		addr := net.JoinHostPort(in.GetAddress(), strconv.Itoa(int(in.GetPort())))
		old, ok := prev[k]
		switch {
		case first:
			lines = append(lines, fmt.Sprintf("%s = %s %s %s", stamp, k, addr, healthWords[in.GetHealth()]))
		case !ok:
			lines = append(lines, fmt.Sprintf("%s + %s %s %s", stamp, k, addr, healthWords[in.GetHealth()]))
		default:
			var ch []string
			if old.GetHealth() != in.GetHealth() {
				ch = append(ch, "health "+healthWords[old.GetHealth()]+" -> "+healthWords[in.GetHealth()])
			}
			oldAddr := net.JoinHostPort(old.GetAddress(), strconv.Itoa(int(old.GetPort())))
			if oldAddr != addr {
				ch = append(ch, "address "+oldAddr+" -> "+addr)
			}
			if old.GetWeight() != in.GetWeight() {
				ch = append(ch, fmt.Sprintf("weight %d -> %d", old.GetWeight(), in.GetWeight()))
			}
			if len(ch) > 0 {
				lines = append(lines, fmt.Sprintf("%s ~ %s %s", stamp, k, strings.Join(ch, ", ")))
			}
		}
	}
	for k, in := range prev {
		if _, ok := next[k]; !ok {
			lines = append(lines, fmt.Sprintf("%s - %s %s", stamp, k, net.JoinHostPort(in.GetAddress(), strconv.Itoa(int(in.GetPort())))))
		}
	}
	if first && len(lines) == 0 {
		lines = append(lines, stamp+" (no instances)")
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i][11:] < lines[j][11:] })
	if snap.GetStale() {
		lines = append(lines, stamp+" ! the registry's backend is unreachable: this is the last known state")
	}
	for k := range prev {
		delete(prev, k)
	}
	for k, v := range next {
		prev[k] = v
	}
	for _, l := range lines {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return err
		}
	}
	return nil
}
