//go:build !linux

package netnstest

import "testing"

// Do needs Linux network namespaces; elsewhere it skips the test.
func Do(t testing.TB, ns string, fn func()) {
	t.Helper()
	if ns == "" {
		fn()
		return
	}
	t.Skip("network namespaces are Linux only")
}
