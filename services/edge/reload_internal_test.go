package edge

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestReadFilesChecksTheSettledPrint: the watcher reloads only the content
// it saw settle; files that moved on since (an in-place write caught half
// way) are neither applied nor counted as an error.
func TestReadFilesChecksTheSettledPrint(t *testing.T) {
	p := filepath.Join(t.TempDir(), "edge.yaml")
	os.WriteFile(p, []byte("routes:\n  - {name: a, service: web}\n  - {name: b, service: web}\n"), 0o644)
	e := &Edge{cfg: &Config{ConfigFile: p}}
	settled := e.filesPrint()
	l, err := e.readFiles(&settled)
	if err != nil || len(l.file.Routes) != 2 || l.print != settled {
		t.Fatalf("settled files: %v, %+v", err, l)
	}
	// Half of an in-place rewrite: valid YAML, one route short.
	os.WriteFile(p, []byte("routes:\n  - {name: a, service: web}\n"), 0o644)
	if _, err := e.readFiles(&settled); !errors.Is(err, errFilesMoved) {
		t.Fatalf("files changed since they settled: %v, want errFilesMoved", err)
	}
	if l, err := e.readFiles(nil); err != nil || len(l.file.Routes) != 1 {
		t.Fatalf("without a print to match (SIGHUP, reload): %v", err)
	}
}
