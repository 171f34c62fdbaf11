package access

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The shape the trust issue asks for, with real hashes: "deploy", "view"
// and "ops" are the tokens.
var sample = `default: deny
tokens:
  - name: deployer
    sha256: ` + HashToken("deploy") + `
    rules:
      - {service: "web*", access: write}
      - {records: "example.test.", access: write}
  - name: viewer
    sha256: ` + HashToken("view") + `
    rules: [{service: "*", access: read}]
  - name: ops
    sha256: ` + HashToken("ops") + `
    rules: [{operator: true}]
  - name: registry
    cert: registry.internal
    rules:
      - {service: "*", access: read}
      - {service: "web-admin", access: deny}
`

func mustParse(t *testing.T, s string) *ACL {
	t.Helper()
	a, err := Parse("acl.yaml", []byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAllows(t *testing.T) {
	a := mustParse(t, sample)
	tests := []struct {
		token string
		certs []string
		need  Need
		want  bool
	}{
		{"deploy", nil, Service("web", Write), true},
		{"deploy", nil, Service("web-2", Read), true},
		{"deploy", nil, Service("api", Read), false},
		{"deploy", nil, Service("*", Read), false},
		{"deploy", nil, Records("www.example.test."), true},
		{"deploy", nil, Records("example.test."), true},
		{"deploy", nil, Records("WWW.Example.Test"), true},
		{"deploy", nil, Records("www.other.test."), false},
		{"deploy", nil, Records("badexample.test."), false},
		{"deploy", nil, Operator(), false},
		{"view", nil, Service("web", Read), true},
		{"view", nil, Service("*", Read), true},
		{"view", nil, Service("web", Write), false},
		{"view", nil, Records("www.example.test."), false},
		{"ops", nil, Operator(), true},
		{"ops", nil, Service("web", Read), false},
		{"", []string{"registry.internal"}, Service("web", Read), true},
		{"", []string{"registry.internal"}, Service("web-admin", Read), false}, // exact deny beats the glob
		{"", []string{"other"}, Service("web", Read), false},
		{"", nil, Service("web", Read), false},
		{"view", []string{"registry.internal"}, Service("web-admin", Read), true}, // the token wins
	}
	for _, tt := range tests {
		c, err := a.Identify(tt.token, tt.certs)
		if err != nil {
			t.Fatalf("Identify(%q, %v): %v", tt.token, tt.certs, err)
		}
		if got := c.Allows(tt.need); got != tt.want {
			t.Errorf("%s: Allows(%s) = %v, want %v", c, tt.need, got, tt.want)
		}
	}
	if _, err := a.Identify("nope", nil); err == nil {
		t.Error("an unknown token was accepted")
	}
}

func TestDefaults(t *testing.T) {
	tests := []struct {
		def  string
		need Need
		want bool
	}{
		{"deny", Service("web", Read), false},
		{"read", Service("web", Read), true},
		{"read", Service("web", Write), false},
		{"write", Service("web", Write), true},
		{"write", Operator(), true},
		{"read", Operator(), false},
	}
	for _, tt := range tests {
		a := mustParse(t, "default: "+tt.def+"\n")
		c, _ := a.Identify("", nil)
		if got := c.Allows(tt.need); got != tt.want {
			t.Errorf("default %s: Allows(%s) = %v, want %v", tt.def, tt.need, got, tt.want)
		}
	}
	// No default line: deny.
	c, _ := mustParse(t, "tokens: []\n").Identify("", nil)
	if c.Allows(Service("web", Read)) {
		t.Error("an ACL file without a default allowed an anonymous read")
	}
	// No ACL at all (nil caller, open caller): everything.
	if !Allowed(context.Background(), Operator()) || !Open("", "").Allows(Operator()) {
		t.Error("a call without an ACL was refused")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, file, want string
	}{
		{"bad default", "default: maybe\n", "acl.yaml:1: default: access: \"maybe\" is not read, write or deny"},
		{"no name", "tokens:\n  - sha256: " + HashToken("x") + "\n", "acl.yaml:2: tokens[0].name: missing"},
		{"short hash", "tokens:\n  - name: a\n    sha256: abc\n", "acl.yaml:3: tokens[0].sha256: want 64 hex digits"},
		{"no credential", "tokens:\n  - name: a\n    rules: []\n", "acl.yaml:2: tokens[0]: needs sha256"},
		{"two kinds", "tokens:\n  - name: a\n    cert: a\n    rules:\n      - {service: web, records: x., access: read}\n", "acl.yaml:5: tokens[0].rules[0]: a rule names exactly one"},
		{"bad access", "tokens:\n  - name: a\n    cert: a\n    rules:\n      - {service: web, access: all}\n", "acl.yaml:5: tokens[0].rules[0]: access: \"all\""},
		{"unknown field", "tokens:\n  - name: a\n    cert: a\n    rulez: []\n", "field rulez not found"},
		{"duplicate name", "tokens:\n  - {name: a, cert: a}\n  - {name: a, cert: b}\n", "acl.yaml:3: tokens[1].name: \"a\" appears twice"},
		{"not yaml", "tokens: [\n", "acl.yaml: "},
		{"bad glob", "tokens:\n  - name: a\n    cert: a\n    rules: [{service: \"[\", access: read}]\n", "bad pattern"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("acl.yaml", []byte(tt.file))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "access.file") {
				t.Errorf("error leaks a Go type name: %v", err)
			}
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Errorf("error is %T, want *FileError", err)
			}
		})
	}
}

func TestSourceReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl.yaml")
	write := func(s string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(-time.Hour)
	write("default: deny\n", t0)
	src, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	anon := func() *Caller { c, _ := src.ACL().Identify("", nil); return c }
	if anon().Allows(Service("web", Read)) {
		t.Fatal("deny file allowed a read")
	}
	if changed, err := src.Reload(); changed || err != nil {
		t.Fatalf("unchanged file: changed=%v err=%v", changed, err)
	}
	write("default: read\n", t0.Add(time.Second))
	if changed, err := src.Reload(); !changed || err != nil {
		t.Fatalf("changed file: changed=%v err=%v", changed, err)
	}
	if !anon().Allows(Service("web", Read)) {
		t.Fatal("the reloaded default was not applied")
	}
	write("default: [\n", t0.Add(2*time.Second))
	if _, err := src.Reload(); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("broken file: err=%v, want one naming %s", err, path)
	}
	if !anon().Allows(Service("web", Read)) {
		t.Fatal("a broken file replaced the rules in force")
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("a missing file loaded")
	}
}

func TestMethods(t *testing.T) {
	type req struct{ svc string }
	m := Methods{
		"/x.Svc/Get": ServiceName(func(r *req) string { return r.svc }, Read),
		"/x.Svc/Op":  Static(Operator()),
	}
	c, ok := m.Lookup("/x.Svc/Get")
	if !ok {
		t.Fatal("missing entry")
	}
	if got := c(&req{svc: "web"}); len(got) != 1 || got[0] != Service("web", Read) {
		t.Errorf("needs %v", got)
	}
	if got := c(&req{}); got[0] != Service("*", Read) {
		t.Errorf("empty service needs %v, want every service", got)
	}
	if got := c("wrong type"); got[0] != Operator() {
		t.Errorf("a request of the wrong type needs %v, want operator", got)
	}
	if _, ok := m.Lookup("/grpc.health.v1.Health/Check"); !ok {
		t.Error("health is not public")
	}
	if _, ok := m.Lookup("/x.Svc/Other"); ok {
		t.Error("an unmapped method has an entry")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte("default: read\n"))
	f.Add([]byte("tokens:\n  - {name: a, cert: b, rules: [{records: \"*\", access: write}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := Parse("fuzz.yaml", data)
		if err != nil {
			return
		}
		c, err := a.Identify("", nil)
		if err != nil {
			t.Fatalf("anonymous caller: %v", err)
		}
		_ = c.Allows(Service("web", Read))
		_ = c.Allows(Records("a.example."))
	})
}
