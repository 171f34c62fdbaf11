package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Consul's side of the compose stack: 'switchboard bootstrap consul' runs
// once Consul answers, with the management token 'switchboard bootstrap'
// wrote into Consul's configuration, and gives
//
//   - the registry a token (the SecretID in DIR/registry.token, which the
//     registry reads through CONSUL_HTTP_TOKEN_FILE) with the policy
//     switchboard-registry: exactly what services/registry/consulstore does;
//   - the Consul agent its token (the SecretID acl.hcl names as
//     tokens.agent) with the policy switchboard-agent, so that it can keep
//     its own node in the catalog.
//
// It is idempotent: policies are updated when their rules differ, tokens
// are kept when they exist, and a token of ours whose secret changed
// (bootstrap --rotate) is replaced.

// consulPolicy is one ACL policy bootstrap keeps in Consul.
type consulPolicy struct {
	Name, Description, Rules string
}

// registryConsulRules is the registry's Consul policy: what consulstore
// calls, and nothing else.
func registryConsulRules(kvPrefix string) string {
	return fmt.Sprintf(`# The Switchboard registry's Consul store (services/registry/consulstore).
# It registers and deregisters instances of any service through the agent
# and updates their TTL checks (agent/service/register, agent/check/update):
# the registry authorizes its own callers per service before it writes.
service_prefix "" {
  policy = "write"
}
# It follows the catalog (catalog/services) and each service's health
# (health/service), whose entries Consul shows only with node read.
node_prefix "" {
  policy = "read"
}
# It asks the agent for its node name (agent/self), to restore the
# instances registered there after an outage — also after the agent comes
# back under a new node name, so no fixed name here.
agent_prefix "" {
  policy = "read"
}
# It keeps the DNS records in the KV store under its prefix.
key_prefix %q {
  policy = "write"
}
`, kvPrefix)
}

// agentConsulRules is the Consul agent's own policy: its node, and reading
// the services it syncs (Consul's recommended agent policy).
func agentConsulRules() string {
	return `# The Consul agent of the Switchboard compose stack: keeps its node
# in the catalog (under whatever name a recreated container gets) and reads
# the services it syncs.
node_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "read"
}
`
}

const (
	registryPolicyName = "switchboard-registry"
	agentPolicyName    = "switchboard-agent"
	registryTokenDesc  = "Switchboard registry (switchboard bootstrap consul)"
	agentTokenDesc     = "Switchboard compose: the Consul agent (switchboard bootstrap consul)"
)

// consulSetup is what 'bootstrap consul' needs.
type consulSetup struct {
	addr     string // host:port or URL of Consul's HTTP API
	dir      string // management.token, agent.token, registry.token
	kvPrefix string
	timeout  time.Duration
	out      io.Writer
}

func runBootstrapConsul(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bootstrap consul", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, bootstrapUsage, "\nflags of 'switchboard bootstrap consul':\n")
		fs.PrintDefaults()
	}
	defAddr := os.Getenv("CONSUL_HTTP_ADDR")
	if defAddr == "" {
		defAddr = "127.0.0.1:8500"
	}
	c := consulSetup{out: stdout}
	fs.StringVar(&c.addr, "addr", defAddr, "Consul's HTTP API address (default CONSUL_HTTP_ADDR, else 127.0.0.1:8500)")
	fs.StringVar(&c.dir, "dir", "/pki/consul", "directory with management.token, agent.token and registry.token (DIR/consul of 'switchboard bootstrap')")
	fs.StringVar(&c.kvPrefix, "kv-prefix", "switchboard/registry/", "the registry's KV prefix (its --consul-prefix)")
	fs.DurationVar(&c.timeout, "timeout", 2*time.Minute, "how long to wait for Consul's ACL system to answer")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if c.kvPrefix == "" || strings.HasPrefix(c.kvPrefix, "/") {
		return usageError{fmt.Errorf("--kv-prefix %q: want a relative key prefix such as switchboard/registry/", c.kvPrefix)}
	}
	if !strings.HasSuffix(c.kvPrefix, "/") {
		c.kvPrefix += "/"
	}
	return bootstrapConsul(ctx, c)
}

func bootstrapConsul(ctx context.Context, c consulSetup) error {
	secrets := map[string]string{}
	for _, name := range consulTokens {
		b, err := os.ReadFile(filepath.Join(c.dir, name+".token"))
		if err != nil {
			return fmt.Errorf("%w (run 'switchboard bootstrap' first)", err)
		}
		if secrets[name] = strings.TrimSpace(string(b)); secrets[name] == "" {
			return fmt.Errorf("%s: empty", filepath.Join(c.dir, name+".token"))
		}
	}
	base := c.addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	api := &consulAPI{base: strings.TrimSuffix(base, "/"), mgmt: secrets["management"]}

	// Consul's ACL system answers once a leader is elected and has made
	// the initial management token.
	if err := api.waitACL(ctx, c.timeout); err != nil {
		return err
	}
	var self struct{ Config struct{ NodeName string } }
	if err := api.call(ctx, http.MethodGet, "/v1/agent/self", api.mgmt, nil, &self); err != nil {
		return err
	}
	node := self.Config.NodeName
	if node == "" {
		return errors.New("consul agent/self: no node name")
	}
	policies := []consulPolicy{
		{agentPolicyName, "The Consul agent of the Switchboard compose stack", agentConsulRules()},
		{registryPolicyName, "The Switchboard registry's Consul store", registryConsulRules(c.kvPrefix)},
	}
	for _, p := range policies {
		what, err := api.ensurePolicy(ctx, p)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.out, "bootstrap consul: policy %s %s\n", p.Name, what)
	}
	for _, t := range []struct{ secret, desc, policy string }{
		{secrets["agent"], agentTokenDesc, agentPolicyName},
		{secrets["registry"], registryTokenDesc, registryPolicyName},
	} {
		what, err := api.ensureToken(ctx, t.secret, t.desc, t.policy)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.out, "bootstrap consul: token with policy %s %s\n", t.policy, what)
	}
	fmt.Fprintf(c.out, "bootstrap consul: done (node %s, %s)\n", node, c.addr)
	return nil
}

// consulAPI is the few calls of Consul's HTTP API bootstrap makes.
type consulAPI struct {
	base string
	mgmt string
	hc   http.Client
}

// consulError is a non-2xx answer.
type consulError struct {
	method, path string
	code         int
	body         string
}

func (e *consulError) Error() string {
	return fmt.Sprintf("consul %s %s: %d %s", e.method, e.path, e.code, strings.TrimSpace(e.body))
}

// aclNotFound reports whether err is Consul's answer for an unknown token
// (403 "ACL not found").
func aclNotFound(err error) bool {
	var ce *consulError
	return errors.As(err, &ce) && ce.code == http.StatusForbidden && strings.Contains(ce.body, "ACL not found")
}

// call makes a request with token, sending in as JSON and decoding the
// answer into out (either may be nil). Each try is bounded to 10 s. A busy
// Consul (429, or for reads a 5xx or a failed connection: a server still
// electing its leader, an agent slow to answer) is tried again, up to four
// times in all, backing off; a write that may have been applied is not.
func (a *consulAPI) call(ctx context.Context, method, path, token string, in, out any) error {
	var err error
	for try, delay := 0, 250*time.Millisecond; try < 4; try, delay = try+1, 2*delay {
		if try > 0 {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(delay):
			}
		}
		if err = a.try(ctx, method, path, token, in, out); err == nil || !transient(method, err) {
			return err
		}
	}
	return err
}

// transient reports whether a failed call may succeed if made again, and
// may be made again.
func transient(method string, err error) bool {
	var ce *consulError
	if !errors.As(err, &ce) {
		return method == http.MethodGet // no answer: a write may have been applied
	}
	return ce.code == http.StatusTooManyRequests || method == http.MethodGet && ce.code >= 500
}

// try is one call.
func (a *consulAPI) try(ctx context.Context, method, path, token string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("X-Consul-Token", token)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("consul %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("consul %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return &consulError{method: method, path: path, code: resp.StatusCode, body: string(b)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("consul %s %s: %w", method, path, err)
		}
	}
	return nil
}

// waitACL waits until the management token resolves.
func (a *consulAPI) waitACL(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	backoff := 100 * time.Millisecond
	for {
		err := a.call(ctx, http.MethodGet, "/v1/acl/token/self", a.mgmt, nil, nil)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("consul's ACL system did not answer with the management token within %v: %w", timeout, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

type consulPolicyJSON struct {
	ID          string `json:",omitempty"`
	Name        string
	Description string
	Rules       string
}

// ensurePolicy creates p, or updates it when its rules or description
// differ; it says which it did.
func (a *consulAPI) ensurePolicy(ctx context.Context, p consulPolicy) (string, error) {
	var list []consulPolicyJSON
	if err := a.call(ctx, http.MethodGet, "/v1/acl/policies", a.mgmt, nil, &list); err != nil {
		return "", err
	}
	want := consulPolicyJSON{Name: p.Name, Description: p.Description, Rules: p.Rules}
	for _, have := range list {
		if have.Name != p.Name {
			continue
		}
		var full consulPolicyJSON
		if err := a.call(ctx, http.MethodGet, "/v1/acl/policy/"+url.PathEscape(have.ID), a.mgmt, nil, &full); err != nil {
			return "", err
		}
		if full.Rules == want.Rules && full.Description == want.Description {
			return "kept", nil
		}
		want.ID = have.ID
		return "updated", a.call(ctx, http.MethodPut, "/v1/acl/policy/"+url.PathEscape(have.ID), a.mgmt, want, nil)
	}
	return "created", a.call(ctx, http.MethodPut, "/v1/acl/policy", a.mgmt, want, nil)
}

type consulTokenJSON struct {
	AccessorID  string `json:",omitempty"`
	SecretID    string `json:",omitempty"`
	Description string
	Policies    []struct{ Name string }
}

// ensureToken makes sure a token with SecretID secret exists with exactly
// the policy named. Tokens with the same description and another secret
// (left by a rotation) are deleted first.
func (a *consulAPI) ensureToken(ctx context.Context, secret, desc, policy string) (string, error) {
	var self consulTokenJSON
	err := a.call(ctx, http.MethodGet, "/v1/acl/token/self", secret, nil, &self)
	switch {
	case err == nil:
		names := make([]string, 0, len(self.Policies))
		for _, p := range self.Policies {
			names = append(names, p.Name)
		}
		if slices.Equal(names, []string{policy}) && self.Description == desc {
			return "kept", nil
		}
		upd := consulTokenJSON{AccessorID: self.AccessorID, Description: desc, Policies: []struct{ Name string }{{policy}}}
		return "updated", a.call(ctx, http.MethodPut, "/v1/acl/token/"+url.PathEscape(self.AccessorID), a.mgmt, upd, nil)
	case !aclNotFound(err):
		return "", err
	}
	var list []consulTokenJSON
	if err := a.call(ctx, http.MethodGet, "/v1/acl/tokens", a.mgmt, nil, &list); err != nil {
		return "", err
	}
	replaced := 0
	for _, t := range list {
		if t.Description != desc {
			continue
		}
		if err := a.call(ctx, http.MethodDelete, "/v1/acl/token/"+url.PathEscape(t.AccessorID), a.mgmt, nil, nil); err != nil {
			return "", err
		}
		replaced++
	}
	tok := consulTokenJSON{SecretID: secret, Description: desc, Policies: []struct{ Name string }{{policy}}}
	if err := a.call(ctx, http.MethodPut, "/v1/acl/token", a.mgmt, tok, nil); err != nil {
		return "", err
	}
	if replaced > 0 {
		return fmt.Sprintf("created (replacing %d with an old secret)", replaced), nil
	}
	return "created", nil
}
