//go:build !linux

package ping

import (
	"net"
	"time"
)

// enableAncillary is a no-op where the kernel options are not wired up:
// RTTs are then measured in user space and TTLs are not reported.
func enableAncillary(net.PacketConn, bool) ([]byte, error) { return make([]byte, 128), nil }

func parseAncillary([]byte) (int, time.Time) { return 0, time.Time{} }
