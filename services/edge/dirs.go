package edge

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// autoSocket is --runtime-socket's default: a path chosen at start (see
// runtimeSocketPath).
const autoSocket = "auto"

// defaultDataDir is --data-dir's default: $XDG_STATE_HOME/switchboard/edge,
// else ~/.local/state/switchboard/edge; empty when there is no home.
func defaultDataDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "switchboard", "edge")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "switchboard", "edge")
	}
	return ""
}

// runtimeSocketPath resolves --runtime-socket: auto is
// $XDG_RUNTIME_DIR/switchboard/edge.sock when the runtime's environment
// sets XDG_RUNTIME_DIR (a per-user 0700 directory), else
// <--data-dir>/edge.sock; "" disables the socket.
func runtimeSocketPath(cfg *Config, lookup func(string) (string, bool)) (string, error) {
	if cfg.RuntimeSocket != autoSocket {
		return cfg.RuntimeSocket, nil
	}
	if d, ok := lookup("XDG_RUNTIME_DIR"); ok && filepath.IsAbs(d) {
		return filepath.Join(d, "switchboard", "edge.sock"), nil
	}
	if cfg.DataDir == "" {
		return "", errors.New("--runtime-socket: no place for it: set --data-dir (there is no home directory) or XDG_RUNTIME_DIR, or pass a path")
	}
	return filepath.Join(cfg.DataDir, "edge.sock"), nil
}

// privateDir creates dir (and missing parents) with mode 0700 and checks
// that it is a directory of this user that nobody else can write to, so
// that nobody else can put a file or socket in it or swap the one there.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %04o): use a directory only this user can write to (chmod go-w)", dir, perm)
	}
	return checkOwner(dir, fi)
}

// listenPrivateSocket serves a Unix socket at path with mode 0600 in a
// private directory (privateDir). A socket left there by an earlier run is
// replaced when nobody answers on it. The socket is made under a temporary
// name, restricted, then renamed into place, so that it is never
// reachable with a wider mode. remove deletes it, if it is still ours.
func listenPrivateSocket(path string) (ln *net.UnixListener, remove func(), err error) {
	if err := privateDir(filepath.Dir(path)); err != nil {
		return nil, nil, err
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, nil, fmt.Errorf("%s: another process is serving it", path)
		}
		os.Remove(path)
	}
	tmp := path + ".new"
	os.Remove(tmp)
	ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, func(), error) {
		ln.Close()
		os.Remove(tmp)
		return nil, nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	ours, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	remove = func() {
		if fi, err := os.Lstat(path); err == nil && os.SameFile(fi, ours) {
			os.Remove(path)
		}
	}
	return ln, remove, nil
}
