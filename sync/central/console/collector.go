package console

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/protocol"
	"github.com/tributary-iot/tributary/sync/receive"
)

// laneKey names an edge's lane: the edge's own stream partition.
type laneKey struct {
	edge      string
	stream    string
	partition int
}

// maxLaneTimes bounds the lanes whose newest forwarded record time is kept.
const maxLaneTimes = 100_000

// collector feeds the history: it counts each apply's tally from central's receiver (the Feed), once
// at start reads back the newest records of each partition so devices show at once, and samples
// the receiver's lanes once a second (records applied and behind per edge). It never follows
// central's log.
type collector struct {
	log   *storage.Log
	fleet Fleet
	hist  *History
	feed  *Feed
	seed  int64
	// seedEnds are the partitions' end offsets when the console was made, before central took
	// any chunk: the seed reads up to them, the feed counts everything after.
	seedEnds []seedEnd

	mu        sync.Mutex
	laneTimes map[laneKey]time.Time // newest record time central has from each lane
	prevNext  map[laneKey]int64
	lastLanes time.Time
	rate      map[string]float64 // records/s applied per edge, smoothed over a few samples
}

type seedEnd struct {
	stream string
	p      *storage.Partition
	end    int64
}

func newCollector(log *storage.Log, fleet Fleet, hist *History, feed *Feed, seed int64) *collector {
	c := &collector{log: log, fleet: fleet, hist: hist, feed: feed, seed: seed,
		laneTimes: map[laneKey]time.Time{}, prevNext: map[laneKey]int64{}, rate: map[string]float64{}}
	for _, st := range log.Streams() {
		for i := range st.Partitions() {
			p := st.Partition(i)
			c.seedEnds = append(c.seedEnds, seedEnd{st.Name(), p, p.EndOffset()})
		}
	}
	return c
}

// run returns when ctx ends.
func (c *collector) run(ctx context.Context, sampleEvery time.Duration) {
	for _, s := range c.seedEnds {
		c.seedFrom(ctx, s)
	}
	c.sample(time.Now())
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case t := <-c.feed.ch:
			c.count(t)
			c.feed.taken(t)
		case now := <-tick.C:
			c.sample(now)
		case now := <-sweep.C:
			c.hist.Sweep(now)
		}
	}
}

// count adds one apply's tally to the history and its lane's newest record time.
func (c *collector) count(t *tally) {
	c.hist.addTally(t, time.Now())
	if t.newest.IsZero() {
		return
	}
	k := laneKey{t.edge, t.stream, t.edgePartition}
	c.mu.Lock()
	if old, ok := c.laneTimes[k]; ok || len(c.laneTimes) < maxLaneTimes {
		if t.newest.After(old) {
			c.laneTimes[k] = t.newest
		}
	}
	c.mu.Unlock()
}

// seedFrom reads back the last c.seed records of one partition below the end it had at start.
func (c *collector) seedFrom(ctx context.Context, s seedEnd) {
	from := max(s.end-c.seed, s.p.StartOffset())
	rd := s.p.NewReader(from, &storage.ReaderOptions{ReadBytes: 256 << 10})
	for {
		e, err := rd.Next(ctx)
		if err != nil || e.Offset >= s.end {
			return // the end, ctx ended or the log closed
		}
		if e.Gap != nil {
			continue
		}
		r := Reading{Key: e.Key, Value: e.Value, Timestamp: e.Timestamp, Stream: s.stream, Partition: s.p.ID(), Offset: e.Offset}
		edgePart := -1
		for _, h := range e.Headers {
			switch h.Key {
			case protocol.ProvEdge:
				r.Edge = string(h.Value)
			case protocol.ProvEdgePartition:
				if n, err := strconv.Atoi(string(h.Value)); err == nil {
					edgePart = n
				}
			}
		}
		c.hist.AddReading(r, time.Now())
		if r.Edge != "" && edgePart >= 0 {
			k := laneKey{r.Edge, s.stream, edgePart}
			c.mu.Lock()
			if _, ok := c.laneTimes[k]; ok || len(c.laneTimes) < maxLaneTimes {
				if e.Timestamp.After(c.laneTimes[k]) {
					c.laneTimes[k] = e.Timestamp
				}
			}
			c.mu.Unlock()
		}
	}
}

// sample turns the lanes' progress since the last sample into each edge's throughput and backlog.
func (c *collector) sample(now time.Time) {
	lanes := c.fleet.Lanes()
	c.mu.Lock()
	dt := now.Sub(c.lastLanes)
	first := c.lastLanes.IsZero()
	c.lastLanes = now
	applied := map[string]int64{}
	backlog := map[string]int64{}
	seen := make(map[laneKey]bool, len(lanes))
	for _, l := range lanes {
		k := laneKey{l.Edge, l.Stream, l.Partition}
		seen[k] = true
		prev, ok := c.prevNext[k]
		c.prevNext[k] = l.Next
		// A lane that went back (a new edge log) starts over; a new lane counts from its start
		// only after the first sample, so a central restart does not plot one huge step.
		if l.Next > prev && (ok || !first) {
			applied[l.Edge] += l.Next - prev
		}
		backlog[l.Edge] += l.Behind
		if _, ok := applied[l.Edge]; !ok {
			applied[l.Edge] = 0
		}
	}
	for k := range c.prevNext {
		if !seen[k] {
			delete(c.prevNext, k)
		}
	}
	if !first && dt > 0 {
		for edge, n := range applied {
			now := float64(n) / dt.Seconds()
			if old, ok := c.rate[edge]; ok {
				now = 0.5*old + 0.5*now
			}
			c.rate[edge] = now
		}
		for edge := range c.rate {
			if _, ok := applied[edge]; !ok {
				delete(c.rate, edge)
			}
		}
	}
	c.mu.Unlock()
	if first {
		return
	}
	for edge, n := range applied {
		c.hist.AddEdgeSample(edge, n, dt, backlog[edge], now)
	}
}

// oldestUnforwarded is, per edge, an upper bound on the age of its oldest reading central does
// not have: for every lane behind, the time since the newest record central holds from it
// (records follow in offset order, so the first missing one is at least that new). ok is false
// when a lane behind has sent nothing since the console started.
func (c *collector) oldestUnforwarded(lanes []receive.LaneInfo, now time.Time) map[string]time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]time.Duration{}
	for _, l := range lanes {
		if l.Behind <= 0 {
			continue
		}
		t, ok := c.laneTimes[laneKey{l.Edge, l.Stream, l.Partition}]
		if !ok {
			continue
		}
		if age := now.Sub(t); age > out[l.Edge] {
			out[l.Edge] = age
		}
	}
	return out
}

// rates returns each edge's recent records/s at central.
func (c *collector) rates() map[string]float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]float64, len(c.rate))
	for k, v := range c.rate {
		out[k] = v
	}
	return out
}

// versions returns the version each edge last reported.
func (c *collector) versions() map[string]string {
	vs, ok := c.fleet.(interface{ EdgeVersions() map[string]string })
	if !ok {
		return nil
	}
	return vs.EdgeVersions()
}
