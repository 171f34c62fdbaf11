// Package netstat reads the host's socket table (/proc/net/tcp, tcp6, udp,
// udp6) and per-interface counters (/proc/net/dev), like ss and ip -s link.
package netstat

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// MaxLines bounds how many lines one table parse reads, so a hostile or
// enormous file cannot exhaust memory.
const MaxLines = 1 << 20

// Socket is one row of a /proc/net socket table.
type Socket struct {
	// Protocol is "tcp", "tcp6", "udp" or "udp6".
	Protocol string
	// Local and Remote are the socket's endpoints.
	Local, Remote netip.AddrPort
	// State is the kernel's state name as ss prints it (LISTEN, ESTAB...).
	State string
	// UID owns the socket.
	UID uint32
	// Inode is the socket inode.
	Inode uint64
}

// tcpStates are the kernel's TCP state numbers (include/net/tcp_states.h),
// named as ss names them.
var tcpStates = [...]string{
	1: "ESTABLISHED", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2",
	6: "TIME-WAIT", 7: "UNCONN", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING",
	12: "NEW-SYN-RECV",
}

// StateName names a kernel socket state number; UDP sockets in state 7
// (TCP_CLOSE) are unconnected, which ss prints as UNCONN.
func StateName(proto string, st uint8) string {
	if int(st) < len(tcpStates) && tcpStates[st] != "" {
		name := tcpStates[st]
		if st == 7 && strings.HasPrefix(proto, "tcp") {
			return "CLOSE"
		}
		return name
	}
	return fmt.Sprintf("UNKNOWN-%d", st)
}

// Protocols are the tables Sockets reads by default.
var Protocols = []string{"tcp", "tcp6", "udp", "udp6"}

// Sockets reads the named tables (all of Protocols when none) under root
// ("/proc" normally). A missing table (no IPv6) is skipped.
func Sockets(root string, protocols ...string) ([]Socket, error) {
	if len(protocols) == 0 {
		protocols = Protocols
	}
	var out []Socket
	for _, p := range protocols {
		if !isProtocol(p) {
			return nil, fmt.Errorf("protocol %q: want tcp, tcp6, udp or udp6", p)
		}
		f, err := os.Open(filepath.Join(root, "net", p))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s table: %w", p, err)
		}
		socks, err := ParseSockets(f, p)
		f.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, socks...)
	}
	return out, nil
}

func isProtocol(p string) bool {
	for _, q := range Protocols {
		if p == q {
			return true
		}
	}
	return false
}

// ParseSockets parses one /proc/net/{tcp,tcp6,udp,udp6} table. The first
// line is the header; every other line must be a well-formed row.
func ParseSockets(r io.Reader, proto string) ([]Socket, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	var out []Socket
	for n := 0; sc.Scan(); n++ {
		if n == 0 {
			continue // header
		}
		if n > MaxLines {
			return nil, fmt.Errorf("%s table: more than %d lines", proto, MaxLines)
		}
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		s, err := parseSocketLine(line, proto)
		if err != nil {
			return nil, fmt.Errorf("%s table line %d: %w", proto, n+1, err)
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s table: %w", proto, err)
	}
	return out, nil
}

func parseSocketLine(line, proto string) (Socket, error) {
	// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
	f := strings.Fields(line)
	if len(f) < 10 {
		return Socket{}, fmt.Errorf("%d fields, want at least 10", len(f))
	}
	local, err := parseHexAddrPort(f[1])
	if err != nil {
		return Socket{}, fmt.Errorf("local address: %w", err)
	}
	remote, err := parseHexAddrPort(f[2])
	if err != nil {
		return Socket{}, fmt.Errorf("remote address: %w", err)
	}
	st, err := strconv.ParseUint(f[3], 16, 8)
	if err != nil {
		return Socket{}, fmt.Errorf("state %q: %w", f[3], err)
	}
	uid, err := strconv.ParseUint(f[7], 10, 32)
	if err != nil {
		return Socket{}, fmt.Errorf("uid %q: %w", f[7], err)
	}
	inode, err := strconv.ParseUint(f[9], 10, 64)
	if err != nil {
		return Socket{}, fmt.Errorf("inode %q: %w", f[9], err)
	}
	return Socket{
		Protocol: proto, Local: local, Remote: remote,
		State: StateName(proto, uint8(st)), UID: uint32(uid), Inode: inode,
	}, nil
}

// parseHexAddrPort decodes "0100007F:1F90": the address is the kernel's
// in-memory bytes printed as 32-bit words in host (little-endian) order,
// the port is big-endian hex.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%q: no port", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil || len(p) != 4 {
		return netip.AddrPort{}, fmt.Errorf("%q: bad port", s)
	}
	if len(a) != 8 && len(a) != 32 {
		return netip.AddrPort{}, fmt.Errorf("%q: address is %d hex digits, want 8 or 32", s, len(a))
	}
	raw, err := hex.DecodeString(a)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: %w", s, err)
	}
	// Each 32-bit word was printed as a little-endian number: reverse it.
	for i := 0; i < len(raw); i += 4 {
		w := binary.LittleEndian.Uint32(raw[i:])
		binary.BigEndian.PutUint32(raw[i:], w)
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// Interface is one interface's counters from /proc/net/dev.
type Interface struct {
	// Name is the interface name.
	Name string
	// Receive counters.
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	// Transmit counters.
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// Interfaces reads root/net/dev ("/proc" normally).
func Interfaces(root string) ([]Interface, error) {
	f, err := os.Open(filepath.Join(root, "net", "dev"))
	if err != nil {
		return nil, fmt.Errorf("read interface counters: %w", err)
	}
	defer f.Close()
	return ParseDev(f)
}

// ParseDev parses /proc/net/dev: two header lines, then "name: 16 numbers".
func ParseDev(r io.Reader) ([]Interface, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	var out []Interface
	for n := 0; sc.Scan(); n++ {
		if n < 2 {
			continue
		}
		if n > MaxLines {
			return nil, fmt.Errorf("net/dev: more than %d lines", MaxLines)
		}
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		name, rest, ok := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("net/dev line %d: no interface name", n+1)
		}
		f := strings.Fields(rest)
		if len(f) < 16 {
			return nil, fmt.Errorf("net/dev line %d: %d counters, want 16", n+1, len(f))
		}
		var v [16]uint64
		for i := range v {
			x, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("net/dev line %d counter %d: %w", n+1, i+1, err)
			}
			v[i] = x
		}
		out = append(out, Interface{
			Name: name, RxBytes: v[0], RxPackets: v[1], RxErrors: v[2], RxDropped: v[3],
			TxBytes: v[8], TxPackets: v[9], TxErrors: v[10], TxDropped: v[11],
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("net/dev: %w", err)
	}
	return out, nil
}
