package edge

// packetIndex maps a packet id to the ring slot of the newest reading stored under it, so that
// every QoS 1/2 publish can be checked for a resend in O(1) without scanning the client's ring.
//
// It is an open-addressing hash table with linear probing and backward-shift deletion (no
// tombstones, so it never needs rebuilding in steady state). Each cell packs the key and the value
// into one uint32: packet id in the high 16 bits, slot+1 in the low 16 bits, 0 for an empty cell.
// The table has at least twice as many cells as the ring has entries, so probes stay short; it
// grows with the ring and never allocates once the ring is full.
type packetIndex struct {
	cells []uint32
	shift uint8 // 32 - log2(len(cells))
}

const packetIndexMinCells = 8

func (x *packetIndex) home(key uint16) int {
	return int((uint32(key) * 2654435761) >> x.shift) // Fibonacci hashing
}

func (x *packetIndex) get(key uint16) (slot int, ok bool) {
	if len(x.cells) == 0 {
		return 0, false
	}
	mask := len(x.cells) - 1
	for i := x.home(key); ; i = (i + 1) & mask {
		c := x.cells[i]
		if c == 0 {
			return 0, false
		}
		if uint16(c>>16) == key {
			return int(c&0xffff) - 1, true
		}
	}
}

// put sets key's slot, replacing an older one. The table must have a free cell (grow ensures it).
func (x *packetIndex) put(key uint16, slot int) {
	mask := len(x.cells) - 1
	v := uint32(key)<<16 | uint32(slot+1)
	for i := x.home(key); ; i = (i + 1) & mask {
		c := x.cells[i]
		if c == 0 || uint16(c>>16) == key {
			x.cells[i] = v
			return
		}
	}
}

// remove forgets key if it still points at slot: the entry in slot is being overwritten. A newer
// entry under the same key keeps its cell.
func (x *packetIndex) remove(key uint16, slot int) {
	if len(x.cells) == 0 {
		return
	}
	mask := len(x.cells) - 1
	i := x.home(key)
	for ; ; i = (i + 1) & mask {
		c := x.cells[i]
		if c == 0 {
			return
		}
		if uint16(c>>16) == key {
			if int(c&0xffff)-1 != slot {
				return
			}
			break
		}
	}
	// Backward-shift deletion: move later cells of the probe run into the hole when their home
	// does not lie cyclically in (hole, j].
	for j := (i + 1) & mask; x.cells[j] != 0; j = (j + 1) & mask {
		h := x.home(uint16(x.cells[j] >> 16))
		if (j > i && (h <= i || h > j)) || (j < i && h <= i && h > j) {
			x.cells[i] = x.cells[j]
			i = j
		}
	}
	x.cells[i] = 0
}

// grow keeps the table at least twice the size of entries, rebuilding it from entries (oldest
// first, so the newest entry of each key wins) when it doubles. It runs while a ring fills up:
// log2(ring size) times in a client's life.
func (x *packetIndex) grow(entries []dedupeEntry) {
	if 2*len(entries) <= len(x.cells) {
		return
	}
	n := packetIndexMinCells
	for n < 2*len(entries) {
		n *= 2
	}
	bits := uint8(0)
	for 1<<bits < n {
		bits++
	}
	x.cells, x.shift = make([]uint32, n), 32-bits
	for i, e := range entries {
		x.put(e.packetID, i)
	}
}
