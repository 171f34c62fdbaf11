package servicename

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		wantErr string // substring; "" means valid
	}{
		{"web", ""},
		{"a", ""},
		{"orders-v2", ""},
		{"9lives", ""},
		{strings.Repeat("a", 63), ""},
		{"", "required"},
		{strings.Repeat("a", 64), "at most 63 bytes, got 64"},
		{"Web", "lower-case"},
		{"web_api", "lower-case"},
		{"web.api", "lower-case"},
		{"-web", "must not start or end"},
		{"web-", "must not start or end"},
		{"-", "must not start or end"},
	} {
		err := Validate(tc.name)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("Validate(%q) = %v, want nil", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("Validate(%q) = %v, want an error containing %q", tc.name, err, tc.wantErr)
		}
	}
}

func FuzzValidate(f *testing.F) {
	f.Add("web")
	f.Add("-x-")
	f.Fuzz(func(t *testing.T, s string) {
		if Validate(s) != nil {
			return
		}
		if len(s) == 0 || len(s) > MaxLen || s[0] == '-' || s[len(s)-1] == '-' {
			t.Fatalf("accepted %q", s)
		}
		for _, c := range []byte(s) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				t.Fatalf("accepted %q", s)
			}
		}
	})
}
