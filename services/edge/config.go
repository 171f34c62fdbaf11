package edge

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/switchboard-net/switchboard/pkg/balance"
)

// FileConfig is the static configuration file (YAML or JSON): HTTP routes,
// TCP and UDP listeners.
type FileConfig struct {
	// Routes are HTTP routes, matched before routes from registry tags.
	Routes []RouteConfig `yaml:"routes" json:"routes"`
	// TCP are TCP listeners, each forwarding to one service.
	TCP []TCPConfig `yaml:"tcp" json:"tcp"`
	// UDP are UDP listeners, each forwarding to one service.
	UDP []UDPConfig `yaml:"udp" json:"udp"`
	// Services are named static services (plain addresses) that routes,
	// listeners and wire streams can name like registry services; the
	// balancer's sets for the same names are ignored.
	Services map[string][]string `yaml:"services" json:"services"`
	// AllowLoopback names the registry services whose endpoints may be on
	// loopback or link-local addresses; otherwise such endpoints get no
	// traffic, on any protocol (--allow-loopback allows every service).
	AllowLoopback []string `yaml:"allow_loopback" json:"allow_loopback"`
}

// RouteConfig is one HTTP route.
type RouteConfig struct {
	// Name identifies the route in metrics and the runtime API (default:
	// host+prefix).
	Name string `yaml:"name" json:"name"`
	// Host to match (case-insensitive, port ignored); "" or "*" matches any.
	Host string `yaml:"host" json:"host"`
	// PathPrefix to match ("/" when empty).
	PathPrefix string `yaml:"path_prefix" json:"path_prefix"`
	// StripPrefix removes PathPrefix from the path sent to the backend.
	StripPrefix bool `yaml:"strip_prefix" json:"strip_prefix"`
	// Headers must all be present with these exact values.
	Headers map[string]string `yaml:"headers" json:"headers"`
	// Service is the registry service to send to (endpoints from the
	// balancer).
	Service string `yaml:"service" json:"service"`
	// Addresses are plain upstream host:port addresses, for apps that were
	// never registered. Exactly one of Service and Addresses is set.
	Addresses []string `yaml:"addresses" json:"addresses"`
	// Policy for Addresses (default round_robin).
	Policy string `yaml:"policy" json:"policy"`
	// TryTimeout overrides --try-timeout on this route: how long one try
	// waits for the start of the backend's answer before it counts as a
	// timeout and a safe request goes to another backend. "0s" turns
	// per-try timeouts off here (--response-timeout alone bounds a try).
	TryTimeout *Duration `yaml:"try_timeout" json:"try_timeout"`
	// Hedge overrides --hedge on this route: on a per-try timeout a safe
	// request races a second try instead of abandoning the first.
	Hedge *bool `yaml:"hedge" json:"hedge"`
}

// TCPConfig is one TCP listener.
type TCPConfig struct {
	// Listen is the listen address.
	Listen string `yaml:"listen" json:"listen"`
	// Service or Addresses name the upstreams, as for a route.
	Service   string   `yaml:"service" json:"service"`
	Addresses []string `yaml:"addresses" json:"addresses"`
	// ProxyProtocol sends a PROXY protocol v2 header to the backend.
	ProxyProtocol bool `yaml:"proxy_protocol" json:"proxy_protocol"`
	// IdleTimeout closes a connection idle this long (default 1h).
	IdleTimeout Duration `yaml:"idle_timeout" json:"idle_timeout"`
	// SocketBuffer, in bytes, sets SO_RCVBUF and SO_SNDBUF on both the
	// client's and the backend's connection, which turns the kernel's
	// autotuning off for them. Small fixed buffers keep the bytes in
	// flight in the CPU caches (faster on loopback and short links) but
	// cap each connection near SocketBuffer per round trip. Zero keeps
	// the kernel's autotuning.
	SocketBuffer int `yaml:"socket_buffer" json:"socket_buffer"`
}

// UDPConfig is one UDP listener.
type UDPConfig struct {
	// Listen is the listen address.
	Listen string `yaml:"listen" json:"listen"`
	// Service or Addresses name the upstreams, as for a route.
	Service   string   `yaml:"service" json:"service"`
	Addresses []string `yaml:"addresses" json:"addresses"`
	// MaxFlows bounds the client flow table (default 1024).
	MaxFlows int `yaml:"max_flows" json:"max_flows"`
	// IdleTimeout ends a flow idle this long (default 60s).
	IdleTimeout Duration `yaml:"idle_timeout" json:"idle_timeout"`
}

// Duration is a time.Duration written as "1.5s" in the file.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// LoadConfig reads and validates a configuration file. YAML is a superset
// of JSON, so both parse with the YAML decoder; unknown keys are errors.
// Errors are *ConfigError, naming the file, the line and the field.
func LoadConfig(path string) (*FileConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parseConfig(path, b)
}

// ParseConfig parses and validates configuration text. Errors are
// *ConfigError with the line and the field (and no file).
func ParseConfig(b []byte) (*FileConfig, error) { return parseConfig("", b) }

func parseConfig(file string, b []byte) (*FileConfig, error) {
	var c FileConfig
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, syntaxError(file, b, err)
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		doc = doc.Content[0]
	}
	if root.Kind != 0 {
		if err := checkNode(doc, reflect.TypeFor[FileConfig](), ""); err != nil {
			err.File = file
			return nil, err
		}
		if err := doc.Decode(&c); err != nil {
			// checkNode accepts only what decodes; this is a backstop.
			return nil, &ConfigError{File: file, Line: doc.Line, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
		}
	}
	if err := c.Validate(); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.File = file
			if ce.Line == 0 && root.Kind != 0 {
				ce.Line = locate(doc, ce.Field)
			}
		}
		return nil, err
	}
	return &c, nil
}

// ConfigError is a mistake in the configuration file, in the operator's
// terms: "edge.yaml:12: routes[2].policy: unknown policy ...".
type ConfigError struct {
	File  string // as given to --config; empty for text without a file
	Line  int    // 1-based; 0 when not known
	Field string // the field's path, as routes[2].policy; empty for syntax errors
	Msg   string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// fieldErr is a Validate error about one field; parseConfig adds where
// the field is written.
func fieldErr(field, format string, args ...any) *ConfigError {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Validate checks every field and names the first bad one.
func (c *FileConfig) Validate() error {
	for _, name := range sortedKeys(c.Services) {
		addrs := c.Services[name]
		f := "services." + name
		if strings.ContainsFunc(name, unicode.IsControl) {
			f = "services." + strconv.Quote(name)
		}
		if name == "" || strings.ContainsFunc(name, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r == ':' || r == '/' }) {
			return fieldErr(f, "a service name has no spaces, colons or slashes")
		}
		if len(addrs) == 0 {
			return fieldErr(f, "needs at least one address")
		}
		if err := checkAddrs(f, addrs); err != nil {
			return err
		}
	}
	routeNames := map[string]bool{}
	for i := range c.Routes {
		r := &c.Routes[i]
		f := fmt.Sprintf("routes[%d]", i)
		if r.PathPrefix == "" {
			r.PathPrefix = "/"
		}
		if !strings.HasPrefix(r.PathPrefix, "/") {
			return fieldErr(f+".path_prefix", "must start with /, got %q", r.PathPrefix)
		}
		if r.Host == "*" {
			r.Host = ""
		}
		r.Host = strings.ToLower(r.Host)
		if err := checkTargets(f, r.Service, r.Addresses); err != nil {
			return err
		}
		if r.Policy != "" {
			if _, ok := balance.Lookup(r.Policy); !ok {
				return fieldErr(f+".policy", "unknown policy %q (want one of %s)", r.Policy, strings.Join(balance.Names(), ", "))
			}
			if r.Service != "" {
				return fieldErr(f+".policy", "applies to addresses only; the policy of service %q is set in the balancer", r.Service)
			}
		}
		if r.TryTimeout != nil && *r.TryTimeout < 0 {
			return fieldErr(f+".try_timeout", "must not be negative, got %v", time.Duration(*r.TryTimeout))
		}
		if r.Name == "" {
			r.Name = r.Host + r.PathPrefix
		}
		if routeNames[r.Name] {
			return fieldErr(f+".name", "duplicate %q", r.Name)
		}
		routeNames[r.Name] = true
	}
	for i := range c.TCP {
		t := &c.TCP[i]
		f := fmt.Sprintf("tcp[%d]", i)
		if _, _, err := net.SplitHostPort(t.Listen); err != nil {
			return fieldErr(f+".listen", "%s", addrErr(err))
		}
		if err := checkTargets(f, t.Service, t.Addresses); err != nil {
			return err
		}
		if t.SocketBuffer < 0 {
			return fieldErr(f+".socket_buffer", "must not be negative")
		}
	}
	for i := range c.UDP {
		u := &c.UDP[i]
		f := fmt.Sprintf("udp[%d]", i)
		if _, _, err := net.SplitHostPort(u.Listen); err != nil {
			return fieldErr(f+".listen", "%s", addrErr(err))
		}
		if err := checkTargets(f, u.Service, u.Addresses); err != nil {
			return err
		}
		if u.MaxFlows < 0 {
			return fieldErr(f+".max_flows", "must not be negative")
		}
	}
	for i, name := range c.AllowLoopback {
		if name == "" || strings.ContainsAny(name, " \t") {
			return fieldErr(fmt.Sprintf("allow_loopback[%d]", i), "a service name, without spaces, got %q", name)
		}
	}
	return nil
}

// addrErr words a host:port parse error for the file: net's errors say
// "address x: missing port in address".
func addrErr(err error) string {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		if ae.Addr == "" {
			return "want host:port, got nothing"
		}
		return fmt.Sprintf("want host:port, got %q (%s)", ae.Addr, ae.Err)
	}
	return err.Error()
}

func checkTargets(f, service string, addrs []string) error {
	if (service == "") == (len(addrs) == 0) {
		return fieldErr(f, "exactly one of service and addresses must be set")
	}
	if strings.HasPrefix(service, "static:") {
		return fieldErr(f+".service", "the static: prefix is reserved")
	}
	return checkAddrs(f+".addresses", addrs)
}

// checkAddrs checks a list of host:port addresses, each listed once.
func checkAddrs(f string, addrs []string) error {
	seen := make(map[string]int, len(addrs))
	for j, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fieldErr(fmt.Sprintf("%s[%d]", f, j), "%s", addrErr(err))
		}
		if k, dup := seen[a]; dup {
			return fieldErr(fmt.Sprintf("%s[%d]", f, j), "%q is listed twice (also %s[%d])", a, f, k)
		}
		seen[a] = j
	}
	return nil
}
