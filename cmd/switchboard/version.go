package main

import (
	"fmt"
	"runtime/debug"
)

// versionString is the program's version: the -ldflags value when set,
// else the module version, with the commit, its time and whether the tree
// had local changes, as the Go toolchain stamped them into the binary.
func versionString(info *debug.BuildInfo, ok bool) string {
	v := version
	if !ok {
		return v
	}
	if v == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		v = info.Main.Version
	}
	var rev, at, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = ", modified"
			}
		}
	}
	out := v
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		out += fmt.Sprintf(" (commit %s%s", rev, dirty)
		if at != "" {
			out += " of " + at
		}
		out += ")"
	}
	return fmt.Sprintf("%s %s", out, info.GoVersion)
}
