package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/switchboard-net/switchboard/pkg/config"
)

// cliCommand is one client command: how it reads, what it does, and the
// subcommands and flags completion offers.
type cliCommand struct {
	name     string
	group    string
	synopsis string
	summary  string
	subs     []string
	run      func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// cliGroups orders the groups of the help text.
var cliGroups = []string{"catalog", "balancing", "dns", "probing", "edge", "shell"}

// cliCommands is the table of client commands; help and completion are
// generated from it.
var cliCommands []cliCommand

func init() {
	cliCommands = []cliCommand{
		{"services", "catalog", "services", "list services with instance and passing counts", nil, runServices},
		{"instances", "catalog", "instances SERVICE [--passing]", "list a service's instances with their health", nil, runInstances},
		{"register", "catalog", "register SERVICE ID HOST:PORT [--tag T]... [--meta K=V]... [--weight N] [--check KIND]", "add or replace an instance", nil, runRegister},
		{"deregister", "catalog", "deregister SERVICE ID", "remove an instance", nil, runDeregister},
		{"health", "catalog", "health set SERVICE ID passing|warning|critical [--message TEXT]", "record an instance's health by hand", []string{"set"}, runHealthSet},
		{"watch", "catalog", "watch [SERVICE] [--passing]", "print instances as they change, until interrupted", nil, runWatch},
		{"pick", "balancing", "pick SERVICE [--hash-key KEY] [-n N]", "ask the balancer for an endpoint, as a data plane would", nil, runPick},
		{"policy", "balancing", "policy get SERVICE | policy set SERVICE POLICY [--hash-on ...]", "read or change a service's balancing policy", []string{"get", "set"}, runPolicy},
		{"records", "dns", "records list [SUFFIX] | records set NAME TYPE DATA... [--ttl S] | records rm NAME TYPE [DATA...]", "manage static DNS records", []string{"list", "set", "rm"}, runRecords},
		{"lookup", "dns", "lookup NAME [TYPE]", "query the resolver, as dig would", nil, runLookup},
		{"probe", "probing", "probe ping|trace|scan|check|bandwidth TARGET... [flags]", "run a one-off job on the prober, streaming its progress", probeKinds, runProbe},
		{"jobs", "probing", "jobs list | jobs add ID KIND TARGET... --every D | jobs rm ID | jobs results ID", "manage the prober's periodic jobs", []string{"list", "add", "rm", "results"}, runJobs},
		{"edge", "edge", "edge routes | edge backends [SERVICE] | edge disable|enable SERVICE ID | edge weight SERVICE ID N", "inspect and steer the edge proxy", []string{"routes", "backends", "disable", "enable", "weight"}, runEdge},
		{"completion", "shell", "completion bash|zsh", "print a shell completion script", []string{"bash", "zsh"}, runCompletion},
	}
}

// lookupCLI finds the client command args name; "health" is one only as
// "health set" (plain "health URL" is the container healthcheck).
func lookupCLI(args []string) *cliCommand {
	if len(args) == 0 {
		return nil
	}
	if args[0] == "health" && (len(args) < 2 || args[1] != "set") {
		return nil
	}
	for i := range cliCommands {
		if cliCommands[i].name == args[0] {
			return &cliCommands[i]
		}
	}
	return nil
}

// runCLI runs a client command and returns its exit code: 0 ok, 1 failure,
// 2 usage error, 3 not found.
func runCLI(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := lookupCLI(args)
	if cmd == nil {
		fmt.Fprintf(stderr, "switchboard: unknown command %q\n", args[0])
		return exitUsage
	}
	err := cmd.run(ctx, args[1:], stdout, stderr)
	var nf notFoundError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "switchboard %s: %v\n", cmd.name, err)
		return exitUsage
	case errors.As(err, &nf):
		fmt.Fprintf(stderr, "switchboard %s: %v\n", cmd.name, err)
		return exitNotFound
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		// Interrupted (Ctrl-C): watch and streams end here.
		return exitOK
	default:
		fmt.Fprintf(stderr, "switchboard %s: %v\n", cmd.name, err)
		return exitFailure
	}
}

// cliUsage is the top-level help of the client commands, grouped by concern.
func cliUsage() string {
	var b strings.Builder
	for _, g := range cliGroups {
		fmt.Fprintf(&b, "\n%s:\n", g)
		for _, c := range cliCommands {
			if c.group == g {
				name := c.name
				if len(c.subs) == 1 {
					name += " " + c.subs[0] // "health set": plain "health" is the URL check
				}
				fmt.Fprintf(&b, "  %-11s %s\n", name, c.summary)
			}
		}
	}
	return b.String()
}

// printCommandHelp prints a client command's flags: its own first, then
// connection and output flags with their environment twins.
func printCommandHelp(w io.Writer, name, synopsis string, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: switchboard %s\n", synopsis)
	var own, conn, out []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		switch {
		case f.Name == "o" || f.Name == "output" || f.Name == "timeout":
			out = append(out, f)
		case commonFlagNames[f.Name]:
			conn = append(conn, f)
		default:
			own = append(own, f)
		}
	})
	section := func(title string, fl []*flag.Flag, env bool) {
		if len(fl) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s:\n", title)
		sort.SliceStable(fl, func(i, j int) bool { return flagOrder(fl[i].Name) < flagOrder(fl[j].Name) })
		for _, f := range fl {
			dash := "--"
			if len(f.Name) == 1 {
				dash = "-"
			}
			line := "  " + dash + f.Name
			if n, _ := flag.UnquoteUsage(f); n != "" {
				line += " " + n
			}
			fmt.Fprintf(w, "%s\n      %s", line, f.Usage)
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "[]" {
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
			if env && commonFlagNames[f.Name] {
				fmt.Fprintf(w, " [$%s]", config.EnvName(f.Name))
			}
			fmt.Fprintln(w)
		}
	}
	section(name+" flags", own, false)
	section("connection flags", conn, true)
	section("output flags", out, true)
	fmt.Fprintln(w, "\nexit codes: 0 ok, 1 failure (RPC error), 2 usage error, 3 not found")
}

// flagOrder keeps the services' addresses in stack order in help.
func flagOrder(name string) int {
	for i, s := range serviceNames {
		if name == s+"-addr" {
			return i
		}
	}
	return len(serviceNames)
}

// subcommand splits "policy get demo" into "get" and the rest.
func subcommand(cmd string, args []string, subs ...string) (string, []string, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			return "", nil, usageError{fmt.Errorf("usage: switchboard %s %s ... (run 'switchboard %s %s -h' for its flags)", cmd, strings.Join(subs, "|"), cmd, subs[0])}
		}
		return "", nil, usageError{fmt.Errorf("want a subcommand: %s", strings.Join(subs, ", "))}
	}
	for _, s := range subs {
		if args[0] == s {
			return s, args[1:], nil
		}
	}
	return "", nil, usageError{fmt.Errorf("unknown subcommand %q: want one of %s", args[0], strings.Join(subs, ", "))}
}
