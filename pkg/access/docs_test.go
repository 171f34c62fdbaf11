package access

import (
	"os"
	"strings"
	"testing"
)

// TestSecurityDocExample loads the ACL file docs/security.md shows and
// checks it means what the page says.
func TestSecurityDocExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i := strings.Index(s, "```yaml\n")
	if i < 0 {
		t.Fatal("docs/security.md has no yaml block")
	}
	s = s[i+len("```yaml\n"):]
	s = s[:strings.Index(s, "```")]
	a, err := Parse("docs/security.md", []byte(s))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		token string
		certs []string
		need  Need
		want  bool
	}{
		{"test", nil, Service("web-1", Write), true},
		{"test", nil, Records("www.example.test."), true},
		{"test", nil, Service("api", Read), false},
		{"view", nil, Service("api", Read), true},
		{"view", nil, Service("api", Write), false},
		{"ops", nil, Operator(), true},
		{"", []string{"balancer"}, Service("web", Read), true},
		{"", nil, Service("web", Read), false},
	} {
		c, err := a.Identify(tt.token, tt.certs)
		if err != nil {
			t.Fatalf("%q: %v", tt.token, err)
		}
		if got := c.Allows(tt.need); got != tt.want {
			t.Errorf("%s: %s = %v, want %v", c, tt.need, got, tt.want)
		}
	}
}
