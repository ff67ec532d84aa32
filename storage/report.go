package storage

import "sort"

// Report is what a log holds, as `tributary inspect` shows it: every stream and partition with
// its offsets, segments and gaps, every cursor with how far it trails its partition's end, and
// any damage found. A running node serves it on its admin socket, so a live log can be inspected
// without stopping the node.
type Report struct {
	Dir      string          `json:"dir"`
	Streams  []StreamReport  `json:"streams"`
	Cursors  []CursorReport  `json:"cursors"`
	Problems []VerifyProblem `json:"problems,omitempty"`
	Verified bool            `json:"verified"`
	// Meta is set when meta.db was found damaged (see [Log.MetaRepair]).
	Meta *MetaRepair `json:"meta_repair,omitempty"`
}

// StreamReport is one stream of a [Report].
type StreamReport struct {
	Name       string            `json:"name"`
	Partitions []PartitionReport `json:"partitions"`
}

// PartitionReport is one partition of a [StreamReport].
type PartitionReport struct {
	Partition   int           `json:"partition"`
	StartOffset int64         `json:"start_offset"`
	EndOffset   int64         `json:"end_offset"`
	RawBytes    int64         `json:"raw_bytes"`
	StoredBytes int64         `json:"stored_bytes"`
	Segments    []SegmentInfo `json:"segments"`
	Gaps        []Gap         `json:"gaps,omitempty"`
}

// CursorReport is a cursor and its lag: the records between it and its partition's end (for a
// consumer group, what it has not read; for the edge's forwarder cursor, what central has not
// confirmed).
type CursorReport struct {
	CursorInfo
	Lag int64 `json:"lag"`
}

// Report describes the log; with verify it also reads and checks every stored byte (see
// [Log.Verify]). It is safe while the log is in use.
func (l *Log) Report(verify bool) (*Report, error) {
	rep := &Report{Dir: l.dir, Streams: []StreamReport{}, Cursors: []CursorReport{}, Verified: verify, Meta: l.metaRepair}
	ends := map[string][]int64{}
	for _, s := range l.Streams() {
		sr := StreamReport{Name: s.Name()}
		for i := 0; i < s.Partitions(); i++ {
			p := s.Partition(i)
			pr := PartitionReport{Partition: i, StartOffset: p.StartOffset(), EndOffset: p.EndOffset(),
				Segments: p.Segments(), Gaps: p.Gaps()}
			for _, seg := range pr.Segments {
				pr.RawBytes += seg.RawBytes
				pr.StoredBytes += seg.StoredBytes
			}
			ends[s.Name()] = append(ends[s.Name()], pr.EndOffset)
			sr.Partitions = append(sr.Partitions, pr)
		}
		rep.Streams = append(rep.Streams, sr)
	}
	for _, c := range l.Cursors() {
		cr := CursorReport{CursorInfo: c}
		if e := ends[c.Stream]; c.Partition >= 0 && c.Partition < len(e) {
			cr.Lag = max(e[c.Partition]-c.Offset, 0)
		}
		rep.Cursors = append(rep.Cursors, cr)
	}
	sort.Slice(rep.Cursors, func(i, j int) bool {
		a, b := rep.Cursors[i], rep.Cursors[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.Stream != b.Stream {
			return a.Stream < b.Stream
		}
		return a.Partition < b.Partition
	})
	if verify {
		probs, err := l.Verify()
		if err != nil {
			return nil, err
		}
		rep.Problems = probs
	}
	for _, d := range l.Damage() {
		rep.Problems = append(rep.Problems, VerifyProblem{Stream: d.Stream, Partition: d.Partition,
			Segment: d.Segment, Offset: d.Offset, Problem: d.Reason})
	}
	return rep, nil
}
