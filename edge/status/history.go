package status

import (
	"slices"
	"sync"
	"time"
	"unsafe"
)

// Sample is one point of the plotted history: the rates over one resolution interval ending at
// Time, and the backlog at its end. Rates are float32: the plot needs three digits, not seven.
type Sample struct {
	Time      int64   `json:"t"`         // unix seconds
	Readings  float32 `json:"readings"`  // records/s appended to the edge log
	Forwarded float32 `json:"forwarded"` // records/s central acknowledged
	Behind    float32 `json:"behind"`    // records central has not acknowledged
}

// SampleBytes is the memory one Sample takes in the history's ring.
const SampleBytes = int(unsafe.Sizeof(Sample{}))

// History is a fixed ring of the newest samples. Its memory is allocated once, in NewHistory,
// and is [History.Bytes]: adding a sample never allocates, so an edge that runs for a year
// holds the same few kilobytes as one that just started. Safe for concurrent use.
type History struct {
	mu   sync.Mutex
	ring []Sample
	next int // where the next sample goes
	n    int // samples held, up to len(ring)
}

// NewHistory holds the newest capacity samples (at least 1).
func NewHistory(capacity int) *History {
	// slices.Grow allocates as make would, and its capacity shows the allocator's size class:
	// 360 samples (8,640 bytes) take a 9,472-byte block, which Bytes counts.
	ring := slices.Grow([]Sample(nil), max(capacity, 1))
	return &History{ring: ring[:max(capacity, 1)]}
}

// Bytes is the history's memory bound: its ring's block, fixed at creation (its capacity, and
// less than one more sample of tail the size class leaves), plus the struct itself: 9,528
// bytes for one hour at 10 s.
func (h *History) Bytes() int {
	return (cap(h.ring)+1)*SampleBytes + int(unsafe.Sizeof(*h))
}

// Capacity is how many samples the history keeps.
func (h *History) Capacity() int { return len(h.ring) }

// Add appends s, dropping the oldest sample when the ring is full.
func (h *History) Add(s Sample) {
	h.mu.Lock()
	h.ring[h.next] = s
	h.next = (h.next + 1) % len(h.ring)
	h.n = min(h.n+1, len(h.ring))
	h.mu.Unlock()
}

// Samples copies the held samples, oldest first, into dst (reused when it has room).
func (h *History) Samples(dst []Sample) []Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	dst = dst[:0]
	start := (h.next - h.n + len(h.ring)) % len(h.ring)
	for i := range h.n {
		dst = append(dst, h.ring[(start+i)%len(h.ring)])
	}
	return dst
}

// Since returns the samples newer than t, oldest first.
func (h *History) Since(t time.Time) []Sample {
	all := h.Samples(nil)
	cut := t.Unix()
	for i, s := range all {
		if s.Time > cut {
			return all[i:]
		}
	}
	return nil
}
