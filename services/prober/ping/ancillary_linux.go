package ping

import (
	"encoding/binary"
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// enableAncillary asks the kernel for the TTL (hop limit) and a receive
// timestamp of every packet, and returns a buffer for them.
func enableAncillary(pc net.PacketConn, v6 bool) ([]byte, error) {
	sc, ok := pc.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%T has no descriptor", pc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); serr != nil {
			return
		}
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTTL, 1)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return nil, err
	}
	return make([]byte, unix.CmsgSpace(16)+unix.CmsgSpace(4)+64), nil
}

// parseAncillary returns the TTL and kernel receive time in oob.
func parseAncillary(oob []byte) (int, time.Time) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, time.Time{}
	}
	var ttl int
	var at time.Time
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16:
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:]))
			at = time.Unix(sec, nsec)
		case (m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TTL ||
			m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT) && len(m.Data) >= 4:
			ttl = int(int32(binary.NativeEndian.Uint32(m.Data)))
		}
	}
	return ttl, at
}
