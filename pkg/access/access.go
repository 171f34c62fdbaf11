// Package access is Switchboard's access control, in the spirit of Consul's
// ACLs: an ACL file maps tokens (kept only as SHA-256 hashes) and client
// certificate names to rules — `service "<glob>"` read or write,
// `records "<zone>"` write, `operator` — with a default for everyone else.
//
// pkg/service checks each RPC once, before its handler, against the
// permissions the service's method table (a Methods value beside its server
// code) says the call needs; handlers that need a finer check (filtering a
// list, redacting a field) ask Allowed with the call's context.
package access

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"path"
	"strings"
)

// Kind is the kind of resource a permission is about.
type Kind uint8

// The resources rules grant access to.
const (
	// KindService is a service of the catalog, by name: its instances,
	// health, load reports, balancing policy and DNS answers.
	KindService Kind = iota + 1
	// KindRecords is the static DNS records of a zone.
	KindRecords
	// KindOperator is the operation of the stack itself: edge runtime
	// changes, prober jobs, cache flushes.
	KindOperator
)

func (k Kind) String() string {
	switch k {
	case KindService:
		return "service"
	case KindRecords:
		return "records"
	case KindOperator:
		return "operator"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Level is how much access a rule grants or a call needs; Write implies Read.
type Level uint8

// The access levels, weakest first.
const (
	Deny Level = iota
	Read
	Write
)

func (l Level) String() string {
	switch l {
	case Deny:
		return "deny"
	case Read:
		return "read"
	case Write:
		return "write"
	}
	return fmt.Sprintf("level(%d)", uint8(l))
}

// Need is one permission a call needs.
type Need struct {
	Kind  Kind
	Name  string // service name or DNS name; "*" asks for every one
	Level Level
}

// Service is the permission to read or write the named service ("*" for
// every service: listing or watching them all).
func Service(name string, l Level) Need { return Need{Kind: KindService, Name: name, Level: l} }

// Records is the permission to write the static DNS record name (it is
// granted by a rule on any zone that contains name).
func Records(name string) Need { return Need{Kind: KindRecords, Name: name, Level: Write} }

// RecordsRead is the permission to list static DNS records under name.
func RecordsRead(name string) Need { return Need{Kind: KindRecords, Name: name, Level: Read} }

// Operator is the permission to operate the stack.
func Operator() Need { return Need{Kind: KindOperator, Level: Write} }

// String renders the permission as the ACL file would grant it, for error
// messages: `service "web" write`, `operator`.
func (n Need) String() string {
	if n.Kind == KindOperator {
		return "operator"
	}
	return fmt.Sprintf("%s %q %s", n.Kind, n.Name, n.Level)
}

// rule is one compiled grant.
type rule struct {
	kind    Kind
	pattern string // glob for services, zone for records, "" for operator
	level   Level
}

// matches reports whether the rule covers name, and how specifically: an
// exact match beats any glob, a longer pattern beats a shorter one.
func (r rule) matches(name string) (int, bool) {
	switch r.kind {
	case KindOperator:
		return 0, true
	case KindRecords:
		zone := strings.ToLower(strings.TrimSuffix(r.pattern, "."))
		n := strings.ToLower(strings.TrimSuffix(name, "."))
		switch {
		case zone == "" || zone == "*":
			return 0, true
		case n == zone:
			return len(zone) + 1, true
		case strings.HasSuffix(n, "."+zone):
			return len(zone), true
		}
		return 0, false
	default:
		if r.pattern == name {
			return 1 << 20, true
		}
		ok, err := path.Match(r.pattern, name)
		if err != nil || !ok {
			return 0, false
		}
		return len(r.pattern), true
	}
}

// Identity is a known caller of the ACL file: a token or a certificate name
// with its rules.
type Identity struct {
	name  string
	rules []rule
}

// Caller is who made a call, as the interceptor established it.
type Caller struct {
	// Name is the token's name in the ACL file, the client certificate's
	// name, or "anonymous".
	Name string
	// Via says how the caller was identified: "token", "cert" or "none".
	Via string

	rules []rule
	def   Level
	open  bool // no ACL in force: everything is allowed
}

// Allows reports whether the caller holds the permission.
func (c *Caller) Allows(n Need) bool {
	if c == nil || c.open {
		return true
	}
	best, bestScore, found := Deny, -1, false
	for _, r := range c.rules {
		if r.kind != n.Kind {
			continue
		}
		score, ok := r.matches(n.Name)
		if ok && score > bestScore {
			best, bestScore, found = r.level, score, true
		}
	}
	if !found {
		best = c.def
		if n.Kind == KindOperator && c.def < Write {
			best = Deny
		}
	}
	return best >= n.Level
}

// String names the caller for logs and spans: `token "deployer"`.
func (c *Caller) String() string {
	if c == nil {
		return "anonymous"
	}
	if c.Via == "none" {
		return c.Name
	}
	return fmt.Sprintf("%s %q", c.Via, c.Name)
}

// Open is the caller of a service that runs without an ACL: every
// permission is granted. Name says who it is when known (a certificate).
func Open(name, via string) *Caller {
	if name == "" {
		name, via = "anonymous", "none"
	}
	return &Caller{Name: name, Via: via, open: true}
}

// ACL is a loaded ACL file.
type ACL struct {
	def      Level
	byHash   map[[sha256.Size]byte]*Identity
	byCert   map[string]*Identity
	hashList [][sha256.Size]byte
}

// Default is the level granted to callers no rule covers.
func (a *ACL) Default() Level { return a.def }

// Identify returns the caller a token and verified certificate names stand
// for. A token that is not in the file is an error (the caller should get
// Unauthenticated); no token and no known certificate give the anonymous
// caller with the default level. A token wins over a certificate.
func (a *ACL) Identify(token string, certNames []string) (*Caller, error) {
	if token != "" {
		sum := sha256.Sum256([]byte(token))
		id, ok := a.byHash[sum]
		if !ok {
			// Constant-time comparison over the list keeps the lookup from
			// leaking a prefix through timing beyond the map's own hash.
			for _, h := range a.hashList {
				subtle.ConstantTimeCompare(h[:], sum[:])
			}
			return nil, fmt.Errorf("unknown token")
		}
		return &Caller{Name: id.name, Via: "token", rules: id.rules, def: a.def}, nil
	}
	for _, n := range certNames {
		if id, ok := a.byCert[n]; ok {
			return &Caller{Name: id.name, Via: "cert", rules: id.rules, def: a.def}, nil
		}
	}
	if len(certNames) > 0 {
		return &Caller{Name: certNames[0], Via: "cert", def: a.def}, nil
	}
	return &Caller{Name: "anonymous", Via: "none", def: a.def}, nil
}

// HashToken returns the hex SHA-256 of a token, as the ACL file stores it.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

type ctxKey struct{}

// WithCaller returns a context carrying the caller.
func WithCaller(ctx context.Context, c *Caller) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// CallerFrom returns the caller of the call ctx belongs to, or nil when the
// context carries none (a call from inside the process).
func CallerFrom(ctx context.Context) *Caller {
	c, _ := ctx.Value(ctxKey{}).(*Caller)
	return c
}

// Allowed reports whether the call ctx belongs to holds the permission. A
// context without a caller (in-process work, or a service without an ACL)
// is allowed.
func Allowed(ctx context.Context, n Need) bool { return CallerFrom(ctx).Allows(n) }
