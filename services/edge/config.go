package edge

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
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
func LoadConfig(path string) (*FileConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses and validates configuration text.
func ParseConfig(b []byte) (*FileConfig, error) {
	var c FileConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks every field and names the first bad one.
func (c *FileConfig) Validate() error {
	for name, addrs := range c.Services {
		f := fmt.Sprintf("services.%s", name)
		if name == "" || strings.ContainsAny(name, " :/") {
			return fmt.Errorf("%s: a service name has no spaces, colons or slashes", f)
		}
		if len(addrs) == 0 {
			return fmt.Errorf("%s: needs at least one address", f)
		}
		if err := checkTargets(f, "", addrs); err != nil {
			return err
		}
	}
	names := map[string]bool{}
	for i := range c.Routes {
		r := &c.Routes[i]
		f := fmt.Sprintf("routes[%d]", i)
		if r.PathPrefix == "" {
			r.PathPrefix = "/"
		}
		if !strings.HasPrefix(r.PathPrefix, "/") {
			return fmt.Errorf("%s.path_prefix: must start with /, got %q", f, r.PathPrefix)
		}
		if r.Host == "*" {
			r.Host = ""
		}
		r.Host = strings.ToLower(r.Host)
		if err := checkTargets(f, r.Service, r.Addresses); err != nil {
			return err
		}
		if r.TryTimeout != nil && *r.TryTimeout < 0 {
			return fmt.Errorf("%s.try_timeout: must not be negative, got %v", f, time.Duration(*r.TryTimeout))
		}
		if r.Name == "" {
			r.Name = r.Host + r.PathPrefix
		}
		if names[r.Name] {
			return fmt.Errorf("%s.name: duplicate %q", f, r.Name)
		}
		names[r.Name] = true
	}
	for i := range c.TCP {
		t := &c.TCP[i]
		f := fmt.Sprintf("tcp[%d]", i)
		if _, _, err := net.SplitHostPort(t.Listen); err != nil {
			return fmt.Errorf("%s.listen: %w", f, err)
		}
		if err := checkTargets(f, t.Service, t.Addresses); err != nil {
			return err
		}
		if t.SocketBuffer < 0 {
			return fmt.Errorf("%s.socket_buffer: must not be negative", f)
		}
	}
	for i := range c.UDP {
		u := &c.UDP[i]
		f := fmt.Sprintf("udp[%d]", i)
		if _, _, err := net.SplitHostPort(u.Listen); err != nil {
			return fmt.Errorf("%s.listen: %w", f, err)
		}
		if err := checkTargets(f, u.Service, u.Addresses); err != nil {
			return err
		}
		if u.MaxFlows < 0 {
			return fmt.Errorf("%s.max_flows: must not be negative", f)
		}
	}
	for i, name := range c.AllowLoopback {
		if name == "" || strings.ContainsAny(name, " \t") {
			return fmt.Errorf("allow_loopback[%d]: a service name, without spaces, got %q", i, name)
		}
	}
	return nil
}

func checkTargets(f, service string, addrs []string) error {
	if (service == "") == (len(addrs) == 0) {
		return fmt.Errorf("%s: exactly one of service and addresses must be set", f)
	}
	if strings.HasPrefix(service, "static:") {
		return fmt.Errorf("%s.service: the static: prefix is reserved", f)
	}
	for j, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("%s.addresses[%d]: %w", f, j, err)
		}
	}
	return nil
}
