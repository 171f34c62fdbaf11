package balance

import (
	"math/bits"
	"sync/atomic"
	"time"
	_ "unsafe" // for go:linkname
)

// cheaprand is the runtime's per-M wyrand (32 bits a draw). math/rand/v2's
// top-level functions draw from a per-M ChaCha8 buffer instead, which
// costs several times more per draw; picks need speed, not
// unpredictability. The runtime keeps this symbol available to linkname
// (go.dev/issue/67401). (Its cheaprand64 is not used: bit 63 is always 0.)
//
//go:linkname cheaprand runtime.cheaprand
func cheaprand() uint32

// Clock tells the time. Tests and simulations inject a fake one so that
// slow start, ejection and breaker timing run without sleeping.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// SystemClock is the wall clock.
var SystemClock Clock = systemClock{}

// Rand is a random source safe for concurrent use without locks. Unseeded,
// it draws from the runtime's per-thread wyrand generator (the one behind
// the scheduler's and maps' randomness: no shared state, about a
// nanosecond a draw); seeded
// (WithSeed), it is a wyrand sequence advanced by an atomic add, which is
// deterministic when picks come from one goroutine (tests, simulations).
type Rand struct {
	seeded bool
	state  atomic.Uint64
}

const wyP0, wyP1 = 0xa0761d6478bd642f, 0xe7037ed1a0b428db

func newRand(seed uint64, seeded bool) *Rand {
	r := &Rand{seeded: seeded}
	r.state.Store(seed)
	return r
}

// Uint64 returns a uniformly distributed 64-bit value.
func (r *Rand) Uint64() uint64 {
	if !r.seeded {
		return uint64(cheaprand())<<32 | uint64(cheaprand())
	}
	s := r.state.Add(wyP0)
	hi, lo := bits.Mul64(s, s^wyP1)
	return hi ^ lo
}

// IntN returns a value in [0, n) for n > 0, using the high half of a 64×64
// product (no division, bias below 2^-32 for n < 2^32).
func (r *Rand) IntN(n int) int {
	hi, _ := bits.Mul64(r.Uint64(), uint64(n))
	return int(hi)
}

// Float64 returns a value in [0, 1).
func (r *Rand) Float64() float64 {
	return float64(r.Uint64()>>11) / (1 << 53)
}
