package netx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ListenFDsEnv is the environment variable through which a process hands
// its listening sockets to its successor (see Handoff): JSON naming each
// socket passed as descriptor 3, 4, ... and the descriptor of the pipe the
// successor reports readiness on.
const ListenFDsEnv = "SWITCHBOARD_LISTEN_FDS"

// Socket describes a listening socket handed from one process to the
// next: its role, and the network and address it was asked for (the flag's
// value, port 0 included, not the bound address), which is how the
// successor, asking for the same, finds it.
type Socket struct {
	Name    string `json:"name"`
	Network string `json:"network"` // "tcp", "udp" or "unix"
	Addr    string `json:"addr"`
}

// handoffState is ListenFDsEnv's value.
type handoffState struct {
	Sockets []Socket `json:"sockets"` // at descriptors 3, 4, ...
	Ready   int      `json:"ready"`   // write end of the readiness pipe
}

// firstFD is the first descriptor os/exec gives ExtraFiles.
const firstFD = 3

// Handoff is a set of listening sockets prepared for a successor process,
// which shares them with this one: the kernel keeps one socket and one
// accept queue open across both processes, so connections arriving while
// the successor starts wait in the queue and are accepted by whichever
// process accepts next. Nothing is refused or reset at any point, unlike
// SO_REUSEPORT, where each process has its own queue and the connections
// waiting on the old one are reset when it closes.
type Handoff struct {
	socks []Socket
	files []*os.File
}

// Add adds a duplicate of c's socket (a *net.TCPListener, *net.UDPConn or
// *net.UnixListener). The duplicate leaves the socket non-blocking, which
// this process's own accept loop depends on: (*net.TCPListener).File would
// not, because os/exec switches such a file, and so the socket both
// processes share, to blocking mode. A Unix listener is told not to remove
// its path when this process closes it: the successor serves there.
func (h *Handoff) Add(s Socket, c syscall.Conn) error {
	if s.Name == "" || s.Network == "" {
		return fmt.Errorf("netx: handoff of %+v: name and network are required", s)
	}
	if ul, ok := c.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	f, err := dupSocket(c, s.Name)
	if err != nil {
		return fmt.Errorf("netx: handoff of %s (%s %s): %w", s.Name, s.Network, s.Addr, err)
	}
	h.socks = append(h.socks, s)
	h.files = append(h.files, f)
	return nil
}

// Sockets lists the sockets added, in order.
func (h *Handoff) Sockets() []Socket { return append([]Socket(nil), h.socks...) }

// Close closes this process's duplicates (Start does so itself).
func (h *Handoff) Close() error {
	var errs []error
	for _, f := range h.files {
		errs = append(errs, f.Close())
	}
	h.files = nil
	return errors.Join(errs...)
}

// Start starts cmd as the successor, with the sockets and a readiness pipe
// as its ExtraFiles (which must be empty) and ListenFDsEnv added to its
// environment (os.Environ() when cmd.Env is nil; an inherited ListenFDsEnv
// is replaced). It closes this process's duplicates either way. The
// returned Successor tells when the successor serves.
func (h *Handoff) Start(cmd *exec.Cmd) (*Successor, error) {
	defer h.Close()
	if len(cmd.ExtraFiles) > 0 {
		return nil, errors.New("netx: handoff: cmd.ExtraFiles must be empty")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("netx: handoff: readiness pipe: %w", err)
	}
	defer w.Close()
	st := handoffState{Sockets: h.socks, Ready: firstFD + len(h.files)}
	if st.Sockets == nil {
		st.Sockets = []Socket{}
	}
	val, err := json.Marshal(st)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("netx: handoff: %w", err)
	}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = append(withoutEnv(env, ListenFDsEnv), ListenFDsEnv+"="+string(val))
	cmd.ExtraFiles = append(append([]*os.File(nil), h.files...), w)
	if err := cmd.Start(); err != nil {
		r.Close()
		return nil, fmt.Errorf("netx: handoff: start %s: %w", cmd.Path, err)
	}
	s := &Successor{cmd: cmd, ready: r, exited: make(chan struct{})}
	// The successor outlives this process when all goes well; this
	// goroutine ends when it exits, or with this process.
	go func() {
		s.err = cmd.Wait()
		close(s.exited)
	}()
	return s, nil
}

func withoutEnv(env []string, key string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// Successor is a process started by Handoff.Start.
type Successor struct {
	cmd    *exec.Cmd
	ready  *os.File
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed
}

// Pid returns the successor's process id.
func (s *Successor) Pid() int { return s.cmd.Process.Pid }

// Ready waits until the successor reports that it serves (nil), or exits
// or closes the pipe without doing so, or ctx ends (an error). After an
// error the successor may still be running: Abort stops it.
func (s *Successor) Ready(ctx context.Context) error {
	defer s.ready.Close()
	got := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := io.ReadFull(s.ready, b[:])
		got <- err
	}()
	select {
	case err := <-got:
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("netx: successor %d exited before it was ready: %v", s.Pid(), s.err)
		case <-ctx.Done():
		}
		return fmt.Errorf("netx: successor %d closed its readiness pipe without reporting ready", s.Pid())
	case <-ctx.Done():
		s.ready.Close() // ends the read
		<-got
		return fmt.Errorf("netx: successor %d not ready: %w", s.Pid(), ctx.Err())
	}
}

// Signal sends sig to the successor (SIGTERM to have it drain and stop).
func (s *Successor) Signal(sig os.Signal) error { return s.cmd.Process.Signal(sig) }

// Abort kills the successor (after a failed Ready) and waits for it.
func (s *Successor) Abort() {
	s.cmd.Process.Kill()
	<-s.exited
}

// Inherited holds the sockets a process was handed by its predecessor.
type Inherited struct {
	mu    sync.Mutex
	socks []inheritedSocket
	ready *os.File
}

type inheritedSocket struct {
	Socket
	f     *os.File // nil once taken or closed
	taken bool
}

// Inherit takes the sockets described by ListenFDsEnv, as lookup reads it
// (os.LookupEnv in a real process). It returns nil when the variable is
// not set, and an error when it is set but the descriptors are not what it
// says (a stale variable from an outer environment, say).
func Inherit(lookup func(string) (string, bool)) (*Inherited, error) {
	v, ok := lookup(ListenFDsEnv)
	if !ok || v == "" {
		return nil, nil
	}
	var st handoffState
	if err := json.Unmarshal([]byte(v), &st); err != nil {
		return nil, fmt.Errorf("netx: %s: %w", ListenFDsEnv, err)
	}
	in := &Inherited{}
	fail := func(err error) (*Inherited, error) {
		in.CloseUnused()
		if in.ready != nil {
			in.ready.Close()
		}
		return nil, fmt.Errorf("netx: %s (unset it unless a predecessor set it): %w", ListenFDsEnv, err)
	}
	for i, s := range st.Sockets {
		fd := firstFD + i
		if err := checkInherited(fd, s.Network); err != nil {
			return fail(fmt.Errorf("descriptor %d (%s %s %s): %w", fd, s.Name, s.Network, s.Addr, err))
		}
		in.socks = append(in.socks, inheritedSocket{Socket: s, f: os.NewFile(uintptr(fd), "inherited:"+s.Name)})
	}
	if st.Ready > 0 {
		if err := checkInherited(st.Ready, ""); err != nil {
			return fail(fmt.Errorf("readiness descriptor %d: %w", st.Ready, err))
		}
		in.ready = os.NewFile(uintptr(st.Ready), "readiness")
	}
	return in, nil
}

// take finds the socket for (name, network, addr): the one of that name,
// network and address, else, when addr names a fixed port or path, any
// untaken one of that network and address (a listener renamed by a new
// configuration).
func (in *Inherited) take(name, network, addr string) *os.File {
	in.mu.Lock()
	defer in.mu.Unlock()
	pick := func(match func(s *inheritedSocket) bool) *os.File {
		for i := range in.socks {
			s := &in.socks[i]
			if !s.taken && s.f != nil && s.Network == network && s.Addr == addr && match(s) {
				s.taken = true
				f := s.f
				s.f = nil
				return f
			}
		}
		return nil
	}
	if f := pick(func(s *inheritedSocket) bool { return s.Name == name }); f != nil {
		return f
	}
	if network != "unix" {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" || port == "" {
			return nil
		}
	}
	return pick(func(*inheritedSocket) bool { return true })
}

// Listener returns the inherited stream socket for (name, network, addr),
// or nil when there is none and the caller should bind one itself.
func (in *Inherited) Listener(name, network, addr string) (net.Listener, error) {
	f := in.take(name, network, addr)
	if f == nil {
		return nil, nil
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("netx: inherited %s (%s %s): %w", name, network, addr, err)
	}
	return ln, nil
}

// PacketConn returns the inherited datagram socket for (name, network,
// addr), or nil when there is none.
func (in *Inherited) PacketConn(name, network, addr string) (net.PacketConn, error) {
	f := in.take(name, network, addr)
	if f == nil {
		return nil, nil
	}
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("netx: inherited %s (%s %s): %w", name, network, addr, err)
	}
	return pc, nil
}

// CloseUnused closes the sockets nobody took (listeners the new
// configuration no longer has) and returns them. The predecessor's copies
// close when it retires.
func (in *Inherited) CloseUnused() []Socket {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []Socket
	for i := range in.socks {
		s := &in.socks[i]
		if s.f != nil {
			s.f.Close()
			s.f = nil
			out = append(out, s.Socket)
		}
	}
	return out
}

// Ready tells the predecessor that this process serves; it then closes its
// copies of the sockets and drains. Calling it again does nothing.
func (in *Inherited) Ready() error {
	in.mu.Lock()
	f := in.ready
	in.ready = nil
	in.mu.Unlock()
	if f == nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Write([]byte{'1'}); err != nil {
		return fmt.Errorf("netx: telling the predecessor we are ready: %w", err)
	}
	return nil
}

// String lists the inherited sockets, for logs.
func (in *Inherited) String() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	parts := make([]string, 0, len(in.socks))
	for i, s := range in.socks {
		parts = append(parts, s.Name+"="+s.Network+":"+s.Addr+"@"+strconv.Itoa(firstFD+i))
	}
	return strings.Join(parts, " ")
}
