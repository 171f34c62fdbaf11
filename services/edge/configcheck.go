package edge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// Checking the configuration file against FileConfig's shape, node by
// node, before decoding it: the YAML decoder's own errors name Go types
// ("cannot unmarshal !!str into edge.RouteConfig", "field x not found in
// type edge.TCPConfig"), and its syntax errors often give the line where
// the enclosing block began rather than the line at fault. checkNode
// speaks in the file's terms (field paths, kinds of value) and points at
// the line of the key or value at fault; syntaxError finds the line of a
// syntax error itself.

var durationType = reflect.TypeFor[Duration]()

// maxAliasedNodes bounds the nodes checkNode visits through aliases: a
// few aliases of aliases would otherwise make a small file a huge one.
const maxAliasedNodes = 100_000

// checkNode checks that n fits type t, the Go type it will decode into,
// and returns the first mismatch at field.
func checkNode(n *yaml.Node, t reflect.Type, field string) *ConfigError {
	c := &nodeChecker{left: maxAliasedNodes}
	return c.node(n, t, field)
}

type nodeChecker struct {
	left    int // nodes still allowed through aliases
	aliased int // > 0 while inside an alias's expansion
}

// deref follows an alias; the caller calls c.aliased-- when done with
// what it returns, if it was an alias.
func (c *nodeChecker) deref(n *yaml.Node) (*yaml.Node, bool) {
	if n.Kind != yaml.AliasNode || n.Alias == nil {
		return n, false
	}
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	c.aliased++
	return n, true
}

func (c *nodeChecker) node(n *yaml.Node, t reflect.Type, field string) *ConfigError {
	n, alias := c.deref(n)
	if alias {
		defer func() { c.aliased-- }()
	}
	if c.aliased > 0 {
		if c.left--; c.left < 0 {
			return nodeErr(n, field, "too many nodes once aliases are expanded (at most %d)", maxAliasedNodes)
		}
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil // the zero value
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		if n.Kind != yaml.ScalarNode {
			return wantErr(n, field, "a duration such as 250ms or 1.5s")
		}
		if _, err := time.ParseDuration(n.Value); err != nil {
			return nodeErr(n, field, "invalid duration %q (want a number with a unit: 250ms, 1.5s, 1h)", n.Value)
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return wantErr(n, field, "a mapping with "+strings.Join(fieldNames(t), ", "))
		}
		return c.mapping(n, field, func(k *yaml.Node, f string) (reflect.Type, *ConfigError) {
			ft, ok := fieldType(t, k.Value)
			if !ok {
				return nil, nodeErr(k, f, "unknown field (want one of %s)", strings.Join(fieldNames(t), ", "))
			}
			return ft, nil
		})
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return wantErr(n, field, "a mapping")
		}
		return c.mapping(n, field, func(*yaml.Node, string) (reflect.Type, *ConfigError) { return t.Elem(), nil })
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return wantErr(n, field, "a list")
		}
		for i, item := range n.Content {
			if err := c.node(item, t.Elem(), fmt.Sprintf("%s[%d]", field, i)); err != nil {
				return err
			}
		}
		return nil
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return wantErr(n, field, "a string")
		}
		return nil
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			return wantErr(n, field, "true or false")
		}
		return nil
	case reflect.Int:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			return wantErr(n, field, "a whole number")
		}
		if _, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64); err != nil {
			return nodeErr(n, field, "%s is out of range", n.Value)
		}
		return nil
	}
	return nodeErr(n, field, "cannot be checked") // a FileConfig field of a kind not handled above
}

// mapping checks a mapping's keys (names, each once; YAML's "<<"
// merges allowed) and their values, each against the type elem gives.
func (c *nodeChecker) mapping(n *yaml.Node, field string, elem func(k *yaml.Node, f string) (reflect.Type, *ConfigError)) *ConfigError {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merged := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				merged = v.Content
			}
			for _, m := range merged {
				if err := c.merge(m, field, elem); err != nil {
					return err
				}
			}
			continue
		}
		if k.Kind != yaml.ScalarNode {
			return nodeErr(k, field, "a key must be a plain name, not a list or mapping")
		}
		name := k.Value
		if strings.ContainsFunc(name, unicode.IsControl) {
			name = strconv.Quote(name) // the error stays one line
		}
		f := joinField(field, name)
		if line, dup := seen[k.Value]; dup {
			return nodeErr(k, f, "set twice (first on line %d)", line)
		}
		seen[k.Value] = k.Line
		t, err := elem(k, f)
		if err != nil {
			return err
		}
		if err := c.node(v, t, f); err != nil {
			return err
		}
	}
	return nil
}

// merge checks a mapping merged in with "<<".
func (c *nodeChecker) merge(m *yaml.Node, field string, elem func(k *yaml.Node, f string) (reflect.Type, *ConfigError)) *ConfigError {
	m, alias := c.deref(m)
	if alias {
		defer func() { c.aliased-- }()
	}
	if m.Kind != yaml.MappingNode {
		return wantErr(m, field+".<<", "a mapping to merge")
	}
	return c.mapping(m, field, elem)
}

func joinField(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// fieldType returns the type of t's field with YAML name name.
func fieldType(t reflect.Type, name string) (reflect.Type, bool) {
	for i := range t.NumField() {
		if f := t.Field(i); f.IsExported() && yamlName(f) == name {
			return f.Type, true
		}
	}
	return nil, false
}

func fieldNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		if f := t.Field(i); f.IsExported() {
			out = append(out, yamlName(f))
		}
	}
	return out
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

func nodeErr(n *yaml.Node, field, format string, args ...any) *ConfigError {
	return &ConfigError{Line: n.Line, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// wantErr says what field wants and what it got, in YAML's terms.
func wantErr(n *yaml.Node, field, want string) *ConfigError {
	var got string
	switch n.Kind {
	case yaml.MappingNode:
		got = "a mapping"
	case yaml.SequenceNode:
		got = "a list"
	default:
		got = strconv.Quote(n.Value)
	}
	return nodeErr(n, field, "want %s, got %s", want, got)
}

// locate returns the line where field (as Validate names it:
// routes[2].addresses[0], services.web) is written, or the line of its
// closest written parent when the field itself is not in the file.
func locate(n *yaml.Node, field string) int {
	line := n.Line
	rest := field
	for rest != "" {
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		switch n.Kind {
		case yaml.MappingNode:
			// The longest key that prefixes rest (service names may
			// hold dots).
			best := -1
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i].Value
				if (rest == k || strings.HasPrefix(rest, k+".") || strings.HasPrefix(rest, k+"[")) &&
					(best < 0 || len(k) > len(n.Content[best].Value)) {
					best = i
				}
			}
			if best < 0 {
				return line
			}
			line = n.Content[best].Line
			rest = strings.TrimPrefix(rest[len(n.Content[best].Value):], ".")
			n = n.Content[best+1]
		case yaml.SequenceNode:
			end := strings.IndexByte(rest, ']')
			if !strings.HasPrefix(rest, "[") || end < 0 {
				return line
			}
			i, err := strconv.Atoi(rest[1:end])
			if err != nil || i < 0 || i >= len(n.Content) {
				return line
			}
			n = n.Content[i]
			line = n.Line
			rest = strings.TrimPrefix(rest[end+1:], ".")
		default:
			return line
		}
	}
	return line
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns a YAML (or JSON) syntax error into a ConfigError on
// the line at fault. JSON text gets encoding/json's exact offset. For
// YAML, the parser's line is often where the enclosing block began (an
// indentation slip on line 12 reported on line 1), so the line is found
// by parsing prefixes: the first line whose addition turns a parseable
// prefix into one that fails.
func syntaxError(file string, b []byte, err error) *ConfigError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if t := bytes.TrimSpace(b); len(t) > 0 && (t[0] == '{' || t[0] == '[') {
		var v any
		var se *json.SyntaxError
		if jerr := json.Unmarshal(b, &v); errors.As(jerr, &se) {
			return &ConfigError{File: file, Line: 1 + bytes.Count(b[:min(int(se.Offset), len(b))], []byte("\n")), Msg: se.Error()}
		}
		return &ConfigError{File: file, Line: line, Msg: msg}
	}
	if l := firstBadLine(b); l > 1 || line == 0 {
		line = l
	}
	return &ConfigError{File: file, Line: line, Msg: msg}
}

// firstBadLine returns the line ending the longest prefix of b that parses
// (found by bisection, so a file parses O(log lines) times), plus one: the
// line that broke it.
func firstBadLine(b []byte) int {
	var ends []int // ends[i]: offset just past line i+1
	for i, c := range b {
		if c == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(ends) == 0 || ends[len(ends)-1] != len(b) {
		ends = append(ends, len(b))
	}
	parses := func(lines int) bool {
		var n yaml.Node
		return yaml.Unmarshal(b[:ends[lines-1]], &n) == nil
	}
	lo, hi := 0, len(ends) // the first lo lines parse; the first hi lines do not
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if parses(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
