package console

import (
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// ring holds one value per step for the last len(vals) steps, newest at slot last%len. Steps that
// pass without a value read as zero. Its size never changes after creation, which is what makes
// the history's bound a fixed number of bytes per edge and per device.
type ring[T float32 | uint32] struct {
	last int64 // step number of the newest slot; 0 before the first value
	vals []T
}

func newRing[T float32 | uint32](n int) ring[T] { return ring[T]{vals: make([]T, n)} }

// at returns the slot of step, clearing the slots skipped since the newest one; nil when step is
// older than the ring reaches.
func (r *ring[T]) at(step int64) *T {
	n := int64(len(r.vals))
	switch {
	case step > r.last:
		if r.last == 0 || step-r.last >= n {
			clear(r.vals)
		} else {
			for s := r.last + 1; s <= step; s++ {
				r.vals[s%n] = 0
			}
		}
		r.last = step
	case step <= r.last-n:
		return nil
	}
	return &r.vals[step%n]
}

// series returns the len(vals) values that end at step now, oldest first.
func (r *ring[T]) series(now int64) []T {
	n := int64(len(r.vals))
	out := make([]T, n)
	for i := range n {
		s := now - n + 1 + i
		if s > r.last || s <= r.last-n || s <= 0 {
			continue
		}
		out[i] = r.vals[s%n]
	}
	return out
}

// Limits of the history. The values are fixed when the console starts; Bytes states the bound
// they give.
const (
	// MaxValueBytes caps the last reading kept per device; a longer one is cut and flagged.
	MaxValueBytes = 1024
	// maxIDBytes caps a device key, edge id or stream name kept in the history.
	maxIDBytes = 128
)

// deviceState is what the console remembers of one device.
type deviceState struct {
	id        string
	edge      string // interned: shared by the edge's devices
	stream    string // interned
	partition int
	lastSeen  time.Time // the newest record's timestamp
	arrived   time.Time // when the console read it
	offset    int64
	value     []byte // the last value, at most MaxValueBytes (capacity fixed at MaxValueBytes)
	cut       bool   // value was longer than MaxValueBytes
	first     int64  // step of its oldest reading counted, so a new device's rate is over its own time
	counts    ring[uint32]
}

// edgeHistory is the throughput and backlog of one edge over time, sampled from central's lanes.
type edgeHistory struct {
	rate    ring[float32] // records applied per second, averaged over the step
	backlog ring[float32] // records behind at the end of the step
}

// History is the bounded in-memory history behind the console's plots: per edge, records/s
// applied and records behind; per device, readings per step by record time and its last reading.
// Devices idle for the whole window are dropped; past MaxDevices the least recently seen one makes
// room. Safe for concurrent use.
type History struct {
	step       time.Duration
	steps      int
	maxDevices int
	maxEdges   int

	mu      sync.Mutex
	devices map[string]*deviceState
	edges   map[string]*edgeHistory
	names   map[string]string // interned edge ids and stream names, bounded by maxEdges+streams
	evicted int64
}

// NewHistory keeps window/step steps per series for at most maxDevices devices and maxEdges edges.
func NewHistory(step, window time.Duration, maxDevices, maxEdges int) *History {
	return &History{step: step, steps: max(int(window/step), 1), maxDevices: maxDevices, maxEdges: maxEdges,
		devices: map[string]*deviceState{}, edges: map[string]*edgeHistory{}, names: map[string]string{}}
}

// Per-entry sizes for Bytes: the structs, their fixed buffers and the map's share of each entry
// (Go maps hold key, value pointer and a control byte per slot at a load factor of 7/8; 64 bytes
// covers that with the string header).
const mapEntryBytes = 64

// allocated is what an allocation of n bytes may take from the heap: Go's size classes are at
// most 1/8 apart.
func allocated(n int) int { return n + n/8 }

// DeviceBytes is the most one device's entry may take.
func (h *History) DeviceBytes() int {
	return allocated(int(unsafe.Sizeof(deviceState{}))) + allocated(h.steps*4) + MaxValueBytes + allocated(maxIDBytes) + mapEntryBytes
}

// EdgeBytes is the most one edge's entry may take.
func (h *History) EdgeBytes() int {
	return allocated(int(unsafe.Sizeof(edgeHistory{}))) + 2*allocated(h.steps*4) + allocated(maxIDBytes) + mapEntryBytes
}

// Bound is the most the history may hold, in bytes: MaxDevices devices and MaxEdges edges.
func (h *History) Bound() int {
	return h.maxDevices*h.DeviceBytes() + h.maxEdges*(h.EdgeBytes()+maxIDBytes+mapEntryBytes)
}

func (h *History) stepOf(t time.Time) int64 { return t.UnixNano() / int64(h.step) }

func (h *History) intern(s string) string {
	if len(s) > maxIDBytes {
		s = s[:maxIDBytes]
	}
	if v, ok := h.names[s]; ok {
		return v
	}
	if len(h.names) >= 2*h.maxEdges+1024 {
		return strings.Clone(s) // not shared, still bounded by the entry's own cap
	}
	s = strings.Clone(s)
	h.names[s] = s
	return s
}

// Reading is one record of central's merged stream as the history needs it.
type Reading struct {
	Key       []byte
	Value     []byte
	Timestamp time.Time
	Edge      string
	Stream    string
	Partition int
	Offset    int64
}

// AddReading counts one record for its device and keeps it as the device's last reading when it
// is the newest.
func (h *History) AddReading(r Reading, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.addLocked(r.Key, r.Value, r.Timestamp, h.intern(r.Edge), h.intern(r.Stream), r.Partition, r.Offset, now)
}

// addTally counts one apply's records, device by device, under one lock.
func (h *History) addTally(t *tally, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	edge, stream := h.intern(t.edge), h.intern(t.stream)
	for i := range t.devices {
		dt := &t.devices[i]
		d := h.device(dt.key)
		for _, sc := range dt.steps {
			if sc.n > 0 {
				d.count(sc.step, sc.n)
			}
		}
		for _, sc := range dt.more {
			d.count(sc.step, sc.n)
		}
		if !dt.last.Before(d.lastSeen) {
			d.lastSeen, d.arrived = dt.last, now
			d.edge, d.stream, d.partition, d.offset = edge, stream, dt.partition, dt.offset
			d.cut = dt.cut
			d.value = append(d.value[:0], dt.value...)
		}
	}
}

// device returns the device's entry, making room for it past maxDevices. h.mu is held.
func (h *History) device(key string) *deviceState {
	d := h.devices[key]
	if d == nil {
		if len(h.devices) >= h.maxDevices {
			h.evictOldest()
		}
		d = &deviceState{id: strings.Clone(key), value: make([]byte, 0, MaxValueBytes), counts: newRing[uint32](h.steps)}
		h.devices[d.id] = d
	}
	return d
}

// count adds n readings at step.
func (d *deviceState) count(step int64, n uint32) {
	if p := d.counts.at(step); p != nil {
		*p += n
		if d.first == 0 || step < d.first {
			d.first = step
		}
	}
}

// addLocked counts one record; edge and stream are interned. h.mu is held.
func (h *History) addLocked(key, value []byte, ts time.Time, edge, stream string, partition int, offset int64, now time.Time) {
	if len(key) > maxIDBytes {
		key = key[:maxIDBytes]
	}
	d := h.devices[string(key)]
	if d == nil {
		d = h.device(string(key))
	}
	d.count(h.stepOf(ts), 1)
	if !ts.Before(d.lastSeen) {
		d.lastSeen, d.arrived = ts, now
		d.edge, d.stream, d.partition, d.offset = edge, stream, partition, offset
		d.cut = len(value) > MaxValueBytes
		if d.cut {
			value = value[:MaxValueBytes]
		}
		d.value = append(d.value[:0], value...)
	}
}

func (h *History) evictOldest() {
	var oldest *deviceState
	for _, d := range h.devices {
		if oldest == nil || d.arrived.Before(oldest.arrived) {
			oldest = d
		}
	}
	if oldest != nil {
		delete(h.devices, oldest.id)
		h.evicted++
	}
}

// Sweep drops devices not seen for the whole window (by arrival at the console).
func (h *History) Sweep(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cut := now.Add(-time.Duration(h.steps) * h.step)
	for id, d := range h.devices {
		if d.arrived.Before(cut) {
			delete(h.devices, id)
		}
	}
}

// AddEdgeSample records an edge's records applied since the last sample (over dt) and its backlog.
// Edges past MaxEdges are not plotted.
func (h *History) AddEdgeSample(edge string, applied int64, dt time.Duration, backlog int64, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.edges[edge]
	if e == nil {
		if len(h.edges) >= h.maxEdges {
			return
		}
		e = &edgeHistory{rate: newRing[float32](h.steps), backlog: newRing[float32](h.steps)}
		h.edges[h.intern(edge)] = e
	}
	step := h.stepOf(now)
	if p := e.rate.at(step); p != nil && dt > 0 {
		// The step's rate is the records applied in it over the step's length.
		*p += float32(float64(applied) / h.step.Seconds())
	}
	if p := e.backlog.at(step); p != nil {
		*p = float32(backlog)
	}
}

// Series is a plotted history: Values[i] belongs to the step starting at Start + i*Step.
type Series struct {
	Start  time.Time `json:"start"`
	StepS  float64   `json:"step_s"`
	Values []float64 `json:"values"`
}

func (h *History) series(vals []float64, now int64) Series {
	return Series{Start: time.Unix(0, (now-int64(len(vals))+1)*int64(h.step)).UTC(), StepS: h.step.Seconds(), Values: vals}
}

func floats[T float32 | uint32](in []T, scale float64) []float64 {
	out := make([]float64, len(in))
	for i, v := range in {
		out[i] = float64(v) * scale
	}
	return out
}

// EdgeSeries returns an edge's throughput (records/s) and backlog (records) series.
func (h *History) EdgeSeries(edge string, now time.Time) (rate, backlog Series, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.edges[edge]
	if e == nil {
		return Series{}, Series{}, false
	}
	step := h.stepOf(now)
	return h.series(floats(e.rate.series(step), 1), step), h.series(floats(e.backlog.series(step), 1), step), true
}

// DeviceInfo is a device as the console shows it.
type DeviceInfo struct {
	ID        string    `json:"id"`
	Edge      string    `json:"edge"`
	Stream    string    `json:"stream"`
	Partition int       `json:"partition"`
	Offset    int64     `json:"offset"`
	LastSeen  time.Time `json:"last_seen"`
	// Rate is readings/s over the last full minute, by record time.
	Rate float64 `json:"rate"`
	// LastValue is the last reading's value (when JSON; else LastValueText holds it quoted).
	LastValue    []byte  `json:"-"`
	LastValueCut bool    `json:"last_value_cut,omitempty"`
	RateHistory  *Series `json:"rate_history,omitempty"`
}

// rateLagSteps is how far a device's newest counted reading may trail the clock and still be
// taken as the edge of what has arrived: readings reach central a chunk at a time, seconds after
// the gateway took them when the link is slow or the edge has a backlog.
const rateLagSteps = 10

// rate is a device's readings/s over the full steps of the last minute. The current step is still
// filling, and so may be the steps up to the newest reading counted: a device's readings arrive in
// order, a chunk at a time, so those before its newest one's step are all here. A device seen for
// less than a minute has its rate over the steps since its first reading; one that stopped longer
// ago than rateLagSteps decays to 0.
func (h *History) rate(d *deviceState, counts []uint32, now int64) float64 {
	end := now - 1
	if seen := h.stepOf(d.lastSeen); seen <= end && now-seen <= rateLagSteps && seen-1 >= d.first {
		end = seen - 1
	}
	full := max(int(time.Minute/h.step), 1)
	var sum uint32
	n := 0
	oldest := len(counts) - 1 - int(now-d.first)
	for i := len(counts) - 1 - int(now-end); i >= max(oldest, 0) && n < full; i-- {
		sum += counts[i]
		n++
	}
	if n == 0 {
		return 0
	}
	return float64(sum) / (float64(n) * h.step.Seconds())
}

func (h *History) info(d *deviceState, now int64, withHistory bool) DeviceInfo {
	di := DeviceInfo{ID: d.id, Edge: d.edge, Stream: d.stream, Partition: d.partition, Offset: d.offset,
		LastSeen: d.lastSeen.UTC(), LastValueCut: d.cut}
	counts := d.counts.series(now)
	di.Rate = h.rate(d, counts, now)
	if withHistory {
		s := h.series(floats(counts, 1/h.step.Seconds()), now)
		di.RateHistory = &s
		di.LastValue = append([]byte(nil), d.value...)
	}
	return di
}

// Devices lists the devices whose id starts with prefix, by id, at most limit; total counts all
// matches.
func (h *History) Devices(prefix string, limit int, now time.Time) (out []DeviceInfo, total int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	step := h.stepOf(now)
	var ids []string
	for id := range h.devices {
		if strings.HasPrefix(id, prefix) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	total = len(ids)
	out = []DeviceInfo{}
	for _, id := range ids[:min(limit, len(ids))] {
		out = append(out, h.info(h.devices[id], step, false))
	}
	return out, total
}

// Device returns one device with its rate history and last reading.
func (h *History) Device(id string, now time.Time) (DeviceInfo, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.devices[id]
	if d == nil {
		return DeviceInfo{}, false
	}
	return h.info(d, h.stepOf(now), true), true
}

// EdgeDevices counts the devices last seen through each edge.
func (h *History) EdgeDevices() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for _, d := range h.devices {
		out[d.edge]++
	}
	return out
}

// Len returns the number of devices and edges held, and how many devices were evicted for room.
func (h *History) Len() (devices, edges int, evicted int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.devices), len(h.edges), h.evicted
}
