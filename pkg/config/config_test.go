package config

import (
	"flag"
	"strings"
	"testing"
	"time"
)

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"grpc-addr":     "SWITCHBOARD_GRPC_ADDR",
		"store":         "SWITCHBOARD_STORE",
		"registry-addr": "SWITCHBOARD_REGISTRY_ADDR",
	} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParsePrecedence(t *testing.T) {
	env := map[string]string{
		"SWITCHBOARD_GRPC_ADDR":  ":9000",
		"SWITCHBOARD_ADMIN_ADDR": ":9001",
		"SWITCHBOARD_GRACE":      "3s",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	tests := []struct {
		name      string
		args      []string
		grpc, adm string
		grace     time.Duration
	}{
		{"env over default", nil, ":9000", ":9001", 3 * time.Second},
		{"flag over env", []string{"--grpc-addr=:1"}, ":1", ":9001", 3 * time.Second},
		{"both flags", []string{"-grpc-addr", ":1", "-admin-addr", ":2", "-grace=1s"}, ":1", ":2", time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			grpc := fs.String("grpc-addr", ":7100", "")
			adm := fs.String("admin-addr", ":7101", "")
			grace := fs.Duration("grace", 10*time.Second, "")
			if err := Parse(fs, tt.args, lookup); err != nil {
				t.Fatal(err)
			}
			if *grpc != tt.grpc || *adm != tt.adm || *grace != tt.grace {
				t.Fatalf("got %q %q %v, want %q %q %v", *grpc, *adm, *grace, tt.grpc, tt.adm, tt.grace)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad env value names the variable", nil, map[string]string{"SWITCHBOARD_GRACE": "soon"}, "SWITCHBOARD_GRACE"},
		{"unknown flag", []string{"--nope"}, nil, "nope"},
		{"stray argument", []string{"extra"}, nil, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			fs.SetOutput(new(strings.Builder))
			fs.Duration("grace", time.Second, "")
			err := Parse(fs, tt.args, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestNoEnvIgnoresEnvironment(t *testing.T) {
	t.Setenv("SWITCHBOARD_GRPC_ADDR", ":9999")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	addr := fs.String("grpc-addr", ":7100", "")
	if err := Parse(fs, nil, NoEnv); err != nil {
		t.Fatal(err)
	}
	if *addr != ":7100" {
		t.Fatalf("addr = %q, want the default", *addr)
	}
}
