package storage

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// SegmentInfo describes one segment file of a partition, for inspection and metrics.
type SegmentInfo struct {
	Base        int64  `json:"base"`
	Next        int64  `json:"next"`
	Sealed      bool   `json:"sealed"`
	RawBytes    int64  `json:"raw_bytes"`
	StoredBytes int64  `json:"stored_bytes"`
	Frames      int    `json:"frames,omitempty"`
	MaxTime     int64  `json:"max_timestamp_ms"`
	File        string `json:"file"`
}

// Segments lists the partition's segments in offset order; the last one is the active segment.
func (p *Partition) Segments() []SegmentInfo {
	segs := p.snapshot()
	out := make([]SegmentInfo, 0, len(segs))
	for _, s := range segs {
		si := SegmentInfo{Base: s.baseOffset(), Next: s.nextOffset(), Sealed: s.sealed(), RawBytes: s.rawBytes(),
			StoredBytes: s.storedBytes(), MaxTime: s.maxTimestamp(), File: filepath.Base(s.path())}
		if ss, ok := s.(*sealedSegment); ok {
			si.Frames = len(ss.frames)
		}
		out = append(out, si)
	}
	return out
}

// VerifyProblem is one piece of damage found by Verify.
type VerifyProblem struct {
	Stream    string `json:"stream"`
	Partition int    `json:"partition"`
	Segment   int64  `json:"segment"`
	Offset    int64  `json:"offset"`
	Problem   string `json:"problem"`
}

// Verify reads every stored byte of every partition and checks it: frame CRCs and decompression of
// sealed segments, batch CRCs and offset continuity everywhere. It changes nothing; damage it finds
// in a sealed segment is left for recovery or a reader to quarantine.
func (l *Log) Verify() ([]VerifyProblem, error) {
	var out []VerifyProblem
	for _, s := range l.Streams() {
		for _, p := range s.partitions {
			for _, seg := range p.snapshot() {
				if !seg.acquire() {
					continue
				}
				probs := verifySegment(seg)
				seg.release()
				for _, pr := range probs {
					pr.Stream, pr.Partition = s.name, p.id
					out = append(out, pr)
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Stream != b.Stream {
			return a.Stream < b.Stream
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.Offset < b.Offset
	})
	return out, nil
}

func verifySegment(seg segment) []VerifyProblem {
	var out []VerifyProblem
	bad := func(off int64, format string, args ...any) {
		out = append(out, VerifyProblem{Segment: seg.baseOffset(), Offset: off, Problem: fmt.Sprintf(format, args...)})
	}
	check := func(raw []byte, want int64) int64 {
		for len(raw) > 0 {
			h, err := checkBatch(raw)
			if err != nil {
				bad(want, "batch: %v", err)
				return -1
			}
			if h.BaseOffset != want {
				bad(want, "batch starts at offset %d", h.BaseOffset)
				return -1
			}
			if err := decodeBatch(raw, h, func(int64, Record) error { return nil }); err != nil {
				bad(want, "records: %v", err)
				return -1
			}
			want = h.NextOffset()
			raw = raw[h.Length:]
		}
		return want
	}
	switch s := seg.(type) {
	case *sealedSegment:
		if _, err := os.Stat(filepathIndex(s.file)); err != nil {
			bad(s.base, "index file: %v", err)
		}
		want := s.base
		for i, fi := range s.frames {
			if fi.base != want {
				bad(fi.base, "frame %d starts at offset %d, want %d", i, fi.base, want)
			}
			comp, err := s.readFrame(i)
			if err != nil {
				bad(fi.base, "frame %d: %v", i, err)
				want = fi.next()
				continue
			}
			raw, err := decompressFrame(comp, int(fi.rawLen))
			if err != nil || len(raw) != int(fi.rawLen) {
				bad(fi.base, "frame %d does not decompress: %v", i, err)
				want = fi.next()
				continue
			}
			if n := check(raw, fi.base); n >= 0 && n != fi.next() {
				bad(fi.base, "frame %d holds offsets up to %d, index says %d", i, n, fi.next())
			}
			want = fi.next()
		}
	case *plainSegment:
		size := s.size.Load()
		if size == 0 {
			break // nothing to read (and a read-only log's stand-in for a missing file has none)
		}
		raw := make([]byte, size)
		if _, err := s.f.ReadAt(raw, 0); err != nil {
			bad(s.base, "read: %v", err)
			break
		}
		if n := check(raw, s.base); n >= 0 && n != s.nextOffset() {
			bad(n, "segment ends at offset %d, expected %d", n, s.nextOffset())
		}
	}
	return out
}

func filepathIndex(zst string) string { return zst[:len(zst)-len(sealedExt)] + indexExt }
