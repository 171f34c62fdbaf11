//go:build !unix

package edge

// fileLimit is unknown here.
func fileLimit() uint64 { return 0 }
