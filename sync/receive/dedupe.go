package receive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/protocol"
)

// dedupeNamespace holds one checkpoint per central stream (key = stream name).
const dedupeNamespace = "central.dedupe"

// gapNamespace holds the gap markers edges forwarded (key = edge, stream, partition, from).
const gapNamespace = "central.gaps"

// checkpointWait bounds how long a checkpoint waits for a lane's queued applies to become durable.
const checkpointWait = 30 * time.Second

type checkpoint struct {
	// Positions are the central partitions' end offsets taken before the lanes were snapshot:
	// every record at or past them is found by the startup scan.
	Positions []int64          `json:"positions"`
	Lanes     []laneCheckpoint `json:"sources"` // the name on disk predates "lane"
	Time      time.Time        `json:"time"`
}

type laneCheckpoint struct {
	Edge        string  `json:"edge"`
	Partition   int     `json:"partition"`
	Incarnation string  `json:"incarnation,omitempty"`
	Expected    int64   `json:"expected"`
	Applied     []int64 `json:"applied"`
}

// rebuild restores the lanes of one central stream: the checkpoint, then a scan of every central
// partition from the checkpointed position to its end, raising applied[c] to the highest edge
// offset found. It returns the number of records scanned.
func (r *Receiver) rebuild(cs *centralStream) (int, error) {
	n := cs.stream.Partitions()
	positions := make([]int64, n)
	// Lane records first: a lane's epoch decides which checkpointed state and which stored
	// records are its own.
	recs, err := r.loadLaneRecords(cs.name)
	if err != nil {
		return 0, err
	}
	for k, rec := range recs {
		s := cs.lane(k)
		s.rec.Store(rec)
		s.expected = rec.Start
		s.committed.Store(rec.Start)
	}
	v, err := r.log.Meta(dedupeNamespace, cs.name)
	if err != nil {
		return 0, err
	}
	if v != nil {
		var cp checkpoint
		if err := json.Unmarshal(v, &cp); err != nil {
			return 0, fmt.Errorf("read checkpoint: %w", err)
		}
		if len(cp.Positions) != n {
			return 0, fmt.Errorf("checkpoint has %d partitions, the stream %d", len(cp.Positions), n)
		}
		copy(positions, cp.Positions)
		for _, sc := range cp.Lanes {
			if len(sc.Applied) != n {
				return 0, fmt.Errorf("checkpoint lane %s/%d has %d partitions, the stream %d", sc.Edge, sc.Partition, len(sc.Applied), n)
			}
			k := laneKey{sc.Edge, sc.Partition}
			if !recs[k].belongs(sc.Incarnation) {
				continue // checkpointed in an earlier epoch: the lane starts at its record's Start
			}
			s := cs.lane(k)
			s.expected = sc.Expected
			copy(s.applied, sc.Applied)
			s.committed.Store(sc.Expected)
		}
	}
	scanned := 0
	ctx := context.Background()
	for c := 0; c < n; c++ {
		rd := cs.stream.Partition(c).NewReader(positions[c], &storage.ReaderOptions{ReadBytes: 4 << 20})
		for {
			e, err := rd.Next(ctx)
			if err == io.EOF {
				break
			}
			if err != nil {
				return scanned, fmt.Errorf("scan partition %d: %w", c, err)
			}
			if e.Gap != nil {
				continue
			}
			scanned++
			pv, ok := protocol.ParseProvenance(e.Record.Headers)
			if !ok {
				continue // not forwarded by an edge
			}
			eo := pv.Offset
			k := laneKey{pv.Edge, pv.Partition}
			if !recs[k].belongs(pv.Incarnation) {
				continue // stored in an earlier epoch of the lane
			}
			s := cs.lane(k)
			if eo > s.applied[c] {
				s.applied[c] = eo
			}
		}
	}
	for _, s := range cs.lanes {
		s.restored()
	}
	return scanned, nil
}

// Checkpoint writes the dedupe state of every changed stream to the log's metadata (one bbolt
// transaction per stream) and then publishes the new Committed offsets.
func (r *Receiver) Checkpoint() error {
	r.checkpointMu.Lock()
	defer r.checkpointMu.Unlock()
	r.mu.Lock()
	streams := make([]*centralStream, 0, len(r.streams))
	for _, cs := range r.streams {
		streams = append(streams, cs)
	}
	r.mu.Unlock()
	var errs []error
	for _, cs := range streams {
		if err := r.checkpointStream(cs); err != nil {
			errs = append(errs, fmt.Errorf("checkpoint stream %q: %w", cs.name, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Receiver) checkpointStream(cs *centralStream) error {
	n := cs.stream.Partitions()
	// Positions first, lanes second: a record below a position was durable before it was read,
	// so its apply was registered before; each lane's snapshot below waits until every apply
	// registered by then has retired. So the snapshot covers every record below the positions.
	cp := checkpoint{Positions: make([]int64, n), Time: time.Now().UTC()}
	for c := range cp.Positions {
		cp.Positions[c] = cs.stream.Partition(c).EndOffset()
	}
	cs.mu.Lock()
	lanes := make([]*lane, 0, len(cs.lanes))
	for _, s := range cs.lanes {
		lanes = append(lanes, s)
	}
	cs.mu.Unlock()
	changed := false
	for _, s := range lanes {
		sc, dirty, err := s.snapshot(checkpointWait)
		if err != nil {
			for _, s := range lanes {
				s.markDirty()
			}
			return err
		}
		cp.Lanes = append(cp.Lanes, sc)
		changed = changed || dirty
	}
	if !changed {
		return nil
	}
	v, _ := json.Marshal(cp)
	if err := r.log.SetMeta(dedupeNamespace, cs.name, v); err != nil {
		for _, s := range lanes {
			s.markDirty()
		}
		return err
	}
	for i, s := range lanes {
		s.committed.Store(cp.Lanes[i].Expected)
	}
	return nil
}

// GapInfo is a range of edge offsets that will never arrive, with the edge's reason.
type GapInfo struct {
	Edge        string    `json:"edge"`
	Stream      string    `json:"stream"`
	Partition   int       `json:"partition"`
	Incarnation string    `json:"incarnation,omitempty"` // the edge log the offsets belong to
	From        int64     `json:"from"`
	To          int64     `json:"to"`
	Reason      string    `json:"reason"`
	Time        time.Time `json:"time,omitzero"` // when the edge recorded it
	Received    time.Time `json:"received"`
}

func gapKey(g GapInfo) string {
	k := fmt.Sprintf("%s\x00%s\x00%010d\x00%020d", g.Edge, g.Stream, g.Partition, g.From)
	if g.Incarnation != "" {
		k += "\x00" + g.Incarnation
	}
	return k
}

// storeGap stores a gap chunk's marker durably.
func (r *Receiver) storeGap(s *lane, c *chunk) error {
	// Keyed by the edge's own From, so a gap resent after a central restart overwrites itself.
	return r.putGap(GapInfo{Edge: s.key.edge, Stream: s.stream, Partition: s.key.partition, Incarnation: s.incarnation(),
		From: c.gap.From, To: c.gap.To, Reason: c.gap.Reason, Time: c.gap.Time, Received: time.Now().UTC()})
}

func (r *Receiver) putGap(g GapInfo) error {
	v, _ := json.Marshal(g)
	if err := r.log.SetMeta(gapNamespace, gapKey(g), v); err != nil {
		return fmt.Errorf("store gap: %w", err)
	}
	r.logger.Warn("edge reports lost records", "edge", g.Edge, "stream", g.Stream, "partition", g.Partition,
		"from", g.From, "to", g.To, "reason", g.Reason)
	r.m.gapRecords.WithLabelValues(g.Edge, g.Stream, strconv.Itoa(g.Partition)).Add(float64(g.To - g.From))
	return nil
}

// Gaps lists every gap marker received, by edge, stream, partition and offset.
func (r *Receiver) Gaps() ([]GapInfo, error) { return ListGaps(r.log) }

// ListGaps reads the gap markers stored in a central log.
func ListGaps(log *storage.Log) ([]GapInfo, error) {
	var out []GapInfo
	err := log.ScanMeta(gapNamespace, func(_ string, v []byte) error {
		var g GapInfo
		if err := json.Unmarshal(v, &g); err != nil {
			return fmt.Errorf("read gap: %w", err)
		}
		out = append(out, g)
		return nil
	})
	return out, err
}

func sortLanes(l []LaneInfo) {
	sort.Slice(l, func(i, j int) bool {
		a, b := l[i], l[j]
		if a.Edge != b.Edge {
			return a.Edge < b.Edge
		}
		if a.Stream != b.Stream {
			return a.Stream < b.Stream
		}
		return a.Partition < b.Partition
	})
}
