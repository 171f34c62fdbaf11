package main

import (
	"bytes"
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

func TestParseInterleaved(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		pos     []string
		n       int
		verbose bool
	}{
		{[]string{"demo", "-n", "3"}, []string{"demo"}, 3, false},
		{[]string{"-n", "3", "demo"}, []string{"demo"}, 3, false},
		{[]string{"a", "-v", "b", "-n=2", "c"}, []string{"a", "b", "c"}, 2, true},
		{[]string{"a", "--", "-n", "4"}, []string{"a", "-n", "4"}, 1, false},
		{nil, nil, 1, false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		n := fs.Int("n", 1, "")
		v := fs.Bool("v", false, "")
		pos, err := parseInterleaved(fs, tc.args)
		if err != nil || !reflect.DeepEqual(pos, tc.pos) || *n != tc.n || *v != tc.verbose {
			t.Errorf("%q: pos %q n %d v %v err %v; want %q %d %v", tc.args, pos, *n, *v, err, tc.pos, tc.n, tc.verbose)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := parseInterleaved(fs, []string{"a", "--nope"}); err == nil {
		t.Error("an unknown flag after a positional argument parsed")
	}
}

// FuzzParseInterleaved: any command line parses or fails cleanly, and every
// argument that is not a flag comes back as positional, in order.
func FuzzParseInterleaved(f *testing.F) {
	f.Add("demo -n 3 -o json")
	f.Add("-- -n")
	f.Add("a b -v=false c")
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Fields(line)
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Int("n", 1, "")
		fs.Bool("v", false, "")
		fs.String("o", "", "")
		pos, err := parseInterleaved(fs, args)
		if err != nil {
			return
		}
		if len(pos) > len(args) {
			t.Fatalf("%q: %d positionals from %d words", args, len(pos), len(args))
		}
		for _, p := range pos {
			if !strings.Contains(line, p) {
				t.Fatalf("%q: positional %q not in the line", args, p)
			}
		}
	})
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"", 0, true}, {"1000", 1000, true}, {"50M", 50e6, true}, {"2g", 2e9, true}, {"10k", 10e3, true},
		{"M", 0, false}, {"-1M", 0, false}, {"1.5M", 0, false}, {"x", 0, false},
	} {
		got, err := parseRate(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseRate(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"", "100M", "1G", "7k", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseRate(s)
		if err != nil && v != 0 {
			t.Fatalf("%q: error %v with value %d", s, err, v)
		}
	})
}

func TestJSONToYAMLKeepsOrderAndTypes(t *testing.T) {
	y, err := jsonToYAML([]byte(`{"z":1,"a":{"on":"true","n":"12","list":[],"empty":""},"b":[{"x":false}]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := "z: 1\na:\n  on: \"true\"\n  n: \"12\"\n  list: []\n  empty: \"\"\nb:\n  - x: false\n"
	if string(y) != want {
		t.Errorf("yaml:\n%s\nwant:\n%s", y, want)
	}
}

func TestHumanDurations(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 850 * time.Microsecond: "850µs", 12345 * time.Microsecond: "12.35ms", 2 * time.Second: "2s",
		5 * time.Minute: "5m", 90 * time.Second: "1m30s", time.Hour: "1h", 61 * time.Minute: "1h1m",
	} {
		if got := human(d); got != want {
			t.Errorf("human(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestCodeWords(t *testing.T) {
	for c, want := range map[codes.Code]string{codes.PermissionDenied: "permission denied", codes.InvalidArgument: "invalid argument", codes.OK: "ok"} {
		if got := codeWords(c); got != want {
			t.Errorf("codeWords(%v) = %q, want %q", c, got, want)
		}
	}
}

func TestPrintChanges(t *testing.T) {
	inst := func(id, addr string, h registryv1.HealthStatus, w uint32) *registryv1.Instance {
		return &registryv1.Instance{Service: "web", Id: id, Address: addr, Port: 80, Health: h, Weight: w}
	}
	pass, crit := registryv1.HealthStatus_HEALTH_STATUS_PASSING, registryv1.HealthStatus_HEALTH_STATUS_CRITICAL
	prev := map[string]*registryv1.Instance{}
	steps := []struct {
		snap  []*registryv1.Instance
		stale bool
		want  []string
	}{
		{nil, false, []string{"(no instances)"}},
		{[]*registryv1.Instance{inst("a", "10.0.0.1", pass, 1)}, false, []string{"+ web/a 10.0.0.1:80 passing"}},
		{[]*registryv1.Instance{inst("a", "10.0.0.2", crit, 3), inst("b", "10.0.0.3", pass, 1)}, false,
			[]string{"~ web/a health passing -> critical, address 10.0.0.1:80 -> 10.0.0.2:80, weight 1 -> 3", "+ web/b 10.0.0.3:80 passing"}},
		{[]*registryv1.Instance{inst("b", "10.0.0.3", pass, 1)}, true, []string{"- web/a 10.0.0.2:80", "! the registry's backend is unreachable"}},
		{[]*registryv1.Instance{inst("b", "10.0.0.3", pass, 1)}, false, nil},
	}
	for i, s := range steps {
		var buf bytes.Buffer
		if err := printChanges(&buf, prev, &registryv1.WatchResponse{Instances: s.snap, Stale: s.stale}, i == 0); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if len(s.want) == 0 {
			if buf.Len() != 0 {
				t.Errorf("step %d: printed %q for no change", i, buf.String())
			}
			continue
		}
		if len(lines) != len(s.want) {
			t.Fatalf("step %d: %q, want %q", i, lines, s.want)
		}
		for j, w := range s.want {
			if !strings.Contains(lines[j], w) {
				t.Errorf("step %d line %d: %q lacks %q", i, j, lines[j], w)
			}
		}
	}
}
