package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// switchboard runs the CLI and returns its exit code and output.
func switchboard(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// readCert parses the one certificate of a PEM file and checks its mode.
func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	for _, f := range []string{file, strings.TrimSuffix(file, ".pem") + "-key.pem"} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, m)
		}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return c
}

func TestTLSCommands(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := switchboard(t, "tls", "ca", "create", "--dir", dir, "--name", "Test CA")
	if code != 0 {
		t.Fatalf("ca create: exit %d: %s", code, errOut)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if want := "wrote " + caFile + "\nwrote " + filepath.Join(dir, "ca-key.pem") + "\n"; out != want {
		t.Errorf("ca create printed %q, want %q", out, want)
	}
	ca := readCert(t, caFile)
	if ca.Subject.CommonName != "Test CA" || !ca.IsCA || ca.NotAfter.Sub(time.Now().Add(1825*24*time.Hour)).Abs() > time.Minute {
		t.Errorf("CA %q IsCA %v valid until %v", ca.Subject.CommonName, ca.IsCA, ca.NotAfter)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	// The CA is found by its default paths in --dir, or by --ca/--ca-key.
	other := t.TempDir()
	server, client := x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth
	for _, tc := range []struct {
		name      string
		args      []string
		file      string
		wantDNS   []string
		wantIPs   []string
		wantUsage []x509.ExtKeyUsage
		days      int
	}{
		{"server and client", []string{"--name", "registry", "--dns", "registry", "--dns", "localhost", "--ip", "127.0.0.1", "--ip", "::1", "--dir", dir},
			filepath.Join(dir, "registry.pem"), []string{"registry", "localhost"}, []string{"127.0.0.1", "::1"}, []x509.ExtKeyUsage{server, client}, 365},
		{"client only", []string{"--name", "balancer", "--client-only", "--days", "7", "--dir", dir},
			filepath.Join(dir, "balancer.pem"), []string{"balancer"}, nil, []x509.ExtKeyUsage{client}, 7},
		{"server only, CA elsewhere", []string{"--name", "edge", "--server-only", "--dir", other, "--ca", caFile, "--ca-key", filepath.Join(dir, "ca-key.pem")},
			filepath.Join(other, "edge.pem"), []string{"edge"}, nil, []x509.ExtKeyUsage{server}, 365},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := switchboard(t, append([]string{"tls", "cert", "create"}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if !strings.Contains(out, tc.file) {
				t.Errorf("output %q does not name %s", out, tc.file)
			}
			c := readCert(t, tc.file)
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(c.DNSNames, tc.wantDNS) || !slices.Equal(ips, tc.wantIPs) || !slices.Equal(c.ExtKeyUsage, tc.wantUsage) {
				t.Errorf("DNS %q IPs %q usage %v; want %q %q %v", c.DNSNames, ips, c.ExtKeyUsage, tc.wantDNS, tc.wantIPs, tc.wantUsage)
			}
			if d := c.NotAfter.Sub(time.Now().Add(time.Duration(tc.days) * 24 * time.Hour)).Abs(); d > time.Minute {
				t.Errorf("valid until %v, want %d days from now", c.NotAfter, tc.days)
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: tc.wantUsage}); err != nil {
				t.Errorf("does not chain to the CA: %v", err)
			}
			if openssl, err := exec.LookPath("openssl"); err == nil {
				purpose := "sslclient"
				if slices.Contains(tc.wantUsage, server) {
					purpose = "sslserver"
				}
				cmd := exec.Command(openssl, "verify", "-CAfile", caFile, "-purpose", purpose, tc.file)
				if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "OK") {
					t.Errorf("openssl verify: %v: %s", err, out)
				}
				key := strings.TrimSuffix(tc.file, ".pem") + "-key.pem"
				if out, err := exec.Command(openssl, "pkey", "-in", key, "-noout").CombinedOutput(); err != nil {
					t.Errorf("openssl pkey %s: %v: %s", key, err, out)
				}
			}
		})
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Log("openssl not found: its checks were skipped")
	}
}

func TestTLSRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	steps := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"tls", "ca", "create", "--dir", dir}, 0, ""},
		{[]string{"tls", "ca", "create", "--dir", dir}, 1, filepath.Join(dir, "ca.pem")},
		{[]string{"tls", "ca", "create", "--dir", dir, "--force"}, 0, ""},
		{[]string{"tls", "cert", "create", "--name", "registry", "--dir", dir}, 0, ""},
		{[]string{"tls", "cert", "create", "--name", "registry", "--dir", dir}, 1, filepath.Join(dir, "registry")},
		{[]string{"tls", "cert", "create", "--name", "registry", "--dir", dir, "--force"}, 0, ""},
	}
	for i, s := range steps {
		code, _, errOut := switchboard(t, s.args...)
		if code != s.code || !strings.Contains(errOut, s.want) || (code == 1 && !strings.Contains(errOut, "--force")) {
			t.Fatalf("step %d %q: exit %d, stderr %q; want %d naming %q and --force", i, s.args, code, errOut, s.code, s.want)
		}
	}
}

func TestTLSUsageErrors(t *testing.T) {
	dir := t.TempDir()
	if code, _, errOut := switchboard(t, "tls", "ca", "create", "--dir", dir); code != 0 {
		t.Fatalf("ca create: %s", errOut)
	}
	cert := func(args ...string) []string {
		return append([]string{"tls", "cert", "create", "--dir", dir}, args...)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no subcommand", []string{"tls"}, 2, "subcommand is required"},
		{"unknown subcommand", []string{"tls", "ca", "delete"}, 2, `"ca delete"`},
		{"help", []string{"tls", "-h"}, 0, ""},
		{"missing name", cert(), 2, "--name is required"},
		{"name with a slash", cert("--name", "../registry"), 2, "--name"},
		{"name with a backslash", cert("--name", `a\b`), 2, "--name"},
		{"name of the CA's files", cert("--name", "ca", "--force"), 2, "CA's own file"},
		{"bad IP", cert("--name", "registry", "--ip", "300.1.1.1"), 2, `--ip "300.1.1.1"`},
		{"bad DNS name", cert("--name", "registry", "--dns", "bad name"), 2, `--dns "bad name"`},
		{"both only flags", cert("--name", "registry", "--client-only", "--server-only"), 2, "--client-only and --server-only"},
		{"zero days", cert("--name", "registry", "--days", "0"), 2, "--days 0"},
		{"unknown flag", cert("--name", "registry", "--bogus"), 2, "bogus"},
		{"extra argument", cert("--name", "registry", "extra"), 2, `"extra"`},
		{"CA days", []string{"tls", "ca", "create", "--dir", dir, "--days", "-1"}, 2, "--days -1"},
		{"empty CA name", []string{"tls", "ca", "create", "--dir", dir, "--name", ""}, 2, "--name"},
		{"no CA", cert("--name", "registry", "--ca", filepath.Join(dir, "none.pem")), 1, "none.pem"},
		{"longer than the CA", cert("--name", "registry", "--days", "2000"), 1, "outlive its CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := switchboard(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d mentioning %q", code, errOut, tc.code, tc.want)
			}
		})
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("refused commands wrote files: %d in %s, want the CA's 2", len(ents), dir)
	}
}
