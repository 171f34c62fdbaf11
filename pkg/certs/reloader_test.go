package certs_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/certs"
)

// pki is a test CA with files in a directory.
type pki struct {
	t   *testing.T
	dir string
}

// pair issues a certificate from ca and writes it (replacing any) as
// dir/name.pem and dir/name-key.pem.
func (p pki) pair(ca *certs.CA, name string, opts certs.CertOptions) (certFile, keyFile string) {
	p.t.Helper()
	opts.Name = name
	certPEM, keyPEM, err := ca.Issue(opts)
	if err != nil {
		p.t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+"-key.pem")
	if err := certs.WritePair(certFile, keyFile, certPEM, keyPEM, true); err != nil {
		p.t.Fatal(err)
	}
	return certFile, keyFile
}

// bundle writes the CAs' certificates to dir/name in place, and moves its
// modification time on, as a hand edit would.
func (p pki) bundle(name string, cas ...*certs.CA) string {
	p.t.Helper()
	var b bytes.Buffer
	for _, ca := range cas {
		b.Write(ca.CertPEM())
	}
	f := filepath.Join(p.dir, name)
	if err := os.WriteFile(f, b.Bytes(), 0o600); err != nil {
		p.t.Fatal(err)
	}
	bump(p.t, f)
	return f
}

var mtime = time.Now()

// bump gives f a modification time unlike any before, so that a change is
// seen even where timestamps are coarse.
func bump(t *testing.T, f string) {
	t.Helper()
	mtime = mtime.Add(time.Second)
	if err := os.Chtimes(f, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func reloader(t *testing.T, certFile, keyFile, caFile string) *certs.Reloader {
	t.Helper()
	r, err := certs.NewReloader(certFile, keyFile, caFile)
	if err != nil {
		t.Fatal(err)
	}
	certs.SetCheckInterval(r, 0)
	return r
}

// result is one side of a handshake.
type result struct {
	state tls.ConnectionState
	err   error
}

// handshake connects a client and a server over a pipe; on success the
// server writes a byte the client reads, so that a refusal sent by the
// server after the client's half of a TLS 1.3 handshake is seen too.
func handshake(t *testing.T, server, client *tls.Config) (srv, cli result) {
	t.Helper()
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	deadline := time.Now().Add(10 * time.Second)
	sc.SetDeadline(deadline)
	cc.SetDeadline(deadline)
	done := make(chan result, 1)
	go func() {
		s := tls.Server(sc, server)
		err := s.Handshake()
		if err == nil {
			_, err = s.Write([]byte{1})
		}
		done <- result{s.ConnectionState(), err}
	}()
	c := tls.Client(cc, client)
	err := c.Handshake()
	if err == nil {
		_, err = io.ReadFull(c, make([]byte, 1))
	}
	cli = result{c.ConnectionState(), err}
	cc.Close()
	return <-done, cli
}

// withName is a client configuration with ServerName set, as a dialer does.
func withName(c *tls.Config, name string) *tls.Config {
	c = c.Clone()
	c.ServerName = name
	return c
}

func TestTLSHandshake(t *testing.T) {
	p := pki{t, t.TempDir()}
	caA, caB := newCA(t, "CA A"), newCA(t, "CA B")
	caFile := p.bundle("ca.pem", caA)
	local := certs.CertOptions{DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}

	srvCert, srvKey := p.pair(caA, "registry", local)
	srvA := reloader(t, srvCert, srvKey, caFile)
	srvNoCA := reloader(t, srvCert, srvKey, "")
	impCert, impKey := p.pair(caB, "impostor", local)
	srvB := reloader(t, impCert, impKey, caFile)
	cliOnlyCert, cliOnlyKey := p.pair(caA, "balancer", certs.CertOptions{Client: true})
	srvClientOnly := reloader(t, cliOnlyCert, cliOnlyKey, caFile)

	cliA := reloader(t, cliOnlyCert, cliOnlyKey, caFile)
	strCert, strKey := p.pair(caB, "stranger", certs.CertOptions{Client: true})
	cliB := reloader(t, strCert, strKey, caFile)
	cliNoCert := reloader(t, "", "", caFile)

	for _, tc := range []struct {
		name      string
		server    *tls.Config
		client    *tls.Config
		refusedBy string // "", "server" or "client"
		errHas    string
		wantNames []string // PeerNames on the server
	}{
		{name: "mutual", server: srvA.ServerConfig(true), client: cliA.ClientConfig("registry"), wantNames: []string{"balancer"}},
		{name: "server name from the dialer", server: srvA.ServerConfig(true), client: withName(cliA.ClientConfig(""), "localhost"), wantNames: []string{"balancer"}},
		{name: "server by IP", server: srvA.ServerConfig(true), client: cliA.ClientConfig("127.0.0.1"), wantNames: []string{"balancer"}},
		{name: "optional client cert given", server: srvA.ServerConfig(false), client: cliA.ClientConfig("registry"), wantNames: []string{"balancer"}},
		{name: "optional client cert absent", server: srvA.ServerConfig(false), client: cliNoCert.ClientConfig("registry")},
		{name: "no CA file asks no client cert", server: srvNoCA.ServerConfig(true), client: cliA.ClientConfig("registry")},
		{name: "client cert required", server: srvA.ServerConfig(true), client: cliNoCert.ClientConfig("registry"),
			refusedBy: "server", errHas: "certificate"},
		{name: "client cert from another CA", server: srvA.ServerConfig(true), client: cliB.ClientConfig("registry"),
			refusedBy: "server", errHas: "unknown authority"},
		{name: "client cert from another CA, optional", server: srvA.ServerConfig(false), client: cliB.ClientConfig("registry"),
			refusedBy: "server", errHas: "unknown authority"},
		{name: "server cert from another CA", server: srvB.ServerConfig(true), client: cliA.ClientConfig("localhost"),
			refusedBy: "client", errHas: "unknown authority"},
		{name: "wrong server name", server: srvA.ServerConfig(true), client: cliA.ClientConfig("balancer"),
			refusedBy: "client", errHas: "balancer"},
		{name: "wrong server IP", server: srvA.ServerConfig(true), client: cliA.ClientConfig("10.0.0.1"),
			refusedBy: "client", errHas: "10.0.0.1"},
		{name: "no server name", server: srvA.ServerConfig(true), client: cliA.ClientConfig(""),
			refusedBy: "client", errHas: "no server name"},
		{name: "IP from the dialer is not sent", server: srvA.ServerConfig(true), client: withName(cliA.ClientConfig(""), "127.0.0.1"),
			refusedBy: "client", errHas: "no server name"},
		{name: "client-only cert on a server", server: srvClientOnly.ServerConfig(true), client: cliA.ClientConfig("balancer"),
			refusedBy: "client", errHas: "key usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, cli := handshake(t, tc.server, tc.client)
			switch tc.refusedBy {
			case "":
				if srv.err != nil || cli.err != nil {
					t.Fatalf("server: %v; client: %v", srv.err, cli.err)
				}
				if srv.state.Version != tls.VersionTLS13 {
					t.Errorf("version %x, want TLS 1.3", srv.state.Version)
				}
				if got := certs.PeerNames(srv.state); !slices.Equal(got, tc.wantNames) {
					t.Errorf("PeerNames %q, want %q", got, tc.wantNames)
				}
				if got := certs.PeerNames(cli.state); got != nil {
					t.Errorf("client-side PeerNames %q, want none (verified in VerifyConnection)", got)
				}
			case "server", "client":
				err := srv.err
				if tc.refusedBy == "client" {
					err = cli.err
				}
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Errorf("%s error %v, want one containing %q (other side: server %v, client %v)", tc.refusedBy, err, tc.errHas, srv.err, cli.err)
				}
			}
		})
	}
}

func TestTLSVersionFloor(t *testing.T) {
	p := pki{t, t.TempDir()}
	ca := newCA(t, "CA")
	c, k := p.pair(ca, "registry", certs.CertOptions{})
	r := reloader(t, c, k, p.bundle("ca.pem", ca))
	old := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	if srv, _ := handshake(t, r.ServerConfig(false), old); srv.err == nil || !strings.Contains(srv.err.Error(), "version") {
		t.Errorf("TLS 1.1: server error %v, want a refused version", srv.err)
	}
	tls12 := r.ClientConfig("registry").Clone()
	tls12.MaxVersion = tls.VersionTLS12
	if srv, cli := handshake(t, r.ServerConfig(true), tls12); srv.err != nil || cli.err != nil {
		t.Errorf("TLS 1.2: server %v, client %v", srv.err, cli.err)
	}
}

func serial(cs tls.ConnectionState) *big.Int {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	return cs.PeerCertificates[0].SerialNumber
}

func TestCertRotation(t *testing.T) {
	p := pki{t, t.TempDir()}
	caOld, caNew := newCA(t, "Old CA"), newCA(t, "New CA")
	caFile := p.bundle("ca.pem", caOld)
	srvCert, srvKey := p.pair(caOld, "registry", certs.CertOptions{})
	cliCert, cliKey := p.pair(caOld, "balancer", certs.CertOptions{Client: true})
	srv := reloader(t, srvCert, srvKey, caFile)
	cli := reloader(t, cliCert, cliKey, caFile)
	serverConfig, clientConfig := srv.ServerConfig(true), cli.ClientConfig("registry")

	// A client that keeps a certificate of the old CA, in files of its own.
	keep := pki{t, t.TempDir()}
	staleCert, staleKey := keep.pair(caOld, "stale", certs.CertOptions{Client: true})
	stale := reloader(t, staleCert, staleKey, keep.bundle("ca.pem", caOld, caNew))

	check := func(step string, wantServerCA, wantClientCA string) (srvSerial, cliSerial *big.Int) {
		t.Helper()
		s, c := handshake(t, serverConfig, clientConfig)
		if s.err != nil || c.err != nil {
			t.Fatalf("%s: server %v; client %v", step, s.err, c.err)
		}
		if got := s.state.VerifiedChains[0][1].Subject.CommonName; got != wantClientCA {
			t.Errorf("%s: client certificate from %q, want %q", step, got, wantClientCA)
		}
		if got := c.state.PeerCertificates[0].Issuer.CommonName; got != wantServerCA {
			t.Errorf("%s: server certificate from %q, want %q", step, got, wantServerCA)
		}
		if srv.LastError() != nil || cli.LastError() != nil {
			t.Errorf("%s: LastError server %v, client %v", step, srv.LastError(), cli.LastError())
		}
		return serial(c.state), serial(s.state)
	}
	s0, c0 := check("start", "Old CA", "Old CA")

	// Renew the leaves under the same CA.
	p.pair(caOld, "registry", certs.CertOptions{})
	p.pair(caOld, "balancer", certs.CertOptions{Client: true})
	s1, c1 := check("renewed", "Old CA", "Old CA")
	if s1.Cmp(s0) == 0 || c1.Cmp(c0) == 0 {
		t.Error("renewed certificates not picked up")
	}

	// Rotate the CA: trust both, reissue the leaves, drop the old one.
	p.bundle("ca.pem", caOld, caNew)
	check("both CAs trusted", "Old CA", "Old CA")
	p.pair(caNew, "registry", certs.CertOptions{})
	check("server reissued", "New CA", "Old CA")
	p.pair(caNew, "balancer", certs.CertOptions{Client: true})
	check("client reissued", "New CA", "New CA")
	if s, c := handshake(t, serverConfig, stale.ClientConfig("registry")); s.err != nil || c.err != nil {
		t.Errorf("old CA's client refused while both are trusted: server %v; client %v", s.err, c.err)
	}
	p.bundle("ca.pem", caNew)
	check("old CA dropped", "New CA", "New CA")
	if s, _ := handshake(t, serverConfig, stale.ClientConfig("registry")); s.err == nil || !strings.Contains(s.err.Error(), "unknown authority") {
		t.Errorf("old CA's client after the old CA was dropped: %v, want refused", s.err)
	}
}

func TestCertCheckInterval(t *testing.T) {
	p := pki{t, t.TempDir()}
	ca := newCA(t, "CA")
	caFile := p.bundle("ca.pem", ca)
	c, k := p.pair(ca, "registry", certs.CertOptions{})
	srv := reloader(t, c, k, caFile)
	certs.SetCheckInterval(srv, time.Hour)
	client := reloader(t, "", "", caFile).ClientConfig("registry")
	_, before := handshake(t, srv.ServerConfig(false), client)
	p.pair(ca, "registry", certs.CertOptions{})
	_, cached := handshake(t, srv.ServerConfig(false), client)
	certs.SetCheckInterval(srv, 0)
	_, after := handshake(t, srv.ServerConfig(false), client)
	if serial(cached.state).Cmp(serial(before.state)) != 0 {
		t.Error("files looked at again within the interval")
	}
	if serial(after.state).Cmp(serial(before.state)) == 0 {
		t.Error("changed files not picked up after the interval")
	}
}

// TestCertConcurrentReload rotates a pair while handshakes run: every one
// must complete, so no certificate was ever served with another's key.
func TestCertConcurrentReload(t *testing.T) {
	p := pki{t, t.TempDir()}
	ca := newCA(t, "CA")
	caFile := p.bundle("ca.pem", ca)
	c, k := p.pair(ca, "registry", certs.CertOptions{})
	srv := reloader(t, c, k, caFile)
	cc, ck := p.pair(ca, "balancer", certs.CertOptions{})
	server, client := srv.ServerConfig(true), reloader(t, cc, ck, caFile).ClientConfig("registry")

	var wg sync.WaitGroup
	errs := make(chan error, 4*10)
	for range 4 {
		wg.Go(func() {
			for range 10 {
				s, c := handshake(t, server, client)
				if s.err != nil || c.err != nil {
					errs <- fmt.Errorf("server %v; client %v", s.err, c.err)
				}
			}
		})
	}
	for range 5 {
		p.pair(ca, "registry", certs.CertOptions{})
		p.pair(ca, "balancer", certs.CertOptions{})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCertReloadFailureKeepsPair(t *testing.T) {
	ca, other := newCA(t, "CA"), newCA(t, "Other CA")
	for _, tc := range []struct {
		name   string
		damage func(p pki, certFile, keyFile, caFile string)
		want   func(certFile, keyFile, caFile string) []string
	}{
		{"garbage key",
			func(p pki, c, k, _ string) {
				os.WriteFile(k, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
				bump(t, k)
			},
			func(_, k, _ string) []string { return []string{k} }},
		{"empty key",
			func(p pki, c, k, _ string) { os.WriteFile(k, nil, 0o600); bump(t, k) },
			func(_, k, _ string) []string { return []string{k, "no PEM private key"} }},
		{"key of another certificate",
			func(p pki, c, k, _ string) {
				_, key, _ := ca.Issue(certs.CertOptions{Name: "x"})
				os.WriteFile(k, key, 0o600)
				bump(t, k)
			},
			func(c, k, _ string) []string { return []string{k, c, "does not match"} }},
		{"new certificate, old key",
			func(p pki, c, k, _ string) {
				cert, _, _ := ca.Issue(certs.CertOptions{Name: "registry"})
				os.WriteFile(c, cert, 0o600)
				bump(t, c)
			},
			func(c, k, _ string) []string { return []string{k, c, "does not match"} }},
		{"garbage certificate",
			func(p pki, c, k, _ string) { os.WriteFile(c, []byte("junk"), 0o600); bump(t, c) },
			func(c, _, _ string) []string { return []string{c, "no PEM CERTIFICATE"} }},
		{"CA file removed",
			func(p pki, _, _, ca string) { os.Remove(ca) },
			func(_, _, ca string) []string { return []string{ca} }},
		{"garbage CA file",
			func(p pki, _, _, ca string) {
				os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o600)
				bump(t, ca)
			},
			func(_, _, ca string) []string { return []string{ca, "certificate 1"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pki{t, t.TempDir()}
			caFile := p.bundle("ca.pem", ca)
			certFile, keyFile := p.pair(ca, "registry", certs.CertOptions{})
			cliCert, cliKey := p.pair(ca, "balancer", certs.CertOptions{})
			srv := reloader(t, certFile, keyFile, caFile)
			client := reloader(t, cliCert, cliKey, p.bundle("client-ca.pem", ca)).ClientConfig("registry")
			_, before := handshake(t, srv.ServerConfig(true), client)
			if before.err != nil {
				t.Fatal(before.err)
			}

			tc.damage(p, certFile, keyFile, caFile)
			s, c := handshake(t, srv.ServerConfig(true), client)
			if s.err != nil || c.err != nil {
				t.Fatalf("after a broken update: server %v; client %v", s.err, c.err)
			}
			if serial(c.state).Cmp(serial(before.state)) != 0 {
				t.Error("a different certificate was served")
			}
			err := srv.LastError()
			for _, w := range tc.want(certFile, keyFile, caFile) {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("LastError %v, want one containing %q", err, w)
				}
			}

			// Repaired: the new material is served and the error cleared.
			p.bundle("ca.pem", ca, other)
			p.pair(ca, "registry", certs.CertOptions{})
			_, c = handshake(t, srv.ServerConfig(true), client)
			if c.err != nil || serial(c.state).Cmp(serial(before.state)) == 0 || srv.LastError() != nil {
				t.Errorf("after repair: client %v, same serial %v, LastError %v",
					c.err, c.err == nil && serial(c.state).Cmp(serial(before.state)) == 0, srv.LastError())
			}
		})
	}
}

func TestCertNewReloaderErrors(t *testing.T) {
	p := pki{t, t.TempDir()}
	ca := newCA(t, "CA")
	caFile := p.bundle("ca.pem", ca)
	certFile, keyFile := p.pair(ca, "registry", certs.CertOptions{})
	otherCert, _ := p.pair(ca, "other", certs.CertOptions{})
	missing := filepath.Join(p.dir, "missing.pem")
	for _, tc := range []struct {
		name          string
		cert, key, ca string
		want          []string
	}{
		{"nothing", "", "", "", []string{"nothing to load"}},
		{"cert without key", certFile, "", caFile, []string{"go together"}},
		{"key without cert", "", keyFile, caFile, []string{"go together"}},
		{"missing cert", missing, keyFile, caFile, []string{missing}},
		{"missing key", certFile, missing, caFile, []string{missing}},
		{"missing CA", certFile, keyFile, missing, []string{missing}},
		{"CA file without certificates", certFile, keyFile, keyFile, []string{keyFile, "no PEM CERTIFICATE"}},
		{"mismatched pair", otherCert, keyFile, "", []string{keyFile, otherCert, "does not match"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := certs.NewReloader(tc.cert, tc.key, tc.ca)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v, want one containing %q", err, w)
				}
			}
		})
	}

	r, err := certs.NewReloader("", "", caFile)
	if err != nil {
		t.Fatal(err)
	}
	if r.HasCertificate() {
		t.Error("a CA-only Reloader has a certificate")
	}
	if _, cli := handshake(t, r.ServerConfig(false), r.ClientConfig("registry")); cli.err == nil {
		t.Error("a server without a certificate completed a handshake")
	}
}
