package wire

import (
	"math/bits"
	"sync"
)

// Buffers for frame payloads come from power-of-two size classes, so a
// stream's queued DATA costs at most about twice its payload bytes and a
// steady flow of frames allocates nothing.
const (
	minClassShift = 6  // 64 B
	maxClassShift = 24 // 16 MiB == MaxMaxFrameSize
)

var bufPools [maxClassShift + 1]sync.Pool

func classOf(n int) int {
	if n <= 1<<minClassShift {
		return minClassShift
	}
	return bits.Len(uint(n - 1))
}

// getBuf returns a pooled buffer of length n (n <= MaxMaxFrameSize).
func getBuf(n int) *[]byte {
	c := classOf(n)
	if v := bufPools[c].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<c)
	return &b
}

// putBuf returns b to its pool.
func putBuf(b *[]byte) {
	if b == nil {
		return
	}
	c := classOf(cap(*b))
	if cap(*b) != 1<<c || c > maxClassShift {
		return
	}
	bufPools[c].Put(b)
}
