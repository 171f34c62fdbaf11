package main

import (
	"runtime/debug"
	"testing"
)

func TestVersionString(t *testing.T) {
	for _, tc := range []struct {
		name string
		info *debug.BuildInfo
		want string
	}{
		{"a module version and its commit", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.3.0"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "69f1afd0123456789abcdef"}, {Key: "vcs.time", Value: "2026-12-02T07:10:00Z"}, {Key: "vcs.modified", Value: "false"}}},
			"v0.3.0 (commit 69f1afd01234 of 2026-12-02T07:10:00Z) go1.26.8"},
		{"a checkout with local changes", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"}}},
			"dev (commit abc, modified) go1.26.8"},
		{"nothing stamped (go run)", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, "dev go1.26.8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := versionString(tc.info, true); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
