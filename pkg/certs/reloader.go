package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// checkInterval bounds how often a Reloader looks at its files.
const checkInterval = time.Second

// Reloader serves a certificate with its key, and a CA bundle, from files,
// and follows changes to them without a restart. It needs no goroutine: when
// a handshake uses it, and its files were last looked at a second or more
// ago, it stats them, and reloads them when a size, a modification time or
// the file itself (a rename over it) changed.
//
// A reload reads every file, checks that the key matches the certificate,
// and only then swaps the new material in, at once; a failed reload keeps
// the old material and is reported by LastError, until a later change to
// the files loads. So rotating a pair never serves a certificate with the
// wrong key, whatever order the files are replaced in.
//
// The CA file may hold several certificates (a bundle). Rotating the CA
// relies on that: trust the old and the new CA, reissue the leaves, then
// drop the old CA.
//
// A Reloader may have no certificate (certFile and keyFile both empty): a
// client that presents none and only verifies servers against the CA.
type Reloader struct {
	certFile, keyFile, caFile string
	interval                  time.Duration

	cur   atomic.Pointer[material]
	epoch time.Time    // made; times below are since then, on the monotonic clock
	next  atomic.Int64 // when (a time.Duration since epoch) to look at the files again

	mu     sync.Mutex // held while looking; guards stamps and err
	stamps [3]os.FileInfo
	err    error
}

// material is one consistent set of loaded files, never modified.
type material struct {
	cert *tls.Certificate // nil: no certificate configured
	pool *x509.CertPool   // nil: no CA file configured
}

var errNoCertificate = errors.New("certs: no certificate configured (the Reloader has only a CA file)")

// NewReloader loads a certificate, its key and a CA bundle (PEM files) at
// once, and returns a Reloader that serves them; an error names the file at
// fault. certFile and keyFile go together, and may both be empty for a
// client that presents no certificate; caFile may be empty: servers then ask
// for no client certificate, clients verify servers against the system's
// roots. At least one of the pair and the CA file is needed.
func NewReloader(certFile, keyFile, caFile string) (*Reloader, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("certs: a certificate and its key go together (certificate %q, key %q)", certFile, keyFile)
	}
	if certFile == "" && caFile == "" {
		return nil, errors.New("certs: nothing to load: neither a certificate nor a CA file")
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, caFile: caFile, interval: checkInterval, epoch: time.Now()}
	stamps, err := r.stat()
	if err != nil {
		return nil, err
	}
	m, err := r.load()
	if err != nil {
		return nil, err
	}
	r.stamps = stamps
	r.cur.Store(m)
	r.next.Store(int64(time.Since(r.epoch) + r.interval))
	return r, nil
}

// HasCertificate reports whether the Reloader serves a certificate, that
// is, whether it was made with a certificate and key.
func (r *Reloader) HasCertificate() bool { return r.certFile != "" }

// LastError returns why the last reload failed, or nil when it succeeded
// (or none was needed yet). While it is non-nil the previous material is
// still served.
func (r *Reloader) LastError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// ServerConfig returns a server TLS configuration (TLS 1.2 or later; 1.3
// is preferred) that presents the current certificate. With a CA file,
// client certificates are verified against the current CA bundle, and
// required when requireClientCert is set; without one, none is asked for.
//
// Each handshake uses a copy of the returned configuration, made (through
// GetConfigForClient) with the certificate and CA bundle current at that
// moment, so settings made on the returned configuration before its first
// use apply. A resumed session is accepted only if its client certificate
// still chains to the current bundle (crypto/tls checks this).
func (r *Reloader) ServerConfig(requireClientCert bool) *tls.Config {
	auth := tls.NoClientCert
	if r.caFile != "" {
		auth = tls.VerifyClientCertIfGiven
		if requireClientCert {
			auth = tls.RequireAndVerifyClientCert
		}
	}
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: auth,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.refresh().certificate()
		},
	}
	type snapshot struct {
		m   *material
		cfg *tls.Config
	}
	var last atomic.Pointer[snapshot]
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		m := r.refresh()
		if s := last.Load(); s != nil && s.m == m {
			return s.cfg, nil
		}
		cfg := base.Clone()
		cfg.GetConfigForClient = nil
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return m.certificate() }
		cfg.ClientCAs = m.pool
		last.Store(&snapshot{m, cfg})
		return cfg, nil
	}
	return base
}

// ClientConfig returns a client TLS configuration (TLS 1.2 or later) that
// presents the current certificate, if any, when a server asks for one, and
// verifies the server's certificate for serverName: a host name, or an IP
// address, matched against the certificate's DNS or IP names. An empty
// serverName means the name the dialer puts in the configuration's
// ServerName (tls.Dial and gRPC set it from the address they dial) — but an
// IP address never reaches the verification that way, since TLS does not
// send it as the server name: to reach a server by IP, pass the IP.
//
// With a CA file, the server must chain to the current CA bundle. The
// standard library reads RootCAs once per configuration, with no callback
// to choose them per handshake, so a bundle that changes on disk could not
// take effect on a configuration already handed to a dialer. Instead the
// configuration sets InsecureSkipVerify, which only turns off the built-in
// verification, and does the same verification itself in VerifyConnection,
// which runs on every handshake (resumed ones too): the chain against the
// current bundle, the server-authentication key usage and the name. Without
// a CA file the standard verification against the system's roots is used.
func (r *Reloader) ClientConfig(serverName string) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if r.certFile != "" {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return r.refresh().certificate()
		}
	}
	if r.caFile == "" {
		return cfg
	}
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		name := serverName
		if name == "" {
			name = cs.ServerName
		}
		if name == "" {
			return errors.New("certs: no server name to verify the server's certificate against: pass the host or IP address to ClientConfig")
		}
		certs := cs.PeerCertificates
		if len(certs) == 0 {
			return errors.New("certs: the server sent no certificate")
		}
		opts := x509.VerifyOptions{
			Roots:         r.refresh().pool,
			Intermediates: x509.NewCertPool(),
			DNSName:       name,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
		if _, err := certs[0].Verify(opts); err != nil {
			return fmt.Errorf("certs: server certificate %q: %w", certs[0].Subject.CommonName, err)
		}
		return nil
	}
	return cfg
}

// PeerNames returns the names of the verified peer certificate: its
// CommonName, then its DNS names, without repeats. These are the
// identities the ACL matches. It returns nil when no chain was verified:
// when the peer sent no certificate, or on the client side of ClientConfig
// with a CA file, where the verification is done in VerifyConnection and
// the connection state records no verified chain.
func PeerNames(cs tls.ConnectionState) []string {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil
	}
	leaf := cs.VerifiedChains[0][0]
	names := make([]string, 0, 1+len(leaf.DNSNames))
	if cn := leaf.Subject.CommonName; cn != "" {
		names = append(names, cn)
	}
	for _, d := range leaf.DNSNames {
		if !slices.Contains(names, d) {
			names = append(names, d)
		}
	}
	return names
}

func (m *material) certificate() (*tls.Certificate, error) {
	if m.cert == nil {
		return nil, errNoCertificate
	}
	return m.cert, nil
}

// refresh looks at the files if the interval has passed since it last did,
// reloads them if they changed, and returns the current material. It never
// waits for another goroutine's look: that one serves the material it had.
func (r *Reloader) refresh() *material {
	now := int64(time.Since(r.epoch))
	if now < r.next.Load() || !r.mu.TryLock() {
		return r.cur.Load()
	}
	defer r.mu.Unlock()
	if now < r.next.Load() { // another goroutine just looked
		return r.cur.Load()
	}
	r.next.Store(now + int64(r.interval))
	stamps, err := r.stat()
	if err != nil {
		r.err = err // a file is missing, perhaps mid-rotation: look again later
		return r.cur.Load()
	}
	if sameFiles(stamps, r.stamps) {
		return r.cur.Load()
	}
	// Stat before reading: whatever is read is at least as new as the
	// stamps, so a change made in between is seen at the next look.
	r.stamps = stamps
	m, err := r.load()
	if err != nil {
		r.err = err
		return r.cur.Load()
	}
	r.err = nil
	r.cur.Store(m)
	return m
}

// stat returns the file information of the certificate, key and CA files
// (nil for an unused one).
func (r *Reloader) stat() ([3]os.FileInfo, error) {
	var st [3]os.FileInfo
	for i, f := range [3]string{r.certFile, r.keyFile, r.caFile} {
		if f == "" {
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			return st, fmt.Errorf("certs: %w", err)
		}
		st[i] = fi
	}
	return st, nil
}

// sameFiles reports whether two stats of the files show no change.
func sameFiles(a, b [3]os.FileInfo) bool {
	for i := range a {
		if a[i] == nil || b[i] == nil {
			if a[i] != b[i] {
				return false
			}
			continue
		}
		if a[i].Size() != b[i].Size() || !a[i].ModTime().Equal(b[i].ModTime()) || !os.SameFile(a[i], b[i]) {
			return false
		}
	}
	return true
}

// load reads every file into new material.
func (r *Reloader) load() (*material, error) {
	m := new(material)
	if r.certFile != "" {
		chain, _, err := readCertificates(r.certFile)
		if err != nil {
			return nil, err
		}
		key, err := readKey(r.keyFile)
		if err != nil {
			return nil, err
		}
		if err := keyMatches(chain[0], key); err != nil {
			return nil, fmt.Errorf("certs: key %s does not match certificate %s: %w", r.keyFile, r.certFile, err)
		}
		m.cert = &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
		for _, c := range chain {
			m.cert.Certificate = append(m.cert.Certificate, c.Raw)
		}
	}
	if r.caFile != "" {
		cas, _, err := readCertificates(r.caFile)
		if err != nil {
			return nil, err
		}
		m.pool = x509.NewCertPool()
		for _, c := range cas {
			m.pool.AddCert(c)
		}
	}
	return m, nil
}
