// Command switchboard is Switchboard's command-line tool:
//
//	switchboard dev                      run all five services in one process
//	switchboard connect SERVICE --edge HOST:PORT --listen ADDR
//	                                     carry local TCP connections to SERVICE
//	                                     over one wire connection to an edge
//	switchboard demo --name NAME --register REGISTRY
//	                                     serve a demo app and register it
//	switchboard health URL               exit 0 when URL answers 200
//	switchboard tls ca create | cert create --name NAME
//	                                     make a CA and the certificates it signs
//	switchboard version                  print the version, commit and Go release
//	switchboard services | instances SVC | pick SVC | probe ping HOST | ...
//	                                     day-two client commands (docs/cli.md)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: switchboard <command> [flags]

run the stack:
  dev       run registry, balancer, resolver, prober and edge in one process,
            on the embedded store, with a demo app behind the edge
  connect   forward local TCP connections to a service through an edge's
            wire listener (like kubectl port-forward)
  demo      serve a small demo HTTP app and register it with a registry
  health    check a URL (exit 0 on 200), for container healthchecks
  tls       make a CA and the certificates it signs for mutual TLS
  bootstrap write the compose stack's certificates, tokens and ACLs (idempotent)
  version   print the version (commit and Go release when stamped)
`

// usageTail ends the help, after the client commands (cli.go).
const usageTail = `
The client commands reach each service at --registry-addr, --balancer-addr,
--resolver-addr, --prober-addr and --edge-addr (default: switchboard dev's
ports; env SWITCHBOARD_REGISTRY_ADDR ...), print tables (-o json|yaml for
machines) and exit 0 ok, 1 failure, 2 usage error, 3 not found.
Run 'switchboard <command> -h' for a command's flags (docs/cli.md).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() { <-ctx.Done(); stop() }()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a command and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage+cliUsage()+usageTail)
		return 2
	}
	if lookupCLI(args) != nil {
		return runCLI(ctx, args, stdout, stderr)
	}
	var err error
	switch args[0] {
	case "dev":
		err = runDev(ctx, args[1:], stdout, stderr)
	case "connect":
		err = runConnect(ctx, args[1:], stdout, stderr)
	case "demo":
		err = runDemo(ctx, args[1:], stdout, stderr)
	case "health":
		err = runHealth(ctx, args[1:], stdout, stderr)
	case "tls":
		err = runTLS(args[1:], stdout, stderr)
	case "bootstrap":
		err = runBootstrap(ctx, args[1:], stdout, stderr)
	case "version":
		info, ok := debug.ReadBuildInfo()
		fmt.Fprintln(stdout, "switchboard", versionString(info, ok))
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage+cliUsage()+usageTail)
	default:
		fmt.Fprintf(stderr, "switchboard: unknown command %q\n\n%s%s%s", args[0], usage, cliUsage(), usageTail)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "switchboard %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "switchboard %s: %v\n", args[0], err)
		return 1
	}
}

// usageError is a bad command line.
type usageError struct{ error }
