package access

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.yaml.in/yaml/v3"
)

// The ACL file (YAML):
//
//	default: deny            # deny | read | write (deny when absent)
//	tokens:
//	  - name: deployer
//	    sha256: 9f86d0...    # hex SHA-256 of the bearer token
//	    rules:
//	      - {service: "web*", access: write}
//	      - {records: "example.test.", access: write}
//	  - name: registry       # a client certificate instead of a token
//	    cert: registry       # its CommonName or a DNS name
//	    rules: [{service: "*", access: read}]
//	  - name: ops
//	    sha256: ...
//	    rules: [{operator: true}]
type fileACL struct {
	Default string      `yaml:"default"`
	Tokens  []fileToken `yaml:"tokens"`
}

type fileToken struct {
	Name   string     `yaml:"name"`
	SHA256 string     `yaml:"sha256"`
	Cert   string     `yaml:"cert"`
	Rules  []fileRule `yaml:"rules"`
}

type fileRule struct {
	Service  *string `yaml:"service"`
	Records  *string `yaml:"records"`
	Operator *bool   `yaml:"operator"`
	Access   string  `yaml:"access"`
}

// FileError is a bad ACL file: where, and what is wrong in user terms.
type FileError struct {
	File  string
	Line  int
	Field string
	Err   error
}

func (e *FileError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %v", loc, e.Field, e.Err)
	}
	return fmt.Sprintf("%s: %v", loc, e.Err)
}

func (e *FileError) Unwrap() error { return e.Err }

// Parse reads an ACL file's contents; file names it in errors.
func Parse(file string, data []byte) (*ACL, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		return nil, &FileError{File: file, Err: yamlError(err)}
	}
	var f fileACL
	dec = yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, &FileError{File: file, Err: yamlError(err)}
	}
	at := func(p ...any) int { return lineOf(&root, p...) }
	a := &ACL{def: Deny, byHash: map[[sha256.Size]byte]*Identity{}, byCert: map[string]*Identity{}}
	if f.Default != "" {
		l, err := parseLevel(f.Default)
		if err != nil {
			return nil, &FileError{File: file, Line: at("default"), Field: "default", Err: err}
		}
		a.def = l
	}
	names := map[string]bool{}
	for i, t := range f.Tokens {
		field := fmt.Sprintf("tokens[%d]", i)
		if t.Name == "" {
			return nil, &FileError{File: file, Line: at("tokens", i), Field: field + ".name", Err: errors.New("missing")}
		}
		if names[t.Name] {
			return nil, &FileError{File: file, Line: at("tokens", i, "name"), Field: field + ".name", Err: fmt.Errorf("%q appears twice", t.Name)}
		}
		names[t.Name] = true
		if t.SHA256 == "" && t.Cert == "" {
			return nil, &FileError{File: file, Line: at("tokens", i), Field: field, Err: errors.New("needs sha256 (a token's hash) or cert (a certificate name)")}
		}
		id := &Identity{name: t.Name}
		for j, r := range t.Rules {
			rf := fmt.Sprintf("%s.rules[%d]", field, j)
			cr, err := compileRule(r)
			if err != nil {
				return nil, &FileError{File: file, Line: at("tokens", i, "rules", j), Field: rf, Err: err}
			}
			id.rules = append(id.rules, cr)
		}
		if t.SHA256 != "" {
			raw, err := hex.DecodeString(strings.ToLower(t.SHA256))
			if err != nil || len(raw) != sha256.Size {
				return nil, &FileError{File: file, Line: at("tokens", i, "sha256"), Field: field + ".sha256", Err: errors.New("want 64 hex digits (sha256sum of the token)")}
			}
			var h [sha256.Size]byte
			copy(h[:], raw)
			if _, dup := a.byHash[h]; dup {
				return nil, &FileError{File: file, Line: at("tokens", i, "sha256"), Field: field + ".sha256", Err: errors.New("the same token is listed twice")}
			}
			a.byHash[h] = id
			a.hashList = append(a.hashList, h)
		}
		if t.Cert != "" {
			if _, dup := a.byCert[t.Cert]; dup {
				return nil, &FileError{File: file, Line: at("tokens", i, "cert"), Field: field + ".cert", Err: fmt.Errorf("certificate name %q is listed twice", t.Cert)}
			}
			a.byCert[t.Cert] = id
		}
	}
	return a, nil
}

func compileRule(r fileRule) (rule, error) {
	set := 0
	for _, b := range []bool{r.Service != nil, r.Records != nil, r.Operator != nil} {
		if b {
			set++
		}
	}
	if set != 1 {
		return rule{}, errors.New("a rule names exactly one of service, records or operator")
	}
	switch {
	case r.Operator != nil:
		l := Deny
		if *r.Operator {
			l = Write
		}
		if r.Access != "" {
			return rule{}, errors.New("an operator rule takes no access (operator: true or false)")
		}
		return rule{kind: KindOperator, level: l}, nil
	case r.Service != nil:
		if *r.Service == "" {
			return rule{}, errors.New("service: empty pattern (use \"*\" for every service)")
		}
		if _, err := path.Match(*r.Service, ""); err != nil {
			return rule{}, fmt.Errorf("service: bad pattern %q", *r.Service)
		}
		l, err := parseLevel(r.Access)
		if err != nil {
			return rule{}, err
		}
		return rule{kind: KindService, pattern: *r.Service, level: l}, nil
	default:
		if *r.Records == "" {
			return rule{}, errors.New("records: empty zone (use \"*\" for every zone)")
		}
		l, err := parseLevel(r.Access)
		if err != nil {
			return rule{}, err
		}
		return rule{kind: KindRecords, pattern: *r.Records, level: l}, nil
	}
}

func parseLevel(s string) (Level, error) {
	switch s {
	case "deny":
		return Deny, nil
	case "read":
		return Read, nil
	case "write":
		return Write, nil
	case "":
		return Deny, errors.New("access: missing (read, write or deny)")
	}
	return Deny, fmt.Errorf("access: %q is not read, write or deny", s)
}

// yamlError strips the YAML library's Go type names from a decode error.
func yamlError(err error) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.ReplaceAll(msg, "unmarshal errors:\n  ", "")
	for _, t := range []string{" into access.fileRule", " into access.fileToken", " into access.fileACL", " in type access.fileRule", " in type access.fileToken", " in type access.fileACL"} {
		msg = strings.ReplaceAll(msg, t, "")
	}
	return errors.New(msg)
}

// lineOf finds the line of a path of map keys and list indexes in a YAML
// document (0 when it is not there).
func lineOf(doc *yaml.Node, p ...any) int {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, step := range p {
		switch s := step.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return line
			}
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == s {
					line = n.Content[i].Line
					n = n.Content[i+1]
					found = true
					break
				}
			}
			if !found {
				return line
			}
		case int:
			if n.Kind != yaml.SequenceNode || s >= len(n.Content) {
				return line
			}
			n = n.Content[s]
			line = n.Line
		}
	}
	return line
}

// Source is an ACL file kept current: Reload re-reads it when it changed,
// and a bad new version keeps the old one in force.
type Source struct {
	path string
	cur  atomic.Pointer[ACL]

	mu      sync.Mutex
	modTime time.Time
	size    int64
}

// Load reads the ACL file at path.
func Load(path string) (*Source, error) {
	s := &Source{path: path}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Path is the file the source reads.
func (s *Source) Path() string { return s.path }

// ACL returns the ACL in force.
func (s *Source) ACL() *ACL { return s.cur.Load() }

// Reload re-reads the file if its size or modification time changed. It
// reports whether a new version is now in force; on error the old one stays.
func (s *Source) Reload() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := os.Stat(s.path)
	if err != nil {
		return false, fmt.Errorf("acl file: %w", err)
	}
	if s.cur.Load() != nil && st.ModTime().Equal(s.modTime) && st.Size() == s.size {
		return false, nil
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return false, fmt.Errorf("acl file: %w", err)
	}
	a, err := Parse(s.path, data)
	if err != nil {
		// Remember the broken version so it is reported once, not every poll.
		s.modTime, s.size = st.ModTime(), st.Size()
		return false, err
	}
	s.cur.Store(a)
	s.modTime, s.size = st.ModTime(), st.Size()
	return true, nil
}
