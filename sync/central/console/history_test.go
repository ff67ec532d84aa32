package console

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/receive"
)

// TestHistoryBound fills the history with 1,000 devices, each with a reading in every step of
// the window and a last value of the maximum size, plus 20 edges, and measures the heap it holds:
// it must stay within the stated per-device and per-edge bound.
func TestHistoryBound(t *testing.T) {
	const devices, edges = 1000, 20
	step, window := 10*time.Second, time.Hour
	now := time.Now()
	value := []byte(`{"v":"` + strings.Repeat("x", 2*MaxValueBytes) + `"}`) // longer than kept
	keys := make([][]byte, devices)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("plant-7/line-3/sensor-%06d", i))
	}
	edgeIDs := make([]string, edges)
	for i := range edgeIDs {
		edgeIDs[i] = fmt.Sprintf("gateway-%03d", i)
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	h := NewHistory(step, window, 10_000, 1_000)
	steps := int(window / step)
	for s := range steps {
		at := now.Add(time.Duration(s-steps+1) * step)
		for i, k := range keys {
			h.AddReading(Reading{Key: k, Value: value, Timestamp: at, Edge: edgeIDs[i%edges], Stream: "readings", Partition: i % 8, Offset: int64(s)}, at)
		}
		for _, e := range edgeIDs {
			h.AddEdgeSample(e, 1000, step, 5, at)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	bound := devices*h.DeviceBytes() + edges*h.EdgeBytes()
	runtime.KeepAlive(h)

	if n, e, _ := h.Len(); n != devices || e != edges {
		t.Fatalf("history holds %d devices and %d edges, want %d and %d", n, e, devices, edges)
	}
	d, _ := h.Device(string(keys[7]), now)
	if !d.LastValueCut || len(d.LastValue) != MaxValueBytes || d.Rate != 0.1 {
		t.Fatalf("device: cut %v, %d bytes kept, rate %v; want cut at %d, 0.1/s", d.LastValueCut, len(d.LastValue), d.Rate, MaxValueBytes)
	}
	t.Logf("1,000 devices and 20 edges over %v at %v: %d bytes held (%.0f per device), bound %d (%d per device, %d per edge); full bound at 10,000 devices and 1,000 edges: %d bytes",
		window, step, held, float64(held)/devices, bound, h.DeviceBytes(), h.EdgeBytes(), h.Bound())
	if held > int64(bound) {
		t.Fatalf("history holds %d bytes, above its bound of %d", held, bound)
	}
}

// TestHistoryEvictsAndExpires checks the two ways devices leave: past MaxDevices the least
// recently seen one goes, and a device silent for the whole window is swept.
func TestHistoryEvictsAndExpires(t *testing.T) {
	h := NewHistory(time.Second, time.Minute, 3, 2)
	now := time.Now()
	for i, id := range []string{"a", "b", "c", "d"} {
		at := now.Add(time.Duration(i) * time.Second)
		h.AddReading(Reading{Key: []byte(id), Value: []byte(`1`), Timestamp: at}, at)
	}
	if _, ok := h.Device("a", now); ok {
		t.Fatal("the least recently seen device stayed past MaxDevices")
	}
	if n, _, ev := h.Len(); n != 3 || ev != 1 {
		t.Fatalf("%d devices, %d evicted; want 3 and 1", n, ev)
	}
	h.Sweep(now.Add(time.Minute + 2500*time.Millisecond))
	if n, _, _ := h.Len(); n != 1 {
		t.Fatalf("after the window: %d devices, want only d", n)
	}
	for _, e := range []string{"e1", "e2", "e3"} {
		h.AddEdgeSample(e, 1, time.Second, 0, now)
	}
	if _, e, _ := h.Len(); e != 2 {
		t.Fatalf("%d edges held, want MaxEdges 2", e)
	}
}

// TestRing checks that a step skipped reads as zero, an old step is dropped and the series ends
// at the asked step.
func TestRing(t *testing.T) {
	r := newRing[uint32](4)
	*r.at(10) = 1
	*r.at(11) = 2
	*r.at(13) = 4 // 12 skipped
	if p := r.at(9); p != nil {
		t.Fatal("step 9 is older than the ring")
	}
	if got := fmt.Sprint(r.series(13)); got != "[1 2 0 4]" {
		t.Fatalf("series at 13: %s", got)
	}
	if got := fmt.Sprint(r.series(15)); got != "[0 4 0 0]" {
		t.Fatalf("series at 15: %s", got)
	}
	*r.at(20) = 7 // far ahead: everything older is gone
	if got := fmt.Sprint(r.series(20)); got != "[0 0 0 7]" {
		t.Fatalf("series at 20: %s", got)
	}
}

// BenchmarkHistoryAddReading is the cost the console adds per record central stores.
func BenchmarkHistoryAddReading(b *testing.B) {
	h := NewHistory(10*time.Second, time.Hour, 10_000, 1_000)
	keys := make([][]byte, 1000)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("sensor-%04d", i))
	}
	value := []byte(`{"device":"sensor-0001","seq":1,"temperature_c":21.5,"humidity":40.1}`)
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.AddReading(Reading{Key: keys[i%len(keys)], Value: value, Timestamp: now, Edge: "gw-1", Stream: "readings"}, now)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// appliedChunks decodes real chunks of n readings from devices devices (~100-byte JSON values
// with the edge's headers, as the forwarder sends them), the records spread over 8 central
// partitions by key, each with the offsets it would get there.
func appliedChunks(tb testing.TB, n, devices int, at func(i int) time.Time) []appliedChunk {
	edge, err := storage.Open(tb.TempDir(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer edge.Close()
	st, err := edge.CreateStream("readings", storage.StreamConfig{Partitions: 1})
	if err != nil {
		tb.Fatal(err)
	}
	central, err := edge.CreateStream("central", storage.StreamConfig{Partitions: 8})
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		id := fmt.Sprintf("sensor-%04d", i%devices)
		ts := at(i)
		v := fmt.Sprintf(`{"device":%q,"seq":%d,"temperature_c":21.%d,"humidity":4%d.1,"battery_v":3.69,"ts":%d}`, id, i/devices, i%10, i%10, ts.UnixMilli())
		st.Partition(0).AppendAsync(storage.Record{Key: []byte(id), Value: []byte(v), Timestamp: ts,
			Headers: []storage.Header{{Key: "topic", Value: []byte("devices/" + id + "/readings")}, {Key: "receive-time", Value: []byte(fmt.Sprint(ts.UnixMilli()))}}},
			func(int64, error) { wg.Done() })
	}
	wg.Wait()
	var out []appliedChunk
	ends := make([]int64, 8)
	for off := int64(0); off < int64(n); {
		c, err := st.Partition(0).ReadChunk(off, 256<<10)
		if err != nil {
			tb.Fatal(err)
		}
		var ac appliedChunk
		if err := storage.DecodeChunk(c.Data, 0, func(o int64, r storage.Record) error {
			ac.records = append(ac.records, storage.Entry{Offset: o, Record: r})
			return nil
		}); err != nil {
			tb.Fatal(err)
		}
		parts := make([]*receive.AppliedPart, 8)
		for _, e := range ac.records {
			p := central.PartitionFor(e.Key)
			if parts[p] == nil {
				parts[p] = &receive.AppliedPart{Partition: p}
			}
			ac.partition = append(ac.partition, p)
			ac.index = append(ac.index, len(parts[p].Offsets))
			parts[p].EdgeOffsets = append(parts[p].EdgeOffsets, e.Offset)
			parts[p].Offsets = append(parts[p].Offsets, ends[p])
			ends[p]++
		}
		for _, p := range parts {
			if p != nil {
				ac.parts = append(ac.parts, *p)
			}
		}
		out = append(out, ac)
		off = c.Next
	}
	return out
}

// appliedChunk is one chunk as the receiver would apply it.
type appliedChunk struct {
	records          []storage.Entry
	partition, index []int // per record, as the receiver passes them to Queued
	parts            []receive.AppliedPart
}

// apply plays the receiver's part: Queued for each record, then Stored.
func (ac appliedChunk) apply(f *Feed) {
	t := f.Apply("gw-1", "readings", 0)
	for i := range ac.records {
		t.Queued(&ac.records[i], ac.partition[i], ac.index[i])
	}
	t.Stored(ac.parts)
}

// TestFeedCountsAsReadings feeds the same chunks to one history through the feed, as the
// receiver does, and to another record by record with AddReading, as the start-up seed does:
// both must show the same devices, rates, last readings and offsets.
func TestFeedCountsAsReadings(t *testing.T) {
	step := time.Second
	start := time.Now().Add(-30 * time.Second).Truncate(step)
	// 40 devices over 30 s; every 7th reading arrives late (an older timestamp), so the newest
	// is not always the last one queued.
	chunks := appliedChunks(t, 6000, 40, func(i int) time.Time {
		at := start.Add(time.Duration(i) * 5 * time.Millisecond)
		if i%7 == 0 {
			at = at.Add(-3 * time.Second)
		}
		return at
	})
	now := start.Add(31 * time.Second)
	fed, read := NewHistory(step, time.Minute, 100, 10), NewHistory(step, time.Minute, 100, 10)
	f := NewFeed(step, 0)
	for _, ac := range chunks {
		ac.apply(f)
		for i, e := range ac.records {
			var off int64
			for _, p := range ac.parts {
				if p.Partition == ac.partition[i] {
					off = p.Offsets[ac.index[i]]
				}
			}
			read.AddReading(Reading{Key: e.Key, Value: e.Value, Timestamp: e.Timestamp, Edge: "gw-1", Stream: "readings", Partition: ac.partition[i], Offset: off}, now)
		}
	}
	for len(f.ch) > 0 {
		tl := <-f.ch
		fed.addTally(tl, now)
		f.taken(tl)
	}
	if q := f.queued.Load(); q != 0 || f.skipped.Load() != 0 {
		t.Fatalf("feed holds %d bytes after draining, skipped %d", q, f.skipped.Load())
	}
	got, _ := fed.Devices("", 1000, now)
	want, _ := read.Devices("", 1000, now)
	if len(got) != 40 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("devices through the feed:\n%v\nread one by one:\n%v", got, want)
	}
	for _, id := range []string{"sensor-0000", "sensor-0013", "sensor-0039"} {
		g, _ := fed.Device(id, now)
		w, _ := read.Device(id, now)
		if fmt.Sprint(g.RateHistory) != fmt.Sprint(w.RateHistory) || string(g.LastValue) != string(w.LastValue) || g.Offset != w.Offset || g.Rate == 0 {
			t.Fatalf("%s through the feed: %+v %v\nread one by one: %+v %v", id, g, g.RateHistory.Values, w, w.RateHistory.Values)
		}
	}
}

// BenchmarkFeedChunk is the console's cost per record central applies: real chunks (300 devices)
// tallied as the receiver queues them, handed over once stored, and counted into the history.
func BenchmarkFeedChunk(b *testing.B) {
	now := time.Now()
	chunks := appliedChunks(b, 20_000, 300, func(int) time.Time { return now })
	h := NewHistory(10*time.Second, time.Hour, 10_000, 1_000)
	f := NewFeed(10*time.Second, 0)
	b.ReportAllocs()
	n := 0
	for i := 0; b.Loop(); i++ {
		ac := chunks[i%len(chunks)]
		ac.apply(f)
		t := <-f.ch
		h.addTally(t, now)
		f.taken(t)
		n += len(ac.records)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/record")
}

// TestDeviceRateWhileReadingsArrive: readings reach central a chunk at a time, so the steps up to
// a device's newest counted reading may still be filling; the rate is over the steps before it,
// and a device that stopped decays to 0.
func TestDeviceRateWhileReadingsArrive(t *testing.T) {
	h := NewHistory(time.Second, time.Minute, 10, 1)
	base := time.Unix(1_800_000_000, 0)
	add := func(at time.Time, now time.Time) {
		h.AddReading(Reading{Key: []byte("d"), Value: []byte("1"), Timestamp: at, Edge: "gw", Stream: "readings"}, now)
	}
	// 10 readings a second for 5 s, then the first 2 of the 6th second: central is 2 s behind.
	for s := range 5 {
		for i := range 10 {
			at := base.Add(time.Duration(s)*time.Second + time.Duration(i)*100*time.Millisecond)
			add(at, at)
		}
	}
	add(base.Add(5*time.Second), base.Add(5*time.Second))
	add(base.Add(5100*time.Millisecond), base.Add(5100*time.Millisecond))
	now := base.Add(7500 * time.Millisecond)
	if d, _ := h.Device("d", now); d.Rate != 10 {
		t.Fatalf("rate %v with the device's last second still arriving, want 10", d.Rate)
	}
	// Long after the last reading, the rate is over the clock's minute: it falls.
	if d, _ := h.Device("d", base.Add(40*time.Second)); d.Rate >= 2 {
		t.Fatalf("rate %v 35 s after the device stopped, want it to decay below 2", d.Rate)
	}
}
