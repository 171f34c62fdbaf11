// Package certs makes and serves the certificates of Switchboard's mutual
// TLS, in the spirit of `consul tls`: a private CA (NewCA, LoadCA), leaf
// certificates it signs for servers and clients (CA.Issue), files written
// with private modes (WritePair), and a Reloader that serves a certificate,
// its key and a CA bundle from files and follows changes to them, so that a
// certificate or the CA is rotated without a restart.
//
// Every key is ECDSA P-256. Only the standard library is used.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"slices"
	"strings"
	"time"
)

// Default lifetimes.
const (
	DefaultCAValidity   = 5 * 365 * 24 * time.Hour // 1825 days
	DefaultCertValidity = 365 * 24 * time.Hour
)

// backdate is how far before now a certificate becomes valid, so that peers
// whose clocks are a little behind accept it at once.
const backdate = time.Minute

// CAOptions configures NewCA.
type CAOptions struct {
	CommonName string        // default "Switchboard CA"
	Validity   time.Duration // default DefaultCAValidity (5 years)
}

// CA is a certificate authority: its certificate and the key that signs.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
}

// NewCA makes a self-signed CA with a new ECDSA P-256 key. It may sign leaf
// certificates only (MaxPathLen 0), not other CAs.
func NewCA(opts CAOptions) (*CA, error) {
	if opts.CommonName == "" {
		opts.CommonName = "Switchboard CA"
	}
	if opts.Validity < 0 {
		return nil, fmt.Errorf("certs: negative CA validity %v", opts.Validity)
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultCAValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.CommonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(opts.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("certs: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: parse new CA certificate: %w", err)
	}
	return &CA{cert: cert, certPEM: pemCert(der), key: key}, nil
}

// LoadCA reads a CA from its certificate and key files (PEM). The key may
// be SEC 1 ("EC PRIVATE KEY") or PKCS #8 ("PRIVATE KEY"); it must match the
// certificate, which must be a CA's. Errors name the file at fault.
func LoadCA(certFile, keyFile string) (*CA, error) {
	chain, certPEM, err := readCertificates(certFile)
	if err != nil {
		return nil, err
	}
	cert := chain[0]
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("certs: %s: %q is not a CA certificate", certFile, cert.Subject.CommonName)
	}
	key, err := readKey(keyFile)
	if err != nil {
		return nil, err
	}
	if err := keyMatches(cert, key); err != nil {
		return nil, fmt.Errorf("certs: key %s does not match certificate %s: %w", keyFile, certFile, err)
	}
	return &CA{cert: cert, certPEM: certPEM, key: key}, nil
}

// Certificate returns the CA's certificate. The caller must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the CA's certificate in PEM, as written by WriteFiles.
func (ca *CA) CertPEM() []byte { return slices.Clone(ca.certPEM) }

// WriteFiles writes the CA's certificate and key (PKCS #8) in PEM, both with
// mode 0600, as WritePair does: an existing file is an error naming it
// unless overwrite is set.
func (ca *CA) WriteFiles(certFile, keyFile string, overwrite bool) error {
	keyPEM, err := pemKey(ca.key)
	if err != nil {
		return err
	}
	return WritePair(certFile, keyFile, ca.certPEM, keyPEM, overwrite)
}

// CertOptions configures CA.Issue.
type CertOptions struct {
	// Name is the certificate's CommonName, the identity the ACL sees. It is
	// also added as a DNS name when it is a valid host name. Required.
	Name string
	// DNS and IPs are the subject alternative names servers are verified
	// against.
	DNS []string
	IPs []net.IP
	// Validity is the lifetime from now; default DefaultCertValidity (1
	// year). It may not outlast the CA.
	Validity time.Duration
	// Client and Server choose the extended key usages; neither set means
	// both.
	Client, Server bool
}

// Issue makes a leaf certificate with a new ECDSA P-256 key, signed by the
// CA, and returns both in PEM (the key in PKCS #8).
func (ca *CA) Issue(opts CertOptions) (certPEM, keyPEM []byte, err error) {
	if opts.Name == "" {
		return nil, nil, errors.New("certs: a certificate needs a name")
	}
	for _, d := range opts.DNS {
		if !ValidDNSName(d) {
			return nil, nil, fmt.Errorf("certs: DNS name %q is not a valid host name", d)
		}
	}
	dns := slices.Clone(opts.DNS)
	if ValidDNSName(opts.Name) && !slices.ContainsFunc(dns, func(d string) bool { return strings.EqualFold(d, opts.Name) }) {
		dns = append([]string{opts.Name}, dns...)
	}
	if opts.Validity < 0 {
		return nil, nil, fmt.Errorf("certs: negative validity %v", opts.Validity)
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultCertValidity
	}
	now := time.Now()
	notAfter := now.Add(opts.Validity)
	if notAfter.After(ca.cert.NotAfter) {
		return nil, nil, fmt.Errorf("certs: a certificate valid until %s would outlive its CA (valid until %s): issue a shorter one or rotate the CA",
			notAfter.UTC().Format(time.DateOnly), ca.cert.NotAfter.UTC().Format(time.DateOnly))
	}
	var usage []x509.ExtKeyUsage
	if opts.Server || !opts.Client {
		usage = append(usage, x509.ExtKeyUsageServerAuth)
	}
	if opts.Client || !opts.Server {
		usage = append(usage, x509.ExtKeyUsageClientAuth)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.Name},
		DNSNames:              dns,
		IPAddresses:           slices.DeleteFunc(slices.Clone(opts.IPs), func(ip net.IP) bool { return ip == nil }),
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usage,
		BasicConstraintsValid: true,
		SubjectKeyId:          keyID(&key.PublicKey),
		AuthorityKeyId:        ca.cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: create certificate %q: %w", opts.Name, err)
	}
	keyPEM, err = pemKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemCert(der), keyPEM, nil
}

// ValidDNSName reports whether name can be a DNS subject alternative name:
// dot-separated labels of letters, digits and hyphens (not at either end
// of a label), at most 253 characters, optionally starting with the
// wildcard label "*.". An IP address is not a DNS name.
func ValidDNSName(name string) bool {
	name = strings.TrimPrefix(name, "*.")
	if name == "" || len(name) > 253 || net.ParseIP(name) != nil {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("certs: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// keyID is a subject key identifier: the leftmost 160 bits of the SHA-256
// of the public key's bits (RFC 7093, section 2, method 1).
func keyID(pub *ecdsa.PublicKey) []byte {
	k, err := pub.ECDH()
	if err != nil { // unreachable for keys made by ecdsa.GenerateKey on P-256
		return nil
	}
	sum := sha256.Sum256(k.Bytes())
	return sum[:20]
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// readCertificates reads every certificate of a PEM file, in order, and
// returns them with the file's bytes.
func readCertificates(file string) ([]*x509.Certificate, []byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: %w", err)
	}
	var certs []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("certs: %s: certificate %d: %w", file, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, nil, fmt.Errorf("certs: %s: no PEM CERTIFICATE block", file)
	}
	return certs, data, nil
}

// readKey reads the first private key of a PEM file: "EC PRIVATE KEY"
// (SEC 1), "PRIVATE KEY" (PKCS #8) or "RSA PRIVATE KEY" (PKCS #1). Other
// blocks, such as the "EC PARAMETERS" openssl writes, are skipped.
func readKey(file string) (crypto.Signer, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return nil, fmt.Errorf("certs: %s: no PEM private key block", file)
		}
		var key any
		switch b.Type {
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("certs: %s: %w", file, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("certs: %s: %T is not a signing key", file, key)
		}
		return signer, nil
	}
}

// keyMatches checks that key is the private half of cert's public key.
func keyMatches(cert *x509.Certificate, key crypto.Signer) error {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return errors.New("public keys differ")
	}
	return nil
}
