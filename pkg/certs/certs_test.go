package certs_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/certs"
)

func newCA(t *testing.T, name string) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA(certs.CAOptions{CommonName: name})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", certPEM)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// near reports whether got is within a minute of want.
func near(got, want time.Time) bool { return got.Sub(want).Abs() < time.Minute }

func TestCertNewCA(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		name     string
		opts     certs.CAOptions
		wantCN   string
		lifetime time.Duration
	}{
		{"defaults", certs.CAOptions{}, "Switchboard CA", 1825 * day},
		{"custom", certs.CAOptions{CommonName: "Test CA", Validity: 30 * day}, "Test CA", 30 * day},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca, err := certs.NewCA(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			c := ca.Certificate()
			if !c.Equal(parseCert(t, ca.CertPEM())) {
				t.Error("CertPEM is not the certificate")
			}
			now := time.Now()
			switch {
			case c.Subject.CommonName != tc.wantCN:
				t.Errorf("CommonName %q, want %q", c.Subject.CommonName, tc.wantCN)
			case !near(c.NotAfter, now.Add(tc.lifetime)):
				t.Errorf("NotAfter %v, want about %v", c.NotAfter, now.Add(tc.lifetime))
			case !near(c.NotBefore, now.Add(-time.Minute)) || !c.NotBefore.Before(now.Add(-30*time.Second)):
				t.Errorf("NotBefore %v, want a minute before %v", c.NotBefore, now)
			case !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero:
				t.Errorf("constraints: IsCA %v valid %v MaxPathLen %d zero %v", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
			case c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign:
				t.Errorf("KeyUsage %b", c.KeyUsage)
			case len(c.SubjectKeyId) != 20:
				t.Errorf("SubjectKeyId %x", c.SubjectKeyId)
			case c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128:
				t.Errorf("serial %v", c.SerialNumber)
			}
			if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
				t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
			}
			if err := c.CheckSignatureFrom(c); err != nil {
				t.Errorf("not self-signed: %v", err)
			}
		})
	}
	if _, err := certs.NewCA(certs.CAOptions{Validity: -time.Hour}); err == nil {
		t.Error("negative validity accepted")
	}
}

func TestCertIssue(t *testing.T) {
	ca := newCA(t, "Test CA")
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	server, client := x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth
	for _, tc := range []struct {
		name      string
		opts      certs.CertOptions
		wantDNS   []string
		wantIPs   []string
		wantUsage []x509.ExtKeyUsage
		lifetime  time.Duration
	}{
		{"defaults", certs.CertOptions{Name: "registry"},
			[]string{"registry"}, nil, []x509.ExtKeyUsage{server, client}, 365 * 24 * time.Hour},
		{"sans", certs.CertOptions{Name: "registry", DNS: []string{"localhost", "Registry"}, IPs: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}},
			[]string{"localhost", "Registry"}, []string{"127.0.0.1", "::1"}, []x509.ExtKeyUsage{server, client}, 365 * 24 * time.Hour},
		{"name not a host name", certs.CertOptions{Name: "ops team", DNS: []string{"*.service.switchboard"}},
			[]string{"*.service.switchboard"}, nil, []x509.ExtKeyUsage{server, client}, 365 * 24 * time.Hour},
		{"client only", certs.CertOptions{Name: "balancer", Client: true, Validity: time.Hour},
			[]string{"balancer"}, nil, []x509.ExtKeyUsage{client}, time.Hour},
		{"server only", certs.CertOptions{Name: "edge", Server: true},
			[]string{"edge"}, nil, []x509.ExtKeyUsage{server}, 365 * 24 * time.Hour},
		{"both named", certs.CertOptions{Name: "edge", Server: true, Client: true},
			[]string{"edge"}, nil, []x509.ExtKeyUsage{server, client}, 365 * 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certPEM, keyPEM, err := ca.Issue(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			c := parseCert(t, certPEM)
			if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "PRIVATE KEY" {
				t.Fatalf("key is not PKCS #8 PEM: %q", keyPEM)
			}
			now := time.Now()
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			switch {
			case c.Subject.CommonName != tc.opts.Name:
				t.Errorf("CommonName %q", c.Subject.CommonName)
			case !slices.Equal(c.DNSNames, tc.wantDNS):
				t.Errorf("DNS names %q, want %q", c.DNSNames, tc.wantDNS)
			case !slices.Equal(ips, tc.wantIPs):
				t.Errorf("IPs %q, want %q", ips, tc.wantIPs)
			case !slices.Equal(c.ExtKeyUsage, tc.wantUsage):
				t.Errorf("ExtKeyUsage %v, want %v", c.ExtKeyUsage, tc.wantUsage)
			case c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature:
				t.Errorf("IsCA %v KeyUsage %b", c.IsCA, c.KeyUsage)
			case !near(c.NotAfter, now.Add(tc.lifetime)):
				t.Errorf("NotAfter %v, want about %v", c.NotAfter, now.Add(tc.lifetime))
			case !near(c.NotBefore, now.Add(-time.Minute)) || !c.NotBefore.Before(now.Add(-30*time.Second)):
				t.Errorf("NotBefore %v, want a minute before now", c.NotBefore)
			case string(c.AuthorityKeyId) != string(ca.Certificate().SubjectKeyId):
				t.Errorf("AuthorityKeyId %x, want %x", c.AuthorityKeyId, ca.Certificate().SubjectKeyId)
			case c.SerialNumber.BitLen() > 128:
				t.Errorf("serial %v", c.SerialNumber)
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: tc.wantUsage}); err != nil {
				t.Errorf("does not chain to the CA: %v", err)
			}
		})
	}
}

func TestCertIssueRefuses(t *testing.T) {
	ca, err := certs.NewCA(certs.CAOptions{Validity: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts certs.CertOptions
		want string
	}{
		{"no name", certs.CertOptions{}, "needs a name"},
		{"bad DNS", certs.CertOptions{Name: "a", DNS: []string{"bad name"}}, `"bad name"`},
		{"IP as DNS", certs.CertOptions{Name: "a", DNS: []string{"10.0.0.1"}}, `"10.0.0.1"`},
		{"negative validity", certs.CertOptions{Name: "a", Validity: -time.Hour}, "negative"},
		{"outlives the CA", certs.CertOptions{Name: "a"}, "outlive its CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ca.Issue(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestCertValidDNSName(t *testing.T) {
	for name, want := range map[string]bool{
		"registry": true, "web.service.switchboard": true, "*.switchboard": true, "a-b.c1": true, "UPPER.case": true,
		"": false, "-a": false, "a-": false, "a..b": false, "a b": false, "a/b": false, "a_b": false,
		"127.0.0.1": false, "::1": false, "*": false, "a.*.b": false, strings.Repeat("a", 64): false,
	} {
		if got := certs.ValidDNSName(name); got != want {
			t.Errorf("ValidDNSName(%q) = %v, want %v", name, got, want)
		}
	}
}

func mode(t *testing.T, name string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestCertWritePair(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "tls")
	certFile, keyFile := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a-key.pem")
	if err := certs.WritePair(certFile, keyFile, []byte("cert 1"), []byte("key 1"), false); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{certFile, keyFile} {
		if m := mode(t, f); m != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, m)
		}
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("%s has mode %v, want 0700", dir, m)
	}

	// Refused: the error names the existing file and nothing is written.
	other := filepath.Join(dir, "b.pem")
	err := certs.WritePair(other, keyFile, []byte("cert 2"), []byte("key 2"), false)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), keyFile) {
		t.Errorf("error %v, want one wrapping fs.ErrExist naming %s", err, keyFile)
	}
	if _, err := os.Stat(other); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s was written: %v", other, err)
	}

	// Overwritten: replaced in full, still 0600, no temporary files left.
	os.Chmod(certFile, 0o644)
	if err := certs.WritePair(certFile, keyFile, []byte("cert 3"), []byte("key 3"), true); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{certFile: "cert 3", keyFile: "key 3"} {
		if b, _ := os.ReadFile(f); string(b) != want {
			t.Errorf("%s holds %q, want %q", f, b, want)
		}
		if m := mode(t, f); m != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, m)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("directory holds %d files, want 2", len(ents))
	}
	if err := certs.WritePair(certFile, certFile, nil, nil, true); err == nil {
		t.Error("same file for certificate and key accepted")
	}
}

func TestCertCAFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "Test CA")
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := ca.WriteFiles(certFile, keyFile, false); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{certFile, keyFile} {
		if m := mode(t, f); m != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, m)
		}
	}
	if err := ca.WriteFiles(certFile, keyFile, false); !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), certFile) {
		t.Errorf("second write: %v, want an error naming %s", err, certFile)
	}
	if err := ca.WriteFiles(certFile, keyFile, true); err != nil {
		t.Errorf("overwrite: %v", err)
	}

	loaded, err := certs.LoadCA(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Certificate().Equal(ca.Certificate()) {
		t.Error("loaded a different certificate")
	}
	certPEM, _, err := loaded.Issue(certs.CertOptions{Name: "registry"})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	if _, err := parseCert(t, certPEM).Verify(x509.VerifyOptions{Roots: roots, DNSName: "registry"}); err != nil {
		t.Errorf("certificate from the loaded CA: %v", err)
	}

	// A SEC 1 key, as openssl writes it (with its EC PARAMETERS block).
	b, _ := os.ReadFile(keyFile)
	blk, _ := pem.Decode(b)
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	sec1File := filepath.Join(dir, "ca-key-sec1.pem")
	os.WriteFile(sec1File, append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...), 0o600)
	if _, err := certs.LoadCA(certFile, sec1File); err != nil {
		t.Errorf("SEC 1 key: %v", err)
	}

	leafFile, leafKey := filepath.Join(dir, "leaf.pem"), filepath.Join(dir, "leaf-key.pem")
	leafPEM, leafKeyPEM, _ := ca.Issue(certs.CertOptions{Name: "leaf"})
	certs.WritePair(leafFile, leafKey, leafPEM, leafKeyPEM, false)
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not PEM"), 0o600)
	for _, tc := range []struct {
		name, cert, key string
		want            []string
	}{
		{"missing cert", filepath.Join(dir, "none.pem"), keyFile, []string{"none.pem"}},
		{"garbage cert", garbage, keyFile, []string{garbage, "no PEM CERTIFICATE"}},
		{"garbage key", certFile, garbage, []string{garbage, "no PEM private key"}},
		{"not a CA", leafFile, leafKey, []string{leafFile, "not a CA"}},
		{"key of another", certFile, leafKey, []string{leafKey, certFile, "does not match"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := certs.LoadCA(tc.cert, tc.key)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v, want one containing %q", err, w)
				}
			}
		})
	}
}
