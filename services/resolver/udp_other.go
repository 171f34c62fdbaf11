//go:build !linux

package resolver

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// xnetBatch is the portable batchConn: x/net's ReadBatch and WriteBatch,
// which move one datagram per system call outside Linux.
type xnetBatch struct {
	pc interface {
		ReadBatch(ms []ipv4.Message, flags int) (int, error)
		WriteBatch(ms []ipv4.Message, flags int) (int, error)
	}
	in, out []ipv4.Message
}

func newBatchConn(pc *net.UDPConn) (batchConn, error) {
	b := &xnetBatch{in: make([]ipv4.Message, batchSize), out: make([]ipv4.Message, batchSize)}
	if a, ok := pc.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil {
		b.pc = ipv4.NewPacketConn(pc)
	} else {
		b.pc = ipv6.NewPacketConn(pc)
	}
	for i := range b.in {
		b.in[i].Buffers = [][]byte{make([]byte, maxDatagram)}
		b.out[i].Buffers = [][]byte{make([]byte, 0, maxDatagram)}
	}
	return b, nil
}

func (b *xnetBatch) read() (int, error) { return b.pc.ReadBatch(b.in, 0) }

func (b *xnetBatch) datagram(i int) ([]byte, netip.AddrPort) {
	m := &b.in[i]
	ua, ok := m.Addr.(*net.UDPAddr)
	if !ok {
		return nil, netip.AddrPort{}
	}
	return m.Buffers[0][:m.N], ua.AddrPort()
}

func (b *xnetBatch) replyBuf(k int) []byte { return b.out[k].Buffers[0][:0] }

func (b *xnetBatch) setReply(k, i int, p []byte) {
	b.out[k].Buffers[0] = p
	b.out[k].Addr = b.in[i].Addr
}

func (b *xnetBatch) write(k int) error {
	for sent := 0; sent < k; {
		w, err := b.pc.WriteBatch(b.out[sent:k], 0)
		if err != nil {
			return err
		}
		sent += w
	}
	return nil
}
