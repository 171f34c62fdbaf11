package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/switchboard-net/switchboard/pkg/certs"
)

const tlsUsage = `usage:
  switchboard tls ca create [--dir DIR] [--name NAME] [--days N] [--force]
      make a CA: DIR/ca.pem and DIR/ca-key.pem
  switchboard tls cert create --name NAME [--dns NAME]... [--ip IP]... [--client-only|--server-only]
                              [--days N] [--ca FILE --ca-key FILE] [--dir DIR] [--force]
      make a certificate signed by the CA: DIR/NAME.pem and DIR/NAME-key.pem

Run 'switchboard tls ca create -h' or 'switchboard tls cert create -h' for the flags.
`

// maxDays bounds --days, far beyond any sensible lifetime and below the
// overflow of a time.Duration.
const maxDays = 100 * 365

// runTLS makes the certificates of Switchboard's mutual TLS, like
// `consul tls`: a CA, and certificates it signs. Every file is written with
// mode 0600, and none is replaced without --force.
func runTLS(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "--help", "help":
			fmt.Fprint(stdout, tlsUsage)
			return flag.ErrHelp
		}
	}
	if len(args) < 2 || args[1] != "create" || args[0] != "ca" && args[0] != "cert" {
		fmt.Fprint(stderr, tlsUsage)
		if len(args) == 0 {
			return usageError{errors.New(`a subcommand is required: "ca create" or "cert create"`)}
		}
		return usageError{fmt.Errorf(`unknown subcommand %q: want "ca create" or "cert create"`, strings.Join(args[:min(len(args), 2)], " "))}
	}
	if args[0] == "ca" {
		return runTLSCA(args[2:], stdout, stderr)
	}
	return runTLSCert(args[2:], stdout, stderr)
}

func runTLSCA(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tls ca create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: switchboard tls ca create [--dir DIR] [--name NAME] [--days N] [--force]")
		fs.PrintDefaults()
	}
	dir := fs.String("dir", ".", "directory to write ca.pem and ca-key.pem to")
	name := fs.String("name", "Switchboard CA", "the CA's common name")
	days := fs.Int("days", int(certs.DefaultCAValidity/(24*time.Hour)), "days the CA is valid")
	force := fs.Bool("force", false, "replace existing files")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	validity, err := daysFlag(*days)
	if err != nil {
		return err
	}
	if strings.TrimSpace(*name) == "" {
		return usageError{errors.New("--name: must not be empty")}
	}
	ca, err := certs.NewCA(certs.CAOptions{CommonName: *name, Validity: validity})
	if err != nil {
		return err
	}
	certFile, keyFile := filepath.Join(*dir, "ca.pem"), filepath.Join(*dir, "ca-key.pem")
	if err := ca.WriteFiles(certFile, keyFile, *force); err != nil {
		return forceHint(err)
	}
	fmt.Fprintf(stdout, "wrote %s\nwrote %s\n", certFile, keyFile)
	return nil
}

func runTLSCert(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tls cert create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: switchboard tls cert create --name NAME [--dns NAME]... [--ip IP]... [--client-only|--server-only] [flags]")
		fs.PrintDefaults()
	}
	var dns, ips stringList
	name := fs.String("name", "", "the certificate's name (CommonName, and a DNS name when it is a host name); also names its files (required)")
	fs.Var(&dns, "dns", "a DNS `NAME` servers are verified against (repeatable)")
	fs.Var(&ips, "ip", "an `IP` address servers are verified against (repeatable)")
	clientOnly := fs.Bool("client-only", false, "for clients only (default: for servers and clients)")
	serverOnly := fs.Bool("server-only", false, "for servers only (default: for servers and clients)")
	days := fs.Int("days", int(certs.DefaultCertValidity/(24*time.Hour)), "days the certificate is valid")
	dir := fs.String("dir", ".", "directory to write NAME.pem and NAME-key.pem to")
	caFile := fs.String("ca", "", "the CA's certificate (default DIR/ca.pem)")
	caKey := fs.String("ca-key", "", "the CA's key (default DIR/ca-key.pem)")
	force := fs.Bool("force", false, "replace existing files")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *name == "":
		return usageError{errors.New("--name is required")}
	case strings.ContainsAny(*name, `/\`+"\x00") || *name == "." || *name == "..":
		return usageError{fmt.Errorf("--name %q: must be usable as a file name, without a path separator", *name)}
	case *clientOnly && *serverOnly:
		return usageError{errors.New("--client-only and --server-only exclude each other")}
	}
	validity, err := daysFlag(*days)
	if err != nil {
		return err
	}
	for _, d := range dns {
		if !certs.ValidDNSName(d) {
			return usageError{fmt.Errorf("--dns %q: not a valid host name", d)}
		}
	}
	var addrs []net.IP
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return usageError{fmt.Errorf("--ip %q: not an IP address", s)}
		}
		addrs = append(addrs, ip)
	}
	if *caFile == "" {
		*caFile = filepath.Join(*dir, "ca.pem")
	}
	if *caKey == "" {
		*caKey = filepath.Join(*dir, "ca-key.pem")
	}
	certFile, keyFile := filepath.Join(*dir, *name+".pem"), filepath.Join(*dir, *name+"-key.pem")
	for _, out := range []string{certFile, keyFile} {
		if samePath(out, *caFile) || samePath(out, *caKey) {
			return usageError{fmt.Errorf("--name %q: %s would replace the CA's own file", *name, out)}
		}
	}

	ca, err := certs.LoadCA(*caFile, *caKey)
	if err != nil {
		return fmt.Errorf("%w (make one with 'switchboard tls ca create', or pass --ca and --ca-key)", err)
	}
	certPEM, keyPEM, err := ca.Issue(certs.CertOptions{
		Name: *name, DNS: dns, IPs: addrs, Validity: validity,
		Client: *clientOnly, Server: *serverOnly,
	})
	if err != nil {
		return err
	}
	if err := certs.WritePair(certFile, keyFile, certPEM, keyPEM, *force); err != nil {
		return forceHint(err)
	}
	fmt.Fprintf(stdout, "wrote %s\nwrote %s\n", certFile, keyFile)
	return nil
}

// parseFlags parses a subcommand's flags, which take no arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

// daysFlag checks --days and returns it as a lifetime.
func daysFlag(days int) (time.Duration, error) {
	if days < 1 || days > maxDays {
		return 0, usageError{fmt.Errorf("--days %d: must be between 1 and %d", days, maxDays)}
	}
	return time.Duration(days) * 24 * time.Hour, nil
}

// samePath reports whether two paths name the same file, as far as their
// text shows.
func samePath(a, b string) bool {
	a, errA := filepath.Abs(a)
	b, errB := filepath.Abs(b)
	return errA == nil && errB == nil && a == b
}

// forceHint adds how to replace a file to an error about one that exists.
func forceHint(err error) error {
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%w (pass --force to replace it)", err)
	}
	return err
}

// stringList is a repeatable string flag.
type stringList []string

// String returns the values, comma-separated.
func (l *stringList) String() string { return strings.Join(*l, ",") }

// Set adds one value.
func (l *stringList) Set(s string) error {
	*l = append(*l, s)
	return nil
}
