package main

// The day-two client commands (services, instances, pick, probe, edge ...)
// share what this file holds: the connection flags with their SWITCHBOARD_*
// twins, dialling with TLS and a token, output as tables, JSON or YAML, and
// exit codes that mean something.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/switchboard-net/switchboard/pkg/certs"
	"github.com/switchboard-net/switchboard/pkg/config"
)

// Exit codes of the client commands.
const (
	exitOK       = 0 // the command did what was asked
	exitFailure  = 1 // an RPC or local failure
	exitUsage    = 2 // a bad command line
	exitNotFound = 3 // the service, instance, job, record or name does not exist
)

// Default addresses: the ports `switchboard dev` listens on.
var defaultAddrs = map[string]string{
	"registry": "127.0.0.1:7100",
	"balancer": "127.0.0.1:7200",
	"resolver": "127.0.0.1:7300",
	"prober":   "127.0.0.1:7400",
	"edge":     "127.0.0.1:7500",
}

// serviceNames lists the services in the order help shows them.
var serviceNames = []string{"registry", "balancer", "resolver", "prober", "edge"}

// cliParseOnly, when set (by tests), stops a client command once its
// command line parsed: newClient returns errParsedOnly.
var cliParseOnly bool

// errParsedOnly is newClient's answer under cliParseOnly.
var errParsedOnly = errors.New("parsed only")

// notFoundError is a lookup that found nothing (exit code 3).
type notFoundError struct{ error }

// clientConfig is the connection and output flags every client command takes.
type clientConfig struct {
	addrs     map[string]*string
	tlsCA     string
	tlsCert   string
	tlsKey    string
	token     string
	tokenFile string
	output    string
	timeout   time.Duration
}

// commonFlagNames are the flags that have SWITCHBOARD_* twins.
var commonFlagNames = map[string]bool{
	"registry-addr": true, "balancer-addr": true, "resolver-addr": true, "prober-addr": true, "edge-addr": true,
	"tls-ca": true, "tls-cert": true, "tls-key": true, "token": true, "token-file": true,
	"output": true, "timeout": true,
}

// register adds the connection and output flags to fs.
func (c *clientConfig) register(fs *flag.FlagSet) {
	c.addrs = map[string]*string{}
	for _, s := range serviceNames {
		c.addrs[s] = fs.String(s+"-addr", defaultAddrs[s], "the "+s+"'s gRPC address, host:port")
	}
	fs.StringVar(&c.tlsCA, "tls-ca", "", "CA bundle (PEM) to verify the services against; turns TLS on")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "client certificate (PEM) for mutual TLS; turns TLS on")
	fs.StringVar(&c.tlsKey, "tls-key", "", "key (PEM) of --tls-cert")
	fs.StringVar(&c.token, "token", "", "bearer token sent with every call")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the bearer token (instead of --token, which shows in process listings)")
	fs.StringVar(&c.output, "output", "table", "output format: table, json or yaml")
	fs.StringVar(&c.output, "o", "table", "short for --output")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "bound on each call (streams: on connecting)")
}

// client is a parsed command line of a client command: its flags, the
// positional arguments, and where output goes.
type client struct {
	cfg    clientConfig
	args   []string
	stdout io.Writer
	stderr io.Writer
	conns  map[string]*grpc.ClientConn
	dial   []grpc.DialOption
	tls    *certs.Reloader // nil: plaintext
}

// parseInterleaved parses fs over args, letting flags and positional
// arguments mix ("instances demo -o json" and "instances -o json demo").
// "--" ends the flags.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag stops at "--" (consumed) or at the first positional.
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// applyEnv sets every common flag not given on the command line from its
// SWITCHBOARD_* twin.
func applyEnv(fs *flag.FlagSet, lookup config.LookupFunc) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["o"] {
		set["output"] = true
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] || !commonFlagNames[f.Name] {
			return
		}
		name := config.EnvName(f.Name)
		if v, ok := lookup(name); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
			}
		}
	})
	return err
}

// newClient parses a client command's arguments: fs holds the command's own
// flags; the common ones are added here. It checks the positional count
// against minArgs and maxArgs (-1: any).
func newClient(name, synopsis string, fs *flag.FlagSet, args []string, minArgs, maxArgs int, stdout, stderr io.Writer) (*client, error) {
	c := &client{stdout: stdout, stderr: stderr, conns: map[string]*grpc.ClientConn{}}
	c.cfg.register(fs)
	fs.SetOutput(stderr)
	fs.Usage = func() { printCommandHelp(stderr, name, synopsis, fs) }
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if err := applyEnv(fs, os.LookupEnv); err != nil {
		return nil, usageError{err}
	}
	switch c.cfg.output {
	case "table", "json", "yaml":
	default:
		return nil, usageError{fmt.Errorf("--output %q: want table, json or yaml", c.cfg.output)}
	}
	if len(pos) < minArgs || (maxArgs >= 0 && len(pos) > maxArgs) {
		return nil, usageError{fmt.Errorf("usage: switchboard %s", synopsis)}
	}
	c.args = pos
	if cliParseOnly {
		return nil, errParsedOnly
	}
	if err := c.credentials(); err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

// credentials builds the dial options from the TLS and token flags.
func (c *client) credentials() error {
	f := c.cfg
	tlsOn := f.tlsCA != "" || f.tlsCert != "" || f.tlsKey != ""
	c.dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if tlsOn {
		if (f.tlsCert == "") != (f.tlsKey == "") {
			return errors.New("--tls-cert and --tls-key go together")
		}
		r, err := certs.NewReloader(f.tlsCert, f.tlsKey, f.tlsCA)
		if err != nil {
			return fmt.Errorf("--tls-ca/--tls-cert/--tls-key: %w", err)
		}
		c.tls = r
	}
	tok := f.token
	if f.tokenFile != "" {
		if tok != "" {
			return errors.New("--token and --token-file are exclusive")
		}
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		if tok = strings.TrimSpace(string(b)); tok == "" {
			return fmt.Errorf("--token-file %s is empty", f.tokenFile)
		}
	}
	if tok != "" {
		c.dial = append(c.dial, grpc.WithPerRPCCredentials(bearerToken{token: tok, tls: tlsOn}))
	}
	return nil
}

// conn returns a connection to one service (dialled lazily).
func (c *client) conn(service string) (*grpc.ClientConn, error) {
	if cc := c.conns[service]; cc != nil {
		return cc, nil
	}
	addr := *c.cfg.addrs[service]
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, usageError{fmt.Errorf("--%s-addr %q: want host:port", service, addr)}
	}
	opts := c.dial
	if c.tls != nil {
		// Each service is verified against its own host name.
		host, _, _ := net.SplitHostPort(addr)
		opts = append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(c.tls.ClientConfig(host)))}, opts[1:]...)
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s client: %w", service, err)
	}
	c.conns[service] = cc
	return cc, nil
}

// ready waits, at most --timeout, until the connection to service is up:
// streams (watch, probe) run as long as they need, but reaching the
// service is bounded.
func (c *client) ready(ctx context.Context, service string) error {
	cc, err := c.conn(service)
	if err != nil {
		return err
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	cc.Connect()
	for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
		if !cc.WaitForStateChange(cctx, s) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%s: unavailable: no connection to %s within %s (is it running? see --%s-addr)", service, cc.Target(), c.cfg.timeout, service)
		}
	}
	return nil
}

// close closes every connection.
func (c *client) close() {
	for _, cc := range c.conns {
		cc.Close()
	}
}

// call bounds one RPC by --timeout.
func (c *client) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.timeout)
}

// rpcError turns a gRPC error into words: the service, the status code and
// its message. NotFound becomes exit code 3.
func rpcError(service string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", service, err)
	}
	msg := st.Message()
	switch st.Code() {
	case codes.NotFound:
		return notFoundError{fmt.Errorf("%s: not found: %s", service, msg)}
	case codes.Unavailable:
		return fmt.Errorf("%s: unavailable (is it running? see --%s-addr): %s", service, service, msg)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: no answer in time (--timeout): %s", service, msg)
	}
	return fmt.Errorf("%s: %s: %s", service, codeWords(st.Code()), msg)
}

// codeWords writes a status code as words: PermissionDenied -> "permission denied".
func codeWords(c codes.Code) string {
	s := c.String()
	var b strings.Builder
	prev := rune(0)
	for _, r := range s {
		if r >= 'A' && r <= 'Z' && prev >= 'a' && prev <= 'z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
		prev = r
	}
	return strings.ToLower(b.String())
}

// jsonOptions render messages as -o json does: every field, zero or not,
// with lowerCamelCase names (as grpcurl and protojson print by default).
var jsonOptions = protojson.MarshalOptions{EmitUnpopulated: true, Multiline: true, Indent: "  "}

// structured reports whether the output is JSON or YAML.
func (c *client) structured() bool { return c.cfg.output != "table" }

// emit prints m as JSON or YAML (for table output the caller prints).
func (c *client) emit(m proto.Message) error {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return fmt.Errorf("json: %w", err)
	}
	if c.cfg.output == "yaml" {
		y, err := jsonToYAML(b)
		if err != nil {
			return err
		}
		_, err = c.stdout.Write(y)
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "%s\n", b)
	return err
}

// emitLine prints m as one compact JSON line (or one YAML document), for
// streams.
func (c *client) emitLine(m proto.Message) error {
	if c.cfg.output == "yaml" {
		if _, err := io.WriteString(c.stdout, "---\n"); err != nil {
			return err
		}
		return c.emit(m)
	}
	b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("json: %w", err)
	}
	_, err = fmt.Fprintf(c.stdout, "%s\n", b)
	return err
}

// jsonToYAML converts JSON to block-style YAML, keeping the key order.
func jsonToYAML(j []byte) ([]byte, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(j, &n); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	var plain func(*yaml.Node)
	plain = func(n *yaml.Node) {
		n.Style &^= yaml.FlowStyle | yaml.DoubleQuotedStyle | yaml.SingleQuotedStyle
		for _, k := range n.Content {
			plain(k)
		}
	}
	plain(&n)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	return buf.Bytes(), nil
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) { fmt.Fprintln(t.tw, strings.Join(cols, "\t")) }

func (t *table) flush() error { return t.tw.Flush() }

// human writes a duration as people read it: 850µs, 12.3ms, 2s, 1m30s.
func human(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	default:
		// 5m0s reads better as 5m, 1h0m0s as 1h.
		s := d.Round(time.Second).String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		return s
	}
}

// humanPB writes a protobuf duration ("-" when unset).
func humanPB(d *durationpb.Duration) string {
	if d == nil {
		return "-"
	}
	return human(d.AsDuration())
}

// ago writes how long ago t was ("-" when unset).
func ago(t *timestamppb.Timestamp, now time.Time) string {
	if t == nil || (t.Seconds == 0 && t.Nanos == 0) {
		return "-"
	}
	d := now.Sub(t.AsTime())
	if d < 0 {
		d = 0
	}
	return human(d.Truncate(time.Second)) + " ago"
}

// dash writes "-" for an empty string.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// sortedMeta writes metadata as k=v,k=v.
func sortedMeta(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return dash(strings.Join(keys, ","))
}
