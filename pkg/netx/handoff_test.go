//go:build unix

package netx

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// childEnv marks the test binary run as a successor by TestHandoff*.
const childEnv = "NETX_TEST_HANDOFF_CHILD"

// TestHandoffChild is the successor process of the handoff tests: it takes
// the sockets it is asked for (names and addresses in childEnv), answers
// "child" on each, reports ready, and exits when its standard input closes.
func TestHandoffChild(t *testing.T) {
	spec, ok := os.LookupEnv(childEnv)
	if !ok {
		t.Skip("run by the handoff tests as a successor process")
	}
	in, err := Inherit(os.LookupEnv)
	if err != nil || in == nil {
		fmt.Fprintf(os.Stderr, "inherit: %v (nil: %v)\n", err, in == nil)
		os.Exit(3)
	}
	for _, want := range strings.Fields(spec) { // name,network,addr
		f := strings.SplitN(want, ",", 3)
		if f[1] == "udp" {
			pc, err := in.PacketConn(f[0], f[1], f[2])
			if err != nil || pc == nil {
				fmt.Fprintf(os.Stderr, "packet conn %s: %v\n", want, err)
				os.Exit(3)
			}
			go func() {
				buf := make([]byte, 64)
				for {
					_, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					pc.WriteTo([]byte("child"), from)
				}
			}()
			continue
		}
		ln, err := in.Listener(f[0], f[1], f[2])
		if err != nil || ln == nil {
			fmt.Fprintf(os.Stderr, "listener %s: %v\n", want, err)
			os.Exit(3)
		}
		go answer(ln, "child")
	}
	if unused := in.CloseUnused(); len(unused) > 0 {
		fmt.Fprintf(os.Stderr, "unused: %v\n", unused)
		os.Exit(3)
	}
	if err := in.Ready(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// answer writes who+"\n" on every connection ln accepts, until ln closes.
func answer(ln net.Listener, who string) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(testTimeout))
			io.WriteString(c, who+"\n")
			io.Copy(io.Discard, c) // until the client closes
		}()
	}
}

// startChild starts the test binary as a successor with h's sockets, asking
// for want ("name,network,addr" each); closing the returned writer ends it.
func startChild(t *testing.T, h *Handoff, want ...string) (*Successor, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHandoffChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join(want, " "))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	s, err := h.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-s.exited:
		case <-time.After(testTimeout):
			s.Abort()
		}
	})
	return s, stdin
}

func nonblocking(t *testing.T, c syscall.Conn) bool {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var ferr error
	rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) })
	if ferr != nil {
		t.Fatal(ferr)
	}
	return flags&unix.O_NONBLOCK != 0
}

// TestHandoffKeepsEveryConnection hands a TCP listener to a successor
// process while clients keep connecting, then closes this process's copy:
// every connection is answered, first by this process, then by the child,
// and none is refused or reset.
func TestHandoffKeepsEveryConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	parentDone := make(chan struct{})
	go func() { answer(ln, "parent"); close(parentDone) }()
	addr := ln.Addr().String()

	var (
		mu     sync.Mutex
		counts = map[string]int{}
		fails  []error
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	deadline := time.Now().Add(testTimeout)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() && time.Now().Before(deadline) {
				c, err := net.DialTimeout("tcp", addr, testTimeout)
				var who string
				if err == nil {
					c.SetDeadline(time.Now().Add(testTimeout))
					who, err = bufio.NewReader(c).ReadString('\n')
					c.Close()
				}
				mu.Lock()
				if err != nil {
					fails = append(fails, err)
				} else {
					counts[strings.TrimSpace(who)]++
				}
				mu.Unlock()
			}
		}()
	}
	served := func(who string) int { mu.Lock(); defer mu.Unlock(); return counts[who] }
	waitFor(t, "the parent to serve", func() bool { return served("parent") > 0 })

	var h Handoff
	if err := h.Add(Socket{Name: "web", Network: "tcp", Addr: "127.0.0.1:0"}, ln.(*net.TCPListener)); err != nil {
		t.Fatal(err)
	}
	s, _ := startChild(t, &h, "web,tcp,127.0.0.1:0")
	if !nonblocking(t, ln.(*net.TCPListener)) {
		t.Fatal("starting the successor left the shared socket in blocking mode")
	}
	if err := s.Ready(testContext(t)); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	<-parentDone
	waitFor(t, "the child to serve", func() bool { return served("child") > 20 })
	stop.Store(true)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("answers: %v; failures: %d", counts, len(fails))
	if len(fails) > 0 {
		t.Fatalf("%d connections failed during the handoff, first: %v", len(fails), fails[0])
	}
}

// TestHandoffUnixAndUDP hands a Unix listener and a UDP socket over: the
// Unix path survives this process closing its copy, and datagrams reach
// the child.
func TestHandoffUnixAndUDP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ul, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var h Handoff
	if err := h.Add(Socket{Name: "rt", Network: "unix", Addr: path}, ul.(*net.UnixListener)); err != nil {
		t.Fatal(err)
	}
	if err := h.Add(Socket{Name: "dns", Network: "udp", Addr: "127.0.0.1:0"}, pc.(*net.UDPConn)); err != nil {
		t.Fatal(err)
	}
	s, _ := startChild(t, &h, "rt,unix,"+path, "dns,udp,127.0.0.1:0")
	if err := s.Ready(testContext(t)); err != nil {
		t.Fatal(err)
	}
	udpAddr := pc.LocalAddr().String()
	ul.Close()
	pc.Close()

	c, err := net.DialTimeout("unix", path, testTimeout)
	if err != nil {
		t.Fatalf("unix socket gone after the parent closed its copy: %v", err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	if who, _ := bufio.NewReader(c).ReadString('\n'); who != "child\n" {
		t.Fatalf("unix answer %q", who)
	}
	c.Close()

	u, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	buf := make([]byte, 16)
	// Datagrams may be lost; a few tries, each bounded.
	for i := 0; ; i++ {
		u.Write([]byte("hi"))
		u.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := u.Read(buf)
		if err == nil {
			if string(buf[:n]) != "child" {
				t.Fatalf("udp answer %q", buf[:n])
			}
			break
		}
		if i == 10 {
			t.Fatalf("no UDP answer from the child: %v", err)
		}
	}
}

// TestHandoffChildFails reports a successor that exits before it is ready.
func TestHandoffChildFails(t *testing.T) {
	ln := listenLoopback(t)
	var h Handoff
	if err := h.Add(Socket{Name: "web", Network: "tcp", Addr: "127.0.0.1:0"}, ln.(*net.TCPListener)); err != nil {
		t.Fatal(err)
	}
	// Asks for a socket it was not given: exits 3 before Ready.
	s, _ := startChild(t, &h, "other,tcp,127.0.0.1:0")
	err := s.Ready(testContext(t))
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("Ready = %v, want an early exit", err)
	}
	// This process still serves.
	go answer(ln, "parent")
	c := dial(t, ln.Addr())
	if who, _ := bufio.NewReader(c).ReadString('\n'); who != "parent\n" {
		t.Fatalf("answer %q", who)
	}
}

// TestInheritMatching checks which inherited socket a request gets.
func TestInheritMatching(t *testing.T) {
	var files []*os.File
	mk := func(network, addr string) *os.File {
		var c syscall.Conn
		if network == "udp" {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { pc.Close() })
			c = pc.(*net.UDPConn)
		} else {
			l := listenLoopback(t)
			c = l.(*net.TCPListener)
		}
		f, err := dupSocket(c, addr)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		return f
	}
	in := &Inherited{socks: []inheritedSocket{
		{Socket: Socket{Name: "http", Network: "tcp", Addr: "127.0.0.1:0"}, f: mk("tcp", "a")},
		{Socket: Socket{Name: "grpc", Network: "tcp", Addr: "127.0.0.1:0"}, f: mk("tcp", "b")},
		{Socket: Socket{Name: "tcp0", Network: "tcp", Addr: ":9000"}, f: mk("tcp", "c")},
		{Socket: Socket{Name: "udp0", Network: "udp", Addr: ":9000"}, f: mk("udp", "d")},
		{Socket: Socket{Name: "gone", Network: "tcp", Addr: ":9001"}, f: mk("tcp", "e")},
	}}
	got := func(name, network, addr string) bool {
		t.Helper()
		var c io.Closer
		var err error
		if network == "udp" {
			var pc net.PacketConn
			pc, err = in.PacketConn(name, network, addr)
			if pc != nil {
				c = pc
			}
		} else {
			var l net.Listener
			l, err = in.Listener(name, network, addr)
			if l != nil {
				c = l
			}
		}
		if err != nil {
			t.Fatalf("%s %s %s: %v", name, network, addr, err)
		}
		if c != nil {
			c.Close()
		}
		return c != nil
	}
	for _, tc := range []struct {
		name, network, addr string
		want                bool
	}{
		{"admin", "tcp", "127.0.0.1:0", false}, // port 0: the name must match
		{"grpc", "tcp", "127.0.0.1:0", true},
		{"grpc", "tcp", "127.0.0.1:0", false}, // taken
		{"tcp1", "tcp", ":9000", true},        // renamed, same fixed address
		{"udp0", "tcp", ":9000", false},       // wrong network
		{"udp1", "udp", ":9000", true},
		{"http", "tcp", "127.0.0.1:8080", false}, // address changed
	} {
		if g := got(tc.name, tc.network, tc.addr); g != tc.want {
			t.Errorf("%s %s %s: inherited %v, want %v", tc.name, tc.network, tc.addr, g, tc.want)
		}
	}
	unused := in.CloseUnused()
	var names []string
	for _, s := range unused {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "http,gone" {
		t.Fatalf("unused = %v, want http, gone", names)
	}
	if err := in.Ready(); err != nil { // no pipe: nothing to do
		t.Fatal(err)
	}
}

func TestInheritUnsetOrMalformed(t *testing.T) {
	in, err := Inherit(func(string) (string, bool) { return "", false })
	if in != nil || err != nil {
		t.Fatalf("unset: %v, %v", in, err)
	}
	_, err = Inherit(func(string) (string, bool) { return "{nope", true })
	if err == nil || !strings.Contains(err.Error(), ListenFDsEnv) {
		t.Fatalf("malformed: %v", err)
	}
}

// TestHandoffStartRefusesExtraFiles: the descriptors' order is the protocol.
func TestHandoffStartRefusesExtraFiles(t *testing.T) {
	var h Handoff
	cmd := exec.Command("true")
	cmd.ExtraFiles = []*os.File{os.Stdin}
	if _, err := h.Start(cmd); err == nil {
		t.Fatal("Start accepted ExtraFiles")
	}
}
