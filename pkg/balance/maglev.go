package balance

import (
	"math/bits"
	"slices"
	"strings"
)

// ConsistentHashName is the name of the consistent-hash policy: a Maglev
// lookup table keyed by PickInfo.Hash, so one key keeps going to one
// endpoint and removing one of n endpoints moves about 1/n of the keys.
const ConsistentHashName = "consistent_hash"

func init() { Register(ConsistentHashName, buildMaglev) }

// maglev is a lookup table of Config.HashTableSize (prime) slots, each
// naming an endpoint. Endpoints fill slots in turn, each following its own
// permutation of the table (offset and skip from two stable hashes of its
// ID), weighted endpoints taking more turns. Endpoints are ordered by ID
// first, so every process builds the same table from the same set.
type maglev struct {
	eps   []*EndpointState // sorted by ID
	table []uint32
	rand  *Rand
}

var _ Picker = (*maglev)(nil)

func buildMaglev(b BuildInfo) Picker {
	idx := make([]int, len(b.Endpoints))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(x, y int) int { return strings.Compare(b.Endpoints[x].id, b.Endpoints[y].id) })
	eps := make([]*EndpointState, len(idx))
	ids := make([]string, len(idx))
	w := make([]float64, len(idx))
	for k, i := range idx {
		eps[k], ids[k], w[k] = b.Endpoints[i], b.Endpoints[i].id, b.Weights[i]
	}
	return &maglev{eps: eps, table: maglevTable(ids, w, b.Config.HashTableSize), rand: b.Rand}
}

// maglevTable fills an m-slot table (m prime) for endpoints with the given
// IDs and weights.
func maglevTable(ids []string, w []float64, m uint32) []uint32 {
	n := len(ids)
	// pos[i] walks endpoint i's permutation offset, offset+skip, ... mod m.
	pos := make([]uint32, n)
	skip := make([]uint32, n)
	credit := make([]float64, n)
	var maxW float64
	for i, id := range ids {
		pos[i] = uint32(hashSeed(id, 0x6d61676c65763031) % uint64(m))
		skip[i] = uint32(hashSeed(id, 0x6d61676c65763032)%uint64(m-1) + 1)
		maxW = max(maxW, w[i])
	}
	const empty = ^uint32(0)
	table := make([]uint32, m)
	for i := range table {
		table[i] = empty
	}
	advance := func(i int) {
		pos[i] += skip[i]
		if pos[i] >= m {
			pos[i] -= m
		}
	}
	filled := uint32(0)
	for filled < m {
		for i := 0; i < n && filled < m; i++ {
			credit[i] += w[i] / maxW
			if credit[i] < 1 {
				continue
			}
			credit[i]--
			for table[pos[i]] != empty {
				advance(i)
			}
			table[pos[i]] = uint32(i)
			advance(i)
			filled++
		}
	}
	return table
}

func (p *maglev) Pick(info PickInfo) (*EndpointState, error) { return p.pick(info), nil }

func (p *maglev) pick(info PickInfo) *EndpointState {
	h := info.Hash
	if !info.HasHash {
		h = p.rand.Uint64()
	} else if info.Attempt > 0 {
		// The first choice cannot take the request: probe another slot,
		// the same one for every process.
		h = mix64(h + uint64(info.Attempt)*0x9e3779b97f4a7c15)
	}
	slot, _ := bits.Mul64(h, uint64(len(p.table)))
	return p.eps[p.table[slot]]
}
