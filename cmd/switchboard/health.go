package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/switchboard-net/switchboard/pkg/certs"
)

// runHealth checks one URL, for container healthchecks in images that have
// no shell or curl: exit 0 when it answers 200 within the timeout.
func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the answer")
	// An admin port with --tls-cert serves https: the healthcheck of a
	// locked stack verifies it against the stack's CA.
	caFile := fs.String("cacert", "", "CA bundle (PEM) to verify an https URL's server against (default: the system's roots)")
	certFile := fs.String("cert", "", "client certificate (PEM) to present to an https URL")
	keyFile := fs.String("key", "", "key (PEM) of --cert")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: switchboard health [--timeout D] [--cacert FILE] [--cert FILE --key FILE] URL   (exit 0 when URL answers 200)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() != 1 {
		return usageError{errors.New("exactly one URL is required")}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fs.Arg(0), nil)
	if err != nil {
		return usageError{fmt.Errorf("URL: %w", err)}
	}
	client := http.DefaultClient
	if *caFile != "" || *certFile != "" || *keyFile != "" {
		r, err := certs.NewReloader(*certFile, *keyFile, *caFile)
		if err != nil {
			return usageError{err}
		}
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: r.ClientConfig(req.URL.Hostname())}}
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s %s", fs.Arg(0), resp.Status, body)
	}
	fmt.Fprintf(stdout, "%s", body)
	return nil
}
