//go:build unix

package edge

import (
	"fmt"
	"os"
	"syscall"
)

// checkOwner refuses a directory owned by another user.
func checkOwner(dir string, fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := os.Geteuid(); int(st.Uid) != uid {
		return fmt.Errorf("%s is owned by uid %d, not by this user (uid %d)", dir, st.Uid, uid)
	}
	return nil
}
