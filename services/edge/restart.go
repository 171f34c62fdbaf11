package edge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard-net/switchboard/pkg/netx"
	"github.com/switchboard-net/switchboard/pkg/service"
)

// Restarting without refusing a connection.
//
// On SIGUSR2 the edge (run as its own program: Command) starts a new
// process of its executable — the file now at that path, so replacing the
// binary first upgrades it, and the new process reads the configuration
// anew — with its arguments, environment and duplicates of every listening
// socket (HTTP, HTTPS, TCP, UDP, wire, gRPC, admin, runtime API), described
// in netx.ListenFDsEnv. Both processes now hold the same sockets — one
// socket, one accept queue — so nothing is refused and nothing queued is
// lost, whichever process accepts. The new process waits for the balancer's
// first endpoint set (at most warmUpLimit), serves, and says so on a pipe;
// the old one then retires: it closes its copies of the sockets, answers
// what is in flight with Connection: close (HTTP/2: GOAWAY), gives kept-
// alive connections --drain-delay to move over, closes the idle ones and
// drains within --shutdown-grace. If the new process fails or is not
// ready within --restart-timeout, it is killed and the old one carries on.
//
// Why not SO_REUSEPORT: each process would have its own socket and accept
// queue, and Linux resets the connections waiting in a closed socket's
// queue (unless net.ipv4.tcp_migrate_req is set, Linux 5.14+), so the old
// process could never stop accepting without losing some; it also lets any
// process of the same user bind the port alongside. Passing the sockets
// keeps a single queue, works on every Unix, and is what nginx (USR2),
// HAProxy (-x) and tableflip do.

// warmUpLimit bounds how long a new process waits for the balancer's first
// endpoint set before it takes over the listeners with the routes it has.
const warmUpLimit = 5 * time.Second

// firstSetSettle is how long the balancer's stream must be quiet after its
// first messages for the first endpoint set to count as complete.
const firstSetSettle = 250 * time.Millisecond

// startRestarts installs the SIGUSR2 handler when the edge runs as its own
// program, and the pid file.
func (e *Edge) startRestarts(rt *service.Runtime) error {
	if path := e.cfg.PIDFile; path != "" {
		rt.OnReady(func() {
			if err := writePIDFile(path); err != nil {
				rt.Log.Error("writing the pid file", "path", path, "err", err)
			}
		})
		rt.OnShutdown(func(context.Context) error { removePIDFile(path); return nil })
	}
	if !e.cfg.restart || restartSignal == nil {
		return nil
	}
	if e.cfg.RestartTimeout <= 0 {
		return &service.FlagError{Err: fmt.Errorf("--restart-timeout must be positive, got %v", e.cfg.RestartTimeout)}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, restartSignal)
	// SIGUSR2 stays caught until the process exits: one arriving while
	// this process drains is dropped, not fatal.
	rt.Go("restart", func(ctx context.Context) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-sig:
			}
			s, err := e.restart(ctx, rt)
			if err != nil {
				rt.Log.Error("restart failed; this process keeps serving", "err", err)
				continue
			}
			if !rt.Retire() {
				// Stopped (SIGTERM) while the new process started: the
				// operator asked for no edge, so it goes too.
				rt.Log.Warn("stopping during the restart; stopping the new process too", "pid", s.Pid())
				s.Signal(syscall.SIGTERM) // it drains what it took
			}
			return nil
		}
	})
	return nil
}

// restart starts a successor on this process's sockets and waits until it
// serves.
func (e *Edge) restart(ctx context.Context, rt *service.Runtime) (*netx.Successor, error) {
	if os.Getpid() == 1 {
		return nil, errors.New("running as PID 1 (a container's main process): the container would stop with this process and take the new one with it; restart the container instead (docs/edge.md)")
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the executable: %w", err)
	}
	h, err := rt.HandOver()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	rt.Log.Info("restarting: a new process takes over the listening sockets", "exe", exe, "sockets", len(h.Sockets()))
	s, err := h.Start(cmd)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.RestartTimeout)
	defer cancel()
	if err := s.Ready(ctx); err != nil {
		s.Abort()
		return nil, err
	}
	rt.Log.Info("restart: the new process serves; this one retires", "pid", s.Pid())
	return s, nil
}

// warmUp holds a process that took its sockets over from a predecessor
// until the balancer's first endpoint set has arrived (or warmUpLimit has
// passed): the predecessor accepts meanwhile, so routes learnt from the
// balancer are there before this process answers its first request.
func (e *Edge) warmUp(ctx context.Context, rt *service.Runtime) error {
	if !rt.Inherited() || e.synced == nil {
		return nil
	}
	t := time.NewTimer(warmUpLimit)
	defer t.Stop()
	select {
	case <-e.synced:
	case <-t.C:
		rt.Log.Warn("no endpoint set from the balancer yet; taking over with the routes at hand", "waited", warmUpLimit)
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// writePIDFile writes this process's id to path, atomically.
func writePIDFile(path string) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// removePIDFile removes path if it still names this process (after a
// restart it names the successor).
func removePIDFile(path string) {
	b, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(path)
	}
}
