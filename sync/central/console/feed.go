package console

import (
	"sync/atomic"
	"unsafe"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/receive"
)

// DefaultFeedBytes bounds the applied chunks waiting for the console when NewFeed is given 0.
const DefaultFeedBytes = 8 << 20

// feedChunks bounds the chunks waiting, whatever their size.
const feedChunks = 256

// Feed hands the chunks central's receiver applies to the console (receive.Config.OnApplied),
// which counts them into its history: the console learns what arrives from the apply path rather
// than by reading central's log a second time.
//
// Applied never blocks the receiver: a chunk that would take the waiting chunks past the feed's
// bound in bytes (or past 256 chunks) is not counted, and the console reports the records it
// missed as records_skipped. Safe for concurrent use.
type Feed struct {
	ch       chan fed
	maxBytes int64
	queued   atomic.Int64 // bytes of the chunks in ch
	skipped  atomic.Int64 // records stored in central that the history did not count
}

// NewFeed returns a feed holding at most maxBytes of waiting chunks (their decoded records, as
// chunkBytes counts them); 0 means DefaultFeedBytes.
func NewFeed(maxBytes int64) *Feed {
	if maxBytes <= 0 {
		maxBytes = DefaultFeedBytes
	}
	return &Feed{ch: make(chan fed, feedChunks), maxBytes: maxBytes}
}

// fed is a waiting chunk and the bytes it counts for.
type fed struct {
	chunk *receive.AppliedChunk
	bytes int64
}

// Applied takes one applied chunk; it is receive.Config.OnApplied.
func (f *Feed) Applied(ac *receive.AppliedChunk) {
	n := chunkBytes(ac)
	if f.queued.Add(n) > f.maxBytes {
		f.queued.Add(-n)
		f.skipped.Add(stored(ac))
		return
	}
	select {
	case f.ch <- fed{ac, n}:
	default:
		f.queued.Add(-n)
		f.skipped.Add(stored(ac))
	}
}

// taken is called once the console is done with a chunk from ch.
func (f *Feed) taken(c fed) { f.queued.Add(-c.bytes) }

// chunkBytes is what a waiting chunk keeps from being collected: the buffer its records were
// decoded into (about their raw size, which their keys, values and headers alias), the entries,
// their header arrays, and the parts' offsets.
func chunkBytes(ac *receive.AppliedChunk) int64 {
	n := int64(ac.RawBytes) + int64(cap(ac.Records))*int64(unsafe.Sizeof(storage.Entry{}))
	for i := range ac.Records {
		n += int64(len(ac.Records[i].Headers)) * int64(unsafe.Sizeof(storage.Header{}))
	}
	for _, p := range ac.Parts {
		n += int64(cap(p.EdgeOffsets)+cap(p.Offsets)) * 8
	}
	return n
}

func stored(ac *receive.AppliedChunk) int64 {
	var n int64
	for _, p := range ac.Parts {
		n += int64(len(p.Offsets))
	}
	return n
}
