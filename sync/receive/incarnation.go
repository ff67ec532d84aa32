package receive

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/tributary-iot/tributary/sync/protocol"
)

// laneNamespace holds one record per lane that an edge log with an incarnation feeds (key =
// edge, stream, partition). It is written, durably, before the first record of an epoch is
// accepted, so a restart never mistakes a new log's records for the old log's.
const laneNamespace = "central.lanes"

// Gap reasons central records itself when a lane starts a new epoch.
const (
	// GapLogReplaced: the edge came back with a new log (a wiped or replaced data dir); what the
	// old log held past central's position never arrives.
	GapLogReplaced = "edge-log-replaced"
	// GapLogWentBack: the edge's log went back below what central holds (an older copy, a cut
	// file) and continues from there as a new incarnation; the old log's unforwarded rest is lost.
	GapLogWentBack = "edge-log-went-back"
)

// maxRetired bounds how many replaced incarnations a lane remembers (to refuse them).
const maxRetired = 16

// laneRecord is the durable identity of a lane's current epoch.
type laneRecord struct {
	Edge        string    `json:"edge"`
	Stream      string    `json:"stream"`
	Partition   int       `json:"partition"`
	Incarnation string    `json:"incarnation"`
	Epoch       int       `json:"epoch"`
	Start       int64     `json:"start"` // the first edge offset of this epoch
	Since       time.Time `json:"since"`
	// Legacy: the lane was fed by an edge that sent no incarnation before this one adopted it,
	// so its stored records without an incarnation header belong to this epoch too.
	Legacy  bool     `json:"legacy,omitempty"`
	Retired []string `json:"retired,omitempty"` // incarnations this lane moved on from, newest last
}

func laneRecordKey(edge, stream string, partition int) string {
	return fmt.Sprintf("%s\x00%s\x00%010d", edge, stream, partition)
}

// loadLaneRecords reads the lane records of one central stream.
func (r *Receiver) loadLaneRecords(stream string) (map[laneKey]*laneRecord, error) {
	out := map[laneKey]*laneRecord{}
	err := r.log.ScanMeta(laneNamespace, func(_ string, v []byte) error {
		var rec laneRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("read lane record: %w", err)
		}
		if rec.Stream == stream {
			out[laneKey{rec.Edge, rec.Partition}] = &rec
		}
		return nil
	})
	return out, err
}

// belongs reports whether a stored record with incarnation header inc ("" for none) is one of
// the lane's current epoch.
func (rec *laneRecord) belongs(inc string) bool {
	if rec == nil {
		return inc == ""
	}
	return inc == rec.Incarnation || rec.Legacy && inc == ""
}

func (s *lane) incarnation() string {
	if rec := s.rec.Load(); rec != nil {
		return rec.Incarnation
	}
	return ""
}

// refusal is an answer that ends a request before anything is applied.
type refusal struct {
	code   int
	reason string // metric label
	msg    string
}

// requestIncarnation reads and checks the incarnation headers.
func requestIncarnation(h http.Header) (inc string, base int64, err error) {
	inc = h.Get(protocol.HeaderIncarnation)
	if inc == "" {
		return "", 0, nil
	}
	if !protocol.ValidIncarnation(inc) {
		return "", 0, fmt.Errorf("header %s: %q is not 1-64 of A-Z a-z 0-9 . _ -", protocol.HeaderIncarnation, inc)
	}
	if h.Get(protocol.HeaderIncarnationBase) != "" {
		if base, err = protocol.Int64Header(h, protocol.HeaderIncarnationBase); err != nil || base < 0 {
			return "", 0, fmt.Errorf("header %s must be a non-negative offset", protocol.HeaderIncarnationBase)
		}
	}
	return inc, base, nil
}

// admit checks that a request's incarnation is the lane's, adopting it or starting a new epoch
// when the edge's log changed. It runs before the request's edge end is recorded, so the old
// log's last reported end is still known for the gap.
func (r *Receiver) admit(s *lane, inc string, base int64) *refusal {
	cur := s.rec.Load()
	if cur != nil && inc == cur.Incarnation || cur == nil && inc == "" {
		return nil
	}
	if inc == "" {
		return &refusal{http.StatusBadRequest, "no-incarnation", fmt.Sprintf("lane %s/%d of edge %s is fed by edge log incarnation %s, and this request names none: "+
			"an edge that does not send %s cannot be told from an older copy of the log; upgrade the edge", s.stream, s.key.partition, s.key.edge, cur.Incarnation, protocol.HeaderIncarnation)}
	}
	if cur != nil && slices.Contains(cur.Retired, inc) {
		r.logger.Error("refusing an edge log this lane has moved on from: is an old copy of the gateway's data dir running, or two gateways under one edge id?",
			"edge", s.key.edge, "stream", s.stream, "partition", s.key.partition, "incarnation", inc, "current", cur.Incarnation, "since", cur.Since)
		return &refusal{http.StatusGone, "retired-incarnation", fmt.Sprintf("edge log incarnation %s of lane %s/%d was replaced by %s at %s: an old copy of this gateway's data dir, "+
			"or another gateway with edge id %s, is running; stop it (its unforwarded readings are recorded as a gap)", inc, s.stream, s.key.partition, cur.Incarnation, cur.Since.Format(time.RFC3339), s.key.edge)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur = s.rec.Load(); cur != nil && cur.Incarnation == inc {
		return nil // another request did it meanwhile
	}
	if err := s.drainLocked(); err != nil {
		r.logger.Warn("an apply of the lane's previous log failed before its epoch ended", "edge", s.key.edge, "stream", s.stream, "partition", s.key.partition, "err", err)
	}
	now := time.Now().UTC()
	rec := &laneRecord{Edge: s.key.edge, Stream: s.stream, Partition: s.key.partition, Incarnation: inc, Epoch: 1, Since: now}
	s.state.Lock()
	expected, fresh := s.expected, s.expected == 0 && !slices.ContainsFunc(s.applied, func(o int64) bool { return o >= 0 })
	s.state.Unlock()
	switch {
	case cur == nil && fresh:
		// A lane this log starts.
	case cur == nil:
		// The lane was fed by an edge that sent no incarnation (an older version): this log
		// adopts it where it is. The forwarder itself starts a new incarnation when central holds
		// more than its log had at startup, so a wiped log does not pass as the old one here.
		rec.Legacy = true
		r.logger.Info("lane adopted by an edge log incarnation", "edge", s.key.edge, "stream", s.stream, "partition", s.key.partition,
			"incarnation", inc, "next", expected)
	default:
		rec.Epoch = cur.Epoch + 1
		rec.Start = min(base, expected)
		rec.Retired = append(slices.Clone(cur.Retired), cur.Incarnation)
		if len(rec.Retired) > maxRetired {
			rec.Retired = rec.Retired[len(rec.Retired)-maxRetired:]
		}
	}
	if err := r.storeLane(rec); err != nil {
		return &refusal{http.StatusServiceUnavailable, "storage", fmt.Sprintf("store lane epoch: %v", err)}
	}
	if cur == nil {
		s.rec.Store(rec)
		return nil
	}
	// A new epoch: the old log's unforwarded rest will never arrive.
	reason := GapLogReplaced
	if base > 0 {
		reason = GapLogWentBack
	}
	oldEnd := s.edgeEnd.Load()
	if oldEnd > expected {
		g := GapInfo{Edge: s.key.edge, Stream: s.stream, Partition: s.key.partition, Incarnation: cur.Incarnation,
			From: expected, To: oldEnd, Reason: reason, Time: now, Received: now}
		if err := r.putGap(g); err != nil {
			r.logger.Error("record the lost range of the replaced edge log", "edge", g.Edge, "stream", g.Stream, "partition", g.Partition, "err", err)
		}
	}
	s.state.Lock()
	s.expected = rec.Start
	for i := range s.applied {
		s.applied[i] = -1
	}
	s.dirty = true
	s.next.Store(rec.Start)
	s.committed.Store(rec.Start) // the lane record is durable: a restart resumes the epoch at Start
	s.lastAdvance.Store(now.UnixNano())
	close(s.changed)
	s.changed = make(chan struct{})
	s.state.Unlock()
	s.queued = rec.Start
	for i := range s.queuedApplied {
		s.queuedApplied[i] = -1
	}
	s.moveQueuedLocked()
	s.rec.Store(rec)
	s.edgeEnd.Store(0)
	r.m.epochs.WithLabelValues(s.key.edge, s.stream, strconv.Itoa(s.key.partition)).Inc()
	r.logger.Warn("edge log changed: lane starts a new epoch", "edge", s.key.edge, "stream", s.stream, "partition", s.key.partition,
		"reason", reason, "epoch", rec.Epoch, "incarnation", inc, "previous", cur.Incarnation, "start", rec.Start,
		"previous_next", expected, "previous_edge_end", oldEnd, "lost", max(oldEnd-expected, 0))
	return nil
}

func (r *Receiver) storeLane(rec *laneRecord) error {
	v, _ := json.Marshal(rec)
	if err := r.log.SetMeta(laneNamespace, laneRecordKey(rec.Edge, rec.Stream, rec.Partition), v); err != nil {
		return fmt.Errorf("store lane record: %w", err)
	}
	return nil
}
