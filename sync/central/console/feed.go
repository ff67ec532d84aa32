package console

import (
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/receive"
)

// DefaultFeedBytes bounds the tallies waiting for the console when NewFeed is given 0.
const DefaultFeedBytes = 8 << 20

// feedChunks bounds the tallies waiting, whatever their size.
const feedChunks = 256

// Feed is the console's receive.Observer: it tallies each apply's records per device while the
// receiver queues them (the records are decoded and in the cache then), and hands the tally to
// the console once they are stored. The console so learns what arrives from the apply path
// rather than by reading central's log a second time, and touches each device once per chunk
// rather than once per record.
//
// The hand-off never blocks the receiver: a tally that would take those waiting past the feed's
// bound in bytes (or past 256 of them) is dropped, and the console reports its records as
// records_skipped. Safe for concurrent use.
type Feed struct {
	step     int64 // the history's step in nanoseconds
	ch       chan *tally
	maxBytes int64
	queued   atomic.Int64 // bytes of the tallies in ch
	skipped  atomic.Int64 // records stored in central that the history did not count
	devices  atomic.Int32 // devices in the last tally: the next one is sized for as many
}

// NewFeed returns a feed for a history of steps of step (0: DefaultStep) that holds at most
// maxBytes of waiting tallies (0: DefaultFeedBytes). Give it to receive.Config.Observer and to
// Config.Feed, with the same step in Config.Step.
func NewFeed(step time.Duration, maxBytes int64) *Feed {
	if step <= 0 {
		step = DefaultStep
	}
	if maxBytes <= 0 {
		maxBytes = DefaultFeedBytes
	}
	return &Feed{step: int64(step), ch: make(chan *tally, feedChunks), maxBytes: maxBytes}
}

// Apply starts the tally of one apply (receive.Observer).
func (f *Feed) Apply(edge, stream string, edgePartition int) receive.ApplyObserver {
	n := int(f.devices.Load())
	return &tally{feed: f, edge: edge, stream: stream, edgePartition: edgePartition,
		index: make(map[string]int32, n), devices: make([]deviceTally, 0, n)}
}

// tally is one apply's records, per device: what the history needs of them.
type tally struct {
	feed          *Feed
	edge, stream  string
	edgePartition int
	index         map[string]int32 // device key → devices; dropped once stored
	devices       []deviceTally
	queued        []int // records queued per central partition
	newest        time.Time
	bytes         int64 // what the tally holds once stored, for the feed's bound
	// The step of the last record and where it starts, in Unix nanoseconds: records of one
	// chunk mostly share a step, which then costs a compare, not a division.
	step, stepStart int64
}

// deviceTally is one device's records in one apply.
type deviceTally struct {
	key       string
	steps     [2]stepCount // the steps its records fall in; more past two
	more      []stepCount
	last      time.Time // the newest record's timestamp
	value     []byte    // its value: aliases the chunk until stored, then its own copy
	cut       bool      // value was longer than MaxValueBytes; the copy keeps the first ones
	partition int
	index     int   // its index among the apply's records in partition
	offset    int64 // its central offset, once stored
}

type stepCount struct {
	step int64
	n    uint32
}

// Queued counts one record for its device (receive.ApplyObserver). It runs with the lane locked:
// one map lookup and a few compares.
func (t *tally) Queued(e *storage.Entry, partition, index int) {
	key := e.Key
	if len(key) > maxIDBytes {
		key = key[:maxIDBytes]
	}
	i, ok := t.index[string(key)]
	if !ok {
		i = int32(len(t.devices))
		t.devices = append(t.devices, deviceTally{key: string(key)})
		t.index[t.devices[i].key] = i
	}
	d := &t.devices[i]
	ns := e.Timestamp.UnixNano()
	if ns < t.stepStart || ns >= t.stepStart+t.feed.step || t.step == 0 {
		t.step = ns / t.feed.step
		t.stepStart = t.step * t.feed.step
	}
	d.count(t.step)
	if !e.Timestamp.Before(d.last) {
		d.last, d.value, d.partition, d.index = e.Timestamp, e.Value, partition, index
	}
	if e.Timestamp.After(t.newest) {
		t.newest = e.Timestamp
	}
	for len(t.queued) <= partition {
		t.queued = append(t.queued, 0)
	}
	t.queued[partition]++
}

func (d *deviceTally) count(step int64) {
	for j := range d.steps {
		switch {
		case d.steps[j].n == 0:
			d.steps[j] = stepCount{step, 1}
			return
		case d.steps[j].step == step:
			d.steps[j].n++
			return
		}
	}
	for j := range d.more {
		if d.more[j].step == step {
			d.more[j].n++
			return
		}
	}
	d.more = append(d.more, stepCount{step, 1})
}

// Stored resolves the devices' central offsets, copies their last values out of the chunk and
// hands the tally to the console (receive.ApplyObserver). When a write failed (fewer stored than
// queued), the tally's counts are not all true: its stored records count as skipped instead.
func (t *tally) Stored(parts []receive.AppliedPart) {
	t.index = nil
	t.feed.devices.Store(int32(min(len(t.devices), 1<<14)))
	var stored int64
	offsets := make([][]int64, len(t.queued))
	complete := true
	for _, p := range parts {
		stored += int64(len(p.Offsets))
		if p.Partition >= len(t.queued) || len(p.Offsets) != t.queued[p.Partition] {
			complete = false
			continue
		}
		offsets[p.Partition] = p.Offsets
	}
	for p, n := range t.queued {
		if n > 0 && offsets[p] == nil {
			complete = false
		}
	}
	if !complete {
		t.feed.skipped.Add(stored)
		return
	}
	if len(t.devices) == 0 {
		return
	}
	size := 0
	for i := range t.devices {
		size += min(len(t.devices[i].value), MaxValueBytes)
	}
	// One buffer for the values: the chunk's decode buffer is not kept alive by the console.
	buf := make([]byte, 0, size)
	for i := range t.devices {
		d := &t.devices[i]
		d.offset = offsets[d.partition][d.index]
		v := d.value
		if d.cut = len(v) > MaxValueBytes; d.cut {
			v = v[:MaxValueBytes]
		}
		buf = append(buf, v...)
		d.value = buf[len(buf)-len(v) : len(buf) : len(buf)]
	}
	t.bytes = int64(unsafe.Sizeof(*t)) + int64(cap(t.devices))*int64(unsafe.Sizeof(deviceTally{})) + int64(size)
	for i := range t.devices {
		t.bytes += int64(len(t.devices[i].key) + cap(t.devices[i].more)*int(unsafe.Sizeof(stepCount{})))
	}
	f := t.feed
	if f.queued.Add(t.bytes) > f.maxBytes {
		f.queued.Add(-t.bytes)
		f.skipped.Add(stored)
		return
	}
	select {
	case f.ch <- t:
	default:
		f.queued.Add(-t.bytes)
		f.skipped.Add(stored)
	}
}

// taken is called once the console has counted a tally from ch.
func (f *Feed) taken(t *tally) { f.queued.Add(-t.bytes) }
