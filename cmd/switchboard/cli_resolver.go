package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	edgev1 "github.com/switchboard-net/switchboard/proto/switchboard/edge/v1"
	resolverv1 "github.com/switchboard-net/switchboard/proto/switchboard/resolver/v1"
)

func (c *client) resolver() (resolverv1.ResolverClient, error) {
	cc, err := c.conn("resolver")
	if err != nil {
		return nil, err
	}
	return resolverv1.NewResolverClient(cc), nil
}

// fqdn adds the root dot a bare name lacks.
func fqdn(name string) string {
	if strings.HasSuffix(name, ".") {
		return name
	}
	return name + "."
}

func runRecords(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("records", args, "list", "set", "rm")
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("records "+sub, flag.ContinueOnError)
	var ttl *uint
	syn, minA, maxA := "records list [SUFFIX]", 0, 1
	switch sub {
	case "set":
		syn, minA, maxA = "records set NAME TYPE DATA... [--ttl SECONDS]", 3, -1
		ttl = fs.Uint("ttl", 300, "TTL in seconds")
	case "rm":
		syn, minA, maxA = "records rm NAME TYPE [DATA...]   (without DATA: every record of NAME and TYPE)", 2, -1
	}
	c, err := newClient("records "+sub, syn, fs, args, minA, maxA, stdout, stderr)
	if err != nil {
		return err
	}
	defer c.close()
	res, err := c.resolver()
	if err != nil {
		return err
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	switch sub {
	case "list":
		req := &resolverv1.ListRecordsRequest{}
		if len(c.args) == 1 {
			req.Suffix = fqdn(c.args[0])
		}
		resp, err := res.ListRecords(cctx, req)
		if err != nil {
			return rpcError("resolver", err)
		}
		if c.structured() {
			return c.emit(resp)
		}
		return recordTable(stdout, resp.GetRecords())
	case "set":
		rec := &resolverv1.Record{Name: fqdn(c.args[0]), Type: strings.ToUpper(c.args[1]), Ttl: uint32(*ttl), Data: strings.Join(c.args[2:], " ")}
		resp, err := res.UpsertRecord(cctx, &resolverv1.UpsertRecordRequest{Record: rec})
		if err != nil {
			return rpcError("resolver", err)
		}
		if c.structured() {
			return c.emit(resp)
		}
		return recordTable(stdout, []*resolverv1.Record{resp.GetRecord()})
	default:
		resp, err := res.DeleteRecord(cctx, &resolverv1.DeleteRecordRequest{Name: fqdn(c.args[0]), Type: strings.ToUpper(c.args[1]), Data: strings.Join(c.args[2:], " ")})
		if err != nil {
			return rpcError("resolver", err)
		}
		if resp.GetDeleted() == 0 {
			return notFoundError{fmt.Errorf("no managed %s record at %s matched", strings.ToUpper(c.args[1]), fqdn(c.args[0]))}
		}
		if c.structured() {
			return c.emit(resp)
		}
		_, err = fmt.Fprintf(stdout, "deleted %d record(s)\n", resp.GetDeleted())
		return err
	}
}

func recordTable(w io.Writer, recs []*resolverv1.Record) error {
	t := newTable(w, "NAME", "TYPE", "TTL", "DATA", "SOURCE")
	for _, r := range recs {
		t.row(r.GetName(), r.GetType(), strconv.Itoa(int(r.GetTtl())), r.GetData(), dash(r.GetSource()))
	}
	return t.flush()
}

func runLookup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lookup", flag.ContinueOnError)
	c, err := newClient("lookup", "lookup NAME [TYPE]   (TYPE defaults to A)", fs, args, 1, 2, stdout, stderr)
	if err != nil {
		return err
	}
	defer c.close()
	res, err := c.resolver()
	if err != nil {
		return err
	}
	typ := "A"
	if len(c.args) == 2 {
		typ = strings.ToUpper(c.args[1])
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	resp, err := res.Lookup(cctx, &resolverv1.LookupRequest{Name: fqdn(c.args[0]), Type: typ})
	if err != nil {
		return rpcError("resolver", err)
	}
	if c.structured() {
		err = c.emit(resp)
	} else {
		flags := []string{}
		if resp.GetAuthoritative() {
			flags = append(flags, "authoritative")
		}
		if resp.GetCached() {
			flags = append(flags, "cached")
		}
		fmt.Fprintf(stdout, "status: %s", resp.GetRcode())
		if len(flags) > 0 {
			fmt.Fprintf(stdout, " (%s)", strings.Join(flags, ", "))
		}
		fmt.Fprintln(stdout)
		for _, sec := range []struct {
			name string
			recs []*resolverv1.Record
		}{{"answer", resp.GetAnswer()}, {"authority", resp.GetAuthority()}, {"additional", resp.GetAdditional()}} {
			if len(sec.recs) == 0 {
				continue
			}
			fmt.Fprintf(stdout, "\n%s:\n", sec.name)
			t := newTable(stdout, "NAME", "TTL", "TYPE", "DATA")
			for _, r := range sec.recs {
				t.row(r.GetName(), strconv.Itoa(int(r.GetTtl())), r.GetType(), r.GetData())
			}
			if err := t.flush(); err != nil {
				return err
			}
		}
	}
	if err != nil {
		return err
	}
	switch resp.GetRcode() {
	case "NOERROR":
		return nil
	case "NXDOMAIN":
		return notFoundError{fmt.Errorf("%s: no such name (NXDOMAIN)", fqdn(c.args[0]))}
	default:
		return fmt.Errorf("%s %s: %s", fqdn(c.args[0]), typ, resp.GetRcode())
	}
}

func (c *client) edge() (edgev1.EdgeClient, error) {
	cc, err := c.conn("edge")
	if err != nil {
		return nil, err
	}
	return edgev1.NewEdgeClient(cc), nil
}

func runEdge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("edge", args, "routes", "backends", "disable", "enable", "weight")
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("edge "+sub, flag.ContinueOnError)
	syn, minA, maxA := "edge "+sub, 0, 0
	switch sub {
	case "backends":
		syn, maxA = "edge backends [SERVICE]", 1
	case "disable", "enable":
		syn, minA, maxA = "edge "+sub+" SERVICE ID", 2, 2
	case "weight":
		syn, minA, maxA = "edge weight SERVICE ID WEIGHT   (0 clears the override)", 3, 3
	}
	c, err := newClient("edge "+sub, syn, fs, args, minA, maxA, stdout, stderr)
	if err != nil {
		return err
	}
	defer c.close()
	ed, err := c.edge()
	if err != nil {
		return err
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	switch sub {
	case "routes":
		resp, err := ed.ListRoutes(cctx, &edgev1.ListRoutesRequest{})
		if err != nil {
			return rpcError("edge", err)
		}
		if c.structured() {
			return c.emit(resp)
		}
		t := newTable(stdout, "PROTOCOL", "HOST", "PATH", "SERVICE", "SOURCE", "STRIP", "HEADERS")
		for _, r := range resp.GetRoutes() {
			strip := "no"
			if r.GetStripPrefix() {
				strip = "yes"
			}
			t.row(r.GetProtocol(), dash(r.GetHost()), dash(r.GetPathPrefix()), r.GetService(), r.GetSource(), strip, sortedMeta(r.GetHeaders()))
		}
		return t.flush()
	case "backends":
		req := &edgev1.ListBackendsRequest{}
		if len(c.args) == 1 {
			req.Service = c.args[0]
		}
		resp, err := ed.ListBackends(cctx, req)
		if err != nil {
			return rpcError("edge", err)
		}
		if c.structured() {
			return c.emit(resp)
		}
		return backendTable(stdout, resp.GetBackends())
	}
	req := &edgev1.SetBackendRequest{Service: c.args[0], Id: c.args[1]}
	switch sub {
	case "disable", "enable":
		d := sub == "disable"
		req.Disabled = &d
	case "weight":
		w, err := strconv.ParseUint(c.args[2], 10, 32)
		if err != nil || w > 1_000_000 {
			return usageError{fmt.Errorf("weight %q: want an integer 0-1000000", c.args[2])}
		}
		w32 := uint32(w)
		req.Weight = &w32
	}
	resp, err := ed.SetBackend(cctx, req)
	if err != nil {
		return rpcError("edge", err)
	}
	if sub == "weight" && req.GetWeight() != 0 {
		// No silent no-op: say when the service's policy ignores weights.
		if msg := weightWarning(ctx, c, c.args[0]); msg != "" {
			fmt.Fprintln(stderr, msg)
		}
	}
	if c.structured() {
		return c.emit(resp)
	}
	return backendTable(stdout, []*edgev1.Backend{resp.GetBackend()})
}

func backendTable(w io.Writer, bs []*edgev1.Backend) error {
	t := newTable(w, "SERVICE", "ID", "ADDRESS", "WEIGHT", "STATE", "ACTIVE", "TOTAL", "FAILURES", "BREAKER")
	for _, b := range bs {
		state := "up"
		switch {
		case b.GetDisabled():
			state = "disabled"
		case b.GetEjected():
			state = "ejected"
		case !b.GetHealthy():
			state = "unhealthy"
		}
		t.row(b.GetService(), b.GetId(), b.GetAddress(), strconv.FormatFloat(b.GetWeight(), 'g', 4, 64), state,
			strconv.FormatUint(b.GetActive(), 10), strconv.FormatUint(b.GetTotal(), 10), strconv.FormatUint(b.GetFailures(), 10), dash(b.GetBreaker()))
	}
	return t.flush()
}
