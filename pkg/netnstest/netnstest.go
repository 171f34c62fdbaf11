// Package netnstest creates network namespaces and veth pairs for tests
// and deletes them when the test ends. Tests that need it skip when not
// root, except under CI, where CI runs as root and a skip would hide a
// failure.
package netnstest

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

var counter atomic.Uint32

// Require skips (or fails under CI) unless the test may create namespaces.
func Require(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "not root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "no ip command (iproute2)"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("network namespace tests need root and iproute2 under CI: %s", why)
	}
	t.Skip("network namespace test:", why)
}

// Run runs a command, failing the test on error.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Link is one test network: two ends of a veth pair, each in a namespace
// ("" is the test's own namespace), with addresses in a /24.
type Link struct {
	// NS holds the namespace of each end ("" for the caller's).
	NS [2]string
	// Dev holds each end's device name.
	Dev [2]string
	// Addr holds each end's address.
	Addr [2]netip.Addr
}

// Exec runs a command in the namespace of end i.
func (l *Link) Exec(t testing.TB, i int, args ...string) string {
	t.Helper()
	if l.NS[i] == "" {
		return Run(t, args...)
	}
	return Run(t, append([]string{"ip", "netns", "exec", l.NS[i]}, args...)...)
}

// NewLink creates namespaces and a veth pair between them. With hostEnd,
// end 0 stays in the caller's namespace. Everything is deleted at cleanup.
func NewLink(t testing.TB, hostEnd bool) *Link {
	t.Helper()
	Require(t)
	n := counter.Add(1)
	pid := os.Getpid()
	tag := fmt.Sprintf("%d%d", pid%100000, n)
	l := &Link{}
	subnet := [4]byte{10, byte(100 + pid%100), byte((pid/100)%200 + int(n)), 0}
	for i := 0; i < 2; i++ {
		l.Dev[i] = fmt.Sprintf("sbp%s%c", tag, 'a'+i)
		a := subnet
		a[3] = byte(i + 1)
		l.Addr[i] = netip.AddrFrom4(a)
		if i == 0 && hostEnd {
			continue
		}
		l.NS[i] = fmt.Sprintf("sbp%s%c", tag, 'a'+i)
		Run(t, "ip", "netns", "add", l.NS[i])
		ns := l.NS[i]
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	Run(t, "ip", "link", "add", l.Dev[0], "type", "veth", "peer", "name", l.Dev[1])
	dev0 := l.Dev[0]
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", dev0).Run() })
	for i := 0; i < 2; i++ {
		if l.NS[i] != "" {
			Run(t, "ip", "link", "set", l.Dev[i], "netns", l.NS[i])
			l.Exec(t, i, "ip", "link", "set", "lo", "up")
		}
		l.Exec(t, i, "ip", "addr", "add", l.Addr[i].String()+"/24", "dev", l.Dev[i])
		l.Exec(t, i, "ip", "link", "set", l.Dev[i], "up")
	}
	return l
}

// DropEveryOther adds an nftables rule in namespace ns that drops every
// second outgoing packet matching match (nft syntax, e.g. "icmp type
// echo-reply"). The table goes with the namespace.
func DropEveryOther(t testing.TB, ns, match string) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("nft is required under CI")
		}
		t.Skip("no nft")
	}
	pre := []string{"ip", "netns", "exec", ns, "nft"}
	Run(t, append(pre, "add", "table", "inet", "sbtest")...)
	Run(t, append(pre, "add", "chain", "inet", "sbtest", "out", "{ type filter hook output priority 0; }")...)
	Run(t, append(pre, append(append([]string{"add", "rule", "inet", "sbtest", "out"}, strings.Fields(match)...),
		"numgen", "inc", "mod", "2", "==", "0", "counter", "drop")...)...)
}

// Counter adds an nftables counter in namespace ns for incoming packets
// matching match and returns a function reading its packet count.
func Counter(t testing.TB, ns, match string) func() int {
	t.Helper()
	pre := []string{"ip", "netns", "exec", ns, "nft"}
	Run(t, append(pre, "add", "table", "inet", "sbcount")...)
	Run(t, append(pre, "add", "chain", "inet", "sbcount", "in", "{ type filter hook prerouting priority -300; }")...)
	Run(t, append(pre, append(append([]string{"add", "rule", "inet", "sbcount", "in"}, strings.Fields(match)...), "counter")...)...)
	return func() int {
		out := Run(t, append(pre, "list", "chain", "inet", "sbcount", "in")...)
		i := strings.Index(out, "counter packets ")
		if i < 0 {
			t.Fatalf("no counter in %s", out)
		}
		var n int
		fmt.Sscanf(out[i+len("counter packets "):], "%d", &n)
		return n
	}
}
