package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard-net/switchboard/pkg/access"
	"github.com/switchboard-net/switchboard/pkg/certs"
)

const bootstrapUsage = `usage:
  switchboard bootstrap [--dir DIR] [--host DIR] [--owner UID:GID] [--consul-owner UID:GID] [--rotate]
      write the compose stack's CA, certificates, tokens, ACL file and Consul
      ACL config (keeps what exists: running it again changes nothing)
  switchboard bootstrap consul [--addr HOST:PORT] [--dir DIR] [--kv-prefix P] [--timeout D]
      once Consul is up: the Consul ACL policies and tokens of the registry
      and the Consul agent (idempotent)

Run 'switchboard bootstrap -h' or 'switchboard bootstrap consul -h' for the flags.
`

// The compose stack's identities. Each service and the demo apps get a
// certificate, a token and a directory of their own (a volume of their own
// in compose.yaml, so that no container reads another's key or token); the
// host user gets a client certificate and the operator and viewer tokens.
//
// The rules are least privilege for what each one calls:
//   - registry: calls no other service.
//   - balancer: registry Watch of every service, WatchConfig of the
//     policies, and PutConfig of the policies its own SetPolicy callers
//     (operators, checked first) set: service write.
//   - resolver: registry Watch of every service, WatchRecords, and
//     PutRecord/DeleteRecord on behalf of its own UpsertRecord and
//     DeleteRecord, whose callers it has checked for records write first.
//   - prober: registry Watch of every service and SetHealth on any of them,
//     its own registration as a switchboard-prober instance, and the
//     scheduled jobs in the registry (PutConfig/WatchConfig of kind job,
//     for the Schedule calls of its operators): operator.
//   - edge: balancer WatchEndpoints and Report (Report needs service write),
//     and, for the dashboard, registry ListServices/GetService and prober
//     ListJobs/Results.
//   - demo: registers and deregisters itself under the service "demo".
//   - operator: everything, for the host user.
//   - viewer: reads everything, changes nothing.
var stackIdentities = []stackIdentity{
	{name: "registry", server: true, why: "calls no other service"},
	{name: "balancer", server: true, why: "watches every service's instances and policies in the registry; stores the policies its operators set",
		rules: []aclRule{{"service", "*", "write"}}},
	{name: "resolver", server: true, why: "watches every service and the DNS records; stores the record changes its own callers are allowed to make",
		rules: []aclRule{{"service", "*", "read"}, {"records", "*", "write"}}},
	{name: "prober", server: true, why: "watches every instance and reports its health (SetHealth); registers itself; keeps the scheduled jobs in the registry",
		rules: []aclRule{{"service", "*", "write"}, {"operator", "", ""}}},
	{name: "edge", server: true, why: "follows the balancer's endpoints and reports load on them (Report needs write); the dashboard reads the registry and the prober",
		rules: []aclRule{{"service", "*", "write"}}},
	{name: "demo", why: "the demo apps: register themselves under the service demo",
		rules: []aclRule{{"service", "demo", "write"}}},
	{name: "operator", host: true, why: "the host user: everything",
		rules: []aclRule{{"operator", "", ""}, {"service", "*", "write"}, {"records", "*", "write"}}},
	{name: "viewer", host: true, why: "read-only: every service and record, no changes",
		rules: []aclRule{{"service", "*", "read"}, {"records", "*", "read"}}},
}

// stackIdentity is one caller of the compose stack.
type stackIdentity struct {
	name   string
	server bool // one of the five services: a server certificate and acl.yaml
	host   bool // its token goes to the host directory
	why    string
	rules  []aclRule
}

// aclRule is one rule of the ACL file: kind service, records or operator.
type aclRule struct{ kind, pattern, access string }

// The host user's client certificate: it proves the connection comes from
// a holder of the stack's certificates; the token says what it may do.
const hostClientName = "client"

// certRenewBefore: a kept certificate that expires sooner is reissued.
const certRenewBefore = 30 * 24 * time.Hour

// Consul's tokens, all UUIDs (Consul accepts nothing else as a SecretID).
var consulTokens = []string{"management", "agent", "registry"}

// bootstrapConfig is what `switchboard bootstrap` writes and where.
type bootstrapConfig struct {
	dir         string // DIR/private: the CA, every token and key; DIR/<name>: what each container mounts
	host        string // the host user's files ("" for none)
	owner       fileOwner
	consulOwner fileOwner
	rotate      bool
	out         io.Writer
}

// fileOwner is a UID:GID flag; unset leaves ownership alone.
type fileOwner struct {
	uid, gid int
	set      bool
}

func (o *fileOwner) String() string {
	if !o.set {
		return ""
	}
	return fmt.Sprintf("%d:%d", o.uid, o.gid)
}

func (o *fileOwner) Set(s string) error {
	u, g, ok := strings.Cut(s, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		return fmt.Errorf("want UID:GID (numbers), got %q", s)
	}
	*o = fileOwner{uid: uid, gid: gid, set: true}
	return nil
}

// runBootstrap is `switchboard bootstrap`: the compose stack's init step.
func runBootstrap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "consul" {
		return runBootstrapConsul(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("bootstrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, bootstrapUsage, "\nflags of 'switchboard bootstrap':\n")
		fs.PrintDefaults()
	}
	c := bootstrapConfig{out: stdout}
	fs.StringVar(&c.dir, "dir", "/pki", "where to write: DIR/private (the CA key and every secret), DIR/<service>, DIR/demo and DIR/consul (what each container mounts)")
	fs.StringVar(&c.host, "host", "", "directory for the host user: ca.pem, client.pem, client-key.pem, operator.token, viewer.token (owned like the directory itself)")
	fs.Var(&c.owner, "owner", "UID:GID to own the services' and demo apps' files (default: leave as written)")
	fs.Var(&c.consulOwner, "consul-owner", "UID:GID to own DIR/consul, which Consul and 'bootstrap consul' read")
	fs.BoolVar(&c.rotate, "rotate", false, "replace the CA, every certificate and every token (Consul's management and agent tokens excepted); also SWITCHBOARD_BOOTSTRAP_ROTATE=1")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if v := os.Getenv("SWITCHBOARD_BOOTSTRAP_ROTATE"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return usageError{fmt.Errorf("SWITCHBOARD_BOOTSTRAP_ROTATE=%q: want 1, true, 0 or false", v)}
		}
		c.rotate = c.rotate || b
	}
	return bootstrap(c)
}

// bootstrap writes everything; see bootstrapUsage. Secrets already in
// DIR/private are kept (unless rotating); every other file is a copy of
// them or derived from them, rewritten only when it differs.
func bootstrap(c bootstrapConfig) error {
	priv := filepath.Join(c.dir, "private")
	if err := os.MkdirAll(filepath.Join(priv, "certs"), 0o700); err != nil {
		return err
	}
	if err := os.Chmod(priv, 0o700); err != nil {
		return err
	}
	w := &bootWriter{out: c.out}

	// The CA.
	caFile, caKey := filepath.Join(priv, "ca.pem"), filepath.Join(priv, "ca-key.pem")
	ca, err := certs.LoadCA(caFile, caKey)
	switch {
	case err == nil && !c.rotate:
		w.kept("CA", caFile)
	case err == nil || c.rotate || !fileExists(caFile) && !fileExists(caKey):
		if ca, err = certs.NewCA(certs.CAOptions{CommonName: "Switchboard compose CA"}); err != nil {
			return err
		}
		if err := ca.WriteFiles(caFile, caKey, true); err != nil {
			return err
		}
		w.made("CA", caFile)
	default:
		return fmt.Errorf("the CA in %s: %w (remove ca.pem and ca-key.pem to make a new one, or pass --rotate)", priv, err)
	}
	caPEM := ca.CertPEM()

	// Every token, and the certificates.
	tokens := map[string]string{}
	for _, id := range stackIdentities {
		if tokens[id.name], err = w.secret(filepath.Join(priv, "tokens", id.name+".token"), "token "+id.name, newToken, c.rotate); err != nil {
			return err
		}
	}
	consul := map[string]string{}
	for _, name := range consulTokens {
		// Consul's management and agent tokens live in Consul's own state;
		// rotating them is a job for Consul (docs/operations.md).
		rotate := c.rotate && name == "registry"
		if consul[name], err = w.secret(filepath.Join(priv, "consul", name+".token"), "Consul token "+name, newUUID, rotate); err != nil {
			return err
		}
	}
	type pair struct{ cert, key []byte }
	issued := map[string]pair{}
	for _, id := range stackIdentities {
		if id.host {
			continue
		}
		opts := certs.CertOptions{Name: id.name, Client: true}
		if id.server {
			opts.Server = true
			opts.DNS = []string{id.name, "localhost"}
			opts.IPs = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		cp, kp, err := w.cert(ca, filepath.Join(priv, "certs", id.name), opts, c.rotate)
		if err != nil {
			return err
		}
		issued[id.name] = pair{cp, kp}
	}
	clientCert, clientKey, err := w.cert(ca, filepath.Join(priv, "certs", hostClientName), certs.CertOptions{Name: hostClientName, Client: true}, c.rotate)
	if err != nil {
		return err
	}

	// What each container mounts.
	acl := aclFile(tokens)
	if _, err := access.Parse("acl.yaml", acl); err != nil {
		return fmt.Errorf("the ACL file bootstrap wrote does not parse: %w", err) // a bug here, not the user's
	}
	for _, id := range stackIdentities {
		if id.host {
			continue
		}
		dir := filepath.Join(c.dir, id.name)
		files := []outFile{
			{"ca.pem", caPEM, 0o644},
			{"cert.pem", issued[id.name].cert, 0o644},
			{"key.pem", issued[id.name].key, 0o600},
			{"token", []byte(tokens[id.name] + "\n"), 0o600},
		}
		if id.server {
			files = append(files, outFile{"acl.yaml", acl, 0o644})
		}
		if id.name == "registry" {
			files = append(files, outFile{"consul.token", []byte(consul["registry"] + "\n"), 0o600})
		}
		if err := w.dir(dir, files, c.owner); err != nil {
			return err
		}
	}
	consulDir := filepath.Join(c.dir, "consul")
	if err := w.dir(consulDir, []outFile{
		{"acl.hcl", consulACLConfig(consul["management"], consul["agent"]), 0o600},
		{"management.token", []byte(consul["management"] + "\n"), 0o600},
		{"agent.token", []byte(consul["agent"] + "\n"), 0o600},
		{"registry.token", []byte(consul["registry"] + "\n"), 0o600},
	}, c.consulOwner); err != nil {
		return err
	}
	if c.host != "" {
		owner, err := dirOwner(c.host)
		if err != nil {
			return err
		}
		if err := w.dir(c.host, []outFile{
			{"ca.pem", caPEM, 0o644},
			{"client.pem", clientCert, 0o644},
			{"client-key.pem", clientKey, 0o600},
			{"operator.token", []byte(tokens["operator"] + "\n"), 0o600},
			{"viewer.token", []byte(tokens["viewer"] + "\n"), 0o600},
		}, owner); err != nil {
			return err
		}
	}
	fmt.Fprintf(c.out, "bootstrap: done (%d written, %d kept) in %s\n", w.written, w.keptN, c.dir)
	return nil
}

// aclFile renders the stack's ACL file (pkg/access/file.go's format).
func aclFile(tokens map[string]string) []byte {
	var b bytes.Buffer
	b.WriteString(`# The compose stack's ACL file, written by 'switchboard bootstrap'
# (cmd/switchboard/bootstrap.go) from the tokens it keeps in private/tokens.
# Tokens appear only as SHA-256 hashes. Callers no rule covers are denied;
# every service re-reads this file when it changes.
default: deny
tokens:
`)
	for _, id := range stackIdentities {
		fmt.Fprintf(&b, "  # %s\n  - name: %s\n    sha256: %s\n", id.why, id.name, access.HashToken(tokens[id.name]))
		if len(id.rules) == 0 {
			b.WriteString("    rules: []\n")
			continue
		}
		b.WriteString("    rules:\n")
		for _, r := range id.rules {
			if r.kind == "operator" {
				b.WriteString("      - {operator: true}\n")
				continue
			}
			fmt.Fprintf(&b, "      - {%s: %q, access: %s}\n", r.kind, r.pattern, r.access)
		}
	}
	return b.Bytes()
}

// consulACLConfig is Consul's ACL configuration: default deny, the
// initial management token, and the agent's own token (which 'bootstrap
// consul' creates with the agent policy).
func consulACLConfig(management, agent string) []byte {
	return fmt.Appendf(nil, `# Consul's ACLs for the Switchboard compose stack, written by
# 'switchboard bootstrap'. Anything without a token is denied; the registry
# has a token of its own ('switchboard bootstrap consul' creates it).
acl {
  enabled                  = true
  default_policy           = "deny"
  down_policy              = "extend-cache"
  enable_token_persistence = true
  tokens {
    initial_management = %q
    agent              = %q
  }
}
`, management, agent)
}

// outFile is one file of a container's directory.
type outFile struct {
	name string
	data []byte
	mode fs.FileMode
}

// bootWriter writes bootstrap's files and says what it did.
type bootWriter struct {
	out            io.Writer
	written, keptN int
}

func (w *bootWriter) kept(what, file string) {
	w.keptN++
	fmt.Fprintf(w.out, "bootstrap: kept %s (%s)\n", what, file)
}

func (w *bootWriter) made(what, file string) {
	w.written++
	fmt.Fprintf(w.out, "bootstrap: wrote %s (%s)\n", what, file)
}

// secret returns the secret in file, or makes one with gen and writes it
// (mode 0600) when the file is missing or rotate is set.
func (w *bootWriter) secret(file, what string, gen func() (string, error), rotate bool) (string, error) {
	if !rotate {
		b, err := os.ReadFile(file)
		if err == nil {
			s := strings.TrimSpace(string(b))
			if s == "" {
				return "", fmt.Errorf("%s is empty: remove it to make a new %s", file, what)
			}
			w.keptN++
			return s, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	s, err := gen()
	if err != nil {
		return "", err
	}
	if err := writeAtomic(file, []byte(s+"\n"), 0o600); err != nil {
		return "", err
	}
	w.made(what, file)
	return s, nil
}

// cert returns the certificate and key at base.pem and base-key.pem when
// they are what opts asks for, signed by ca and valid for a while yet;
// otherwise (or when rotating) it issues new ones and writes them.
func (w *bootWriter) cert(ca *certs.CA, base string, opts certs.CertOptions, rotate bool) (certPEM, keyPEM []byte, err error) {
	certFile, keyFile := base+".pem", base+"-key.pem"
	if !rotate {
		cp, err1 := os.ReadFile(certFile)
		kp, err2 := os.ReadFile(keyFile)
		if err1 == nil && err2 == nil {
			why := certMismatch(ca, cp, opts)
			if why == "" {
				w.keptN++
				return cp, kp, nil
			}
			fmt.Fprintf(w.out, "bootstrap: reissuing %s: %s\n", certFile, why)
		}
	}
	cp, kp, err := ca.Issue(opts)
	if err != nil {
		return nil, nil, err
	}
	if err := certs.WritePair(certFile, keyFile, cp, kp, true); err != nil {
		return nil, nil, err
	}
	w.made("certificate "+opts.Name, certFile)
	return cp, kp, nil
}

// certMismatch says why certPEM is not a certificate bootstrap would keep
// ("" when it is): signed by ca, opts' names, not expiring within
// certRenewBefore.
func certMismatch(ca *certs.CA, certPEM []byte, opts certs.CertOptions) string {
	blk, _ := pem.Decode(certPEM)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return "not a PEM certificate"
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return err.Error()
	}
	if err := cert.CheckSignatureFrom(ca.Certificate()); err != nil {
		return "not signed by the current CA"
	}
	if time.Until(cert.NotAfter) < certRenewBefore {
		return "expires " + cert.NotAfter.UTC().Format(time.DateOnly)
	}
	if cert.Subject.CommonName != opts.Name {
		return fmt.Sprintf("named %q, not %q", cert.Subject.CommonName, opts.Name)
	}
	for _, d := range opts.DNS {
		if !slices.Contains(cert.DNSNames, d) {
			return "no DNS name " + d
		}
	}
	for _, ip := range opts.IPs {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return "no IP address " + ip.String()
		}
	}
	if opts.Server && !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return "not for servers"
	}
	if opts.Client && !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return "not for clients"
	}
	return ""
}

// dir brings a container's directory to files: each is (re)written only
// when its contents, mode or owner differ.
func (w *bootWriter) dir(dir string, files []outFile, owner fileOwner) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := owner.apply(dir); err != nil {
		return err
	}
	changed := 0
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if same, err := sameFile(p, f.data, f.mode, owner); err != nil {
			return err
		} else if same {
			continue
		}
		if err := writeAtomicOwned(p, f.data, f.mode, owner); err != nil {
			return err
		}
		changed++
	}
	if changed == 0 {
		w.kept(strconv.Itoa(len(files))+" files", dir)
	} else {
		w.made(strconv.Itoa(changed)+" of "+strconv.Itoa(len(files))+" files", dir)
	}
	return nil
}

// sameFile reports whether path holds data with mode and owner already.
func sameFile(path string, data []byte, mode fs.FileMode, owner fileOwner) (bool, error) {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !st.Mode().IsRegular() || st.Mode().Perm() != mode {
		return false, nil
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && owner.set && (int(sys.Uid) != owner.uid || int(sys.Gid) != owner.gid) {
		return false, nil
	}
	have, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	return bytes.Equal(have, data), nil
}

// apply sets path's owner when one is set.
func (o fileOwner) apply(path string) error {
	if !o.set {
		return nil
	}
	if err := os.Lchown(path, o.uid, o.gid); err != nil {
		return fmt.Errorf("chown %s to %d:%d: %w (the init container needs CAP_CHOWN)", path, o.uid, o.gid, err)
	}
	return nil
}

// dirOwner returns who owns dir, as the owner to give its files when this
// process runs as root (a container writing into a host directory); else
// none: the files are the invoking user's anyway.
func dirOwner(dir string) (fileOwner, error) {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fileOwner{}, err
		}
		return fileOwner{}, nil
	}
	if err != nil {
		return fileOwner{}, err
	}
	if !st.IsDir() {
		return fileOwner{}, fmt.Errorf("--host %s: not a directory", dir)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || os.Geteuid() != 0 {
		return fileOwner{}, nil
	}
	return fileOwner{uid: int(sys.Uid), gid: int(sys.Gid), set: true}, nil
}

// writeAtomic writes data to path with mode by renaming a temporary file
// over it, so that a reader (a service reloading its certificate or ACL)
// never sees half a file.
func writeAtomic(path string, data []byte, mode fs.FileMode) error {
	return writeAtomicOwned(path, data, mode, fileOwner{})
}

func writeAtomicOwned(path string, data []byte, mode fs.FileMode, owner fileOwner) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*") // mode 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, mode)
	}
	if err == nil {
		err = owner.apply(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// newToken returns a bearer token: 32 random bytes in hex.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// newUUID returns a random (version 4) UUID, the form Consul requires of a
// token's SecretID.
func newUUID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}
