package storage

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/tributary-iot/tributary/storage/internal/fsutil"
)

// sealer compresses rolled segments one at a time, so sealing never takes more than one core
// from ingest on a small gateway.
func (l *Log) sealer(ctx context.Context) {
	defer l.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-l.sealQueue:
			if err := j.p.seal(j.seg); err != nil {
				l.logger.Error("seal segment; it stays uncompressed and readable", "stream", j.p.stream,
					"partition", j.p.id, "segment", j.seg.base, "err", err)
			}
		}
	}
}

// seal writes the sealed form of a rolled plain segment next to it and swaps it in. Readers keep
// reading the plain file until they release it; it is deleted after that.
func (p *Partition) seal(ps *plainSegment) error {
	if !ps.acquire() {
		return nil // dropped by retention meanwhile
	}
	defer ps.release()
	size := ps.size.Load()
	zstPath := filepath.Join(p.dir, segmentName(ps.base, sealedExt))
	idxPath := filepath.Join(p.dir, segmentName(ps.base, indexExt))
	tmp, err := createFile(zstPath + tmpExt)
	if err != nil {
		return err
	}
	frames, err := sealFile(bufio.NewReaderSize(io.NewSectionReader(ps.f, 0, size), 64<<10), tmp, p.log.opts.FrameBytes)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(zstPath + tmpExt)
		return fmt.Errorf("seal segment %d: %w", ps.base, err)
	}
	next := ps.nextOffset()
	if err := writeFileSync(idxPath+tmpExt, encodeIndex(ps.base, next, frames)); err != nil {
		os.Remove(zstPath + tmpExt)
		os.Remove(idxPath + tmpExt)
		return fmt.Errorf("write index of segment %d: %w", ps.base, err)
	}
	// The index goes first: a .zst without .idx would mean a lost index, while an .idx alone is
	// known to be an unfinished seal.
	if err := os.Rename(idxPath+tmpExt, idxPath); err != nil {
		return err
	}
	if err := os.Rename(zstPath+tmpExt, zstPath); err != nil {
		return err
	}
	if err := fsutil.SyncDir(p.dir); err != nil {
		return err
	}
	f, err := os.Open(zstPath)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	ss := newSealedSegment(f, ps.base, next, frames, st.Size())
	if !p.replaceSegment(ps, ss) {
		ss.retire(true)
		return nil
	}
	l := p.log
	l.diskBytes.Add(ss.size - size)
	l.sealedSegments.Add(1)
	l.sealedRaw.Add(size)
	l.sealedBytes.Add(ss.size)
	l.logger.Debug("sealed segment", "stream", p.stream, "partition", p.id, "segment", ps.base,
		"raw_bytes", size, "sealed_bytes", ss.size, "frames", len(frames))
	ps.retire(true)
	if l.opts.QuotaBytes > 0 {
		l.kickMaintenance() // the sealed segment may be what the quota was waiting to drop
	}
	return nil
}

func (l *Log) kickMaintenance() {
	select {
	case l.kickMaint <- struct{}{}:
	default:
	}
}

// maintain runs age rolls, interval fsyncs, retention and the disk quota.
func (l *Log) maintain(ctx context.Context) {
	defer l.wg.Done()
	tick := time.NewTicker(l.opts.MaintenanceInterval)
	defer tick.Stop()
	var syncTick <-chan time.Time
	if l.opts.Fsync == FsyncInterval {
		t := time.NewTicker(l.opts.FsyncInterval)
		defer t.Stop()
		syncTick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-syncTick:
			for _, p := range l.allPartitions() {
				p.syncIfDirty()
			}
		case <-tick.C:
			l.kickFailed()
			l.rollByAge()
			l.enforceRetention(time.Now())
		case <-l.kickMaint:
			l.enforceRetention(time.Now())
		}
	}
}

func (l *Log) allPartitions() []*Partition {
	var out []*Partition
	for _, s := range l.Streams() {
		out = append(out, s.partitions...)
	}
	return out
}

func (l *Log) rollByAge() {
	if l.opts.SegmentAge < 0 {
		return
	}
	for _, p := range l.allPartitions() {
		p.mu.Lock()
		a := p.active
		p.mu.Unlock()
		if a.size.Load() > 0 && time.Since(a.created) >= l.opts.SegmentAge {
			p.rollReq.Store(true)
			select {
			case p.kick <- struct{}{}:
			default:
			}
		}
	}
}

// enforceRetention deletes sealed segments from the front of partitions: by age and size when
// every required cursor has passed them, then for the quota (forwarded first, then, under
// DropOldest, unforwarded with a gap record).
func (l *Log) enforceRetention(now time.Time) {
	l.retentionMu.Lock()
	defer l.retentionMu.Unlock()
	o := &l.opts
	parts := l.allPartitions()
	if o.RetentionAge > 0 || o.RetentionBytes > 0 {
		for _, p := range parts {
			floor := l.requiredFloor(p.stream, p.id)
			segs := p.snapshot()
			var total int64
			for _, s := range segs {
				total += s.storedBytes()
			}
			for _, s := range segs[:len(segs)-1] { // never the active segment
				if s.nextOffset() > floor {
					break
				}
				byAge := o.RetentionAge > 0 && s.maxTimestamp() > 0 && now.Sub(time.UnixMilli(s.maxTimestamp())) > o.RetentionAge
				bySize := o.RetentionBytes > 0 && total > o.RetentionBytes
				if !byAge && !bySize {
					break
				}
				p.dropSegment(s, "")
				total -= s.storedBytes()
			}
		}
	}
	if o.QuotaBytes <= 0 {
		return
	}
	for l.diskBytes.Load() >= o.QuotaBytes {
		if !l.dropOldest(parts, true) && (o.QuotaPolicy != DropOldest || !l.dropOldest(parts, false)) {
			break
		}
	}
	if l.diskBytes.Load() < o.QuotaBytes {
		return
	}
	// Still full and nothing left to drop but active segments: roll those whose records may go
	// (all forwarded, or any under drop-oldest), so that once sealed they can be dropped. A
	// partition still waiting for a seal is left alone, so a full log does not roll every tick.
	for _, p := range parts {
		segs := p.snapshot()
		active := segs[len(segs)-1]
		if active.storedBytes() == 0 {
			continue
		}
		waiting := false
		for _, s := range segs[:len(segs)-1] {
			waiting = waiting || !s.sealed()
		}
		if waiting || (o.QuotaPolicy != DropOldest && active.nextOffset() > l.forwardedFloor(p.stream, p.id)) {
			continue
		}
		p.rollReq.Store(true)
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// dropOldest deletes the sealed segment with the oldest newest-record among the partitions' first
// segments. With forwardedOnly, only segments every required cursor has passed qualify.
func (l *Log) dropOldest(parts []*Partition, forwardedOnly bool) bool {
	var bestP *Partition
	var best segment
	for _, p := range parts {
		segs := p.snapshot()
		if len(segs) < 2 {
			continue // the active segment is never dropped
		}
		s := segs[0]
		if forwardedOnly && s.nextOffset() > l.forwardedFloor(p.stream, p.id) {
			continue
		}
		if best == nil || s.maxTimestamp() < best.maxTimestamp() {
			bestP, best = p, s
		}
	}
	if best == nil {
		return false
	}
	reason := ""
	if !forwardedOnly && best.nextOffset() > l.forwardedFloor(bestP.stream, bestP.id) {
		reason = GapQuotaDropped
	}
	bestP.dropSegment(best, reason)
	return true
}

// dropSegment removes a segment from the front of the partition; with a reason, the unforwarded
// part of its range is recorded as a gap first, so no reader misses the loss.
func (p *Partition) dropSegment(s segment, reason string) {
	p.removeMu.Lock()
	defer p.removeMu.Unlock()
	if reason != "" {
		from := max(s.baseOffset(), min(p.log.forwardedFloor(p.stream, p.id), s.nextOffset()))
		if from < s.nextOffset() {
			p.mu.Lock()
			p.recordGapLocked(Gap{From: from, To: s.nextOffset(), Reason: reason})
			p.mu.Unlock()
			p.log.droppedRecords.Add(s.nextOffset() - from)
			// One line per dropped segment: a full log drops a few segments a second at most.
			p.log.logger.Warn("disk quota reached: dropped unforwarded records, a gap marker tells the reader",
				"stream", p.stream, "partition", p.id, "from", from, "to", s.nextOffset(),
				"records", s.nextOffset()-from, "reason", reason)
		}
	}
	if !p.replaceSegment(s, nil) {
		return
	}
	p.log.diskBytes.Add(-s.storedBytes())
	s.retire(true)
}

// quarantineSegment handles damage a reader found in a sealed segment after open. Like
// openSealed it keeps the good frames when it can: the segment is replaced by segments
// of its good frames and the bad ones become gaps. Otherwise the whole segment leaves, and its gap
// is recorded in the same critical section that removes it: a reader that finds the hole must
// find the gap too, or it would take the range for one retention removed and skip it. Readers
// that hit the damage meanwhile wait here, then find the segment gone and read on.
func (p *Partition) quarantineSegment(s segment, cause error) {
	p.removeMu.Lock()
	defer p.removeMu.Unlock()
	ce := &CorruptionError{Offset: -1, Reason: "read failed", Err: cause}
	if errors.As(cause, &ce) {
		ce = &CorruptionError{Offset: ce.Offset, Reason: ce.Reason, Err: ce.Err}
	}
	if ss, ok := s.(*sealedSegment); ok && p.salvage(ss, ce) {
		return
	}
	p.mu.Lock()
	i := slices.Index(p.segments, s)
	if i >= 0 {
		p.recordGapLocked(Gap{From: s.baseOffset(), To: s.nextOffset(), Reason: GapCorrupt})
		p.segments = append(p.segments[:i:i], p.segments[i+1:]...) // a new array: snapshots stay whole
	}
	p.mu.Unlock()
	if i < 0 {
		return // another reader got here first
	}
	p.log.quarantine(p.stream, p.id, p.dir, s.baseOffset(), ce)
	p.log.diskBytes.Add(-s.storedBytes())
	s.retire(false)
}

// salvage replaces a sealed segment a reader found damaged by segments of its good frames, and
// reports whether it did; the caller holds removeMu. The CorruptionError names the segment
// afterwards, as the open-time report does.
func (p *Partition) salvage(ss *sealedSegment, ce *CorruptionError) bool {
	p.mu.Lock()
	i := slices.Index(p.segments, segment(ss))
	p.mu.Unlock()
	if i < 0 || !ss.acquire() {
		return i < 0 // gone already: nothing left to do either way
	}
	defer ss.release()
	ce.Stream, ce.Partition, ce.Segment = p.stream, p.id, ss.base
	if ce.Offset < 0 {
		ce.Offset = ss.base
	}
	segs, err := p.log.salvageSealed(p, ss.f, ss.frames, ce, func(g Gap) {
		p.mu.Lock()
		p.recordGapLocked(g)
		p.mu.Unlock()
	})
	if err != nil {
		if !errors.Is(err, errNothingToSalvage) {
			p.log.logger.Error("salvage damaged segment; quarantining it whole", "stream", p.stream,
				"partition", p.id, "segment", ss.base, "err", err)
		}
		return false
	}
	var size int64
	p.mu.Lock()
	if i = slices.Index(p.segments, segment(ss)); i < 0 {
		// Cannot happen while removeMu is held; the files are in place for the next open.
		p.mu.Unlock()
		for _, s := range segs {
			s.retire(false)
		}
		return true
	}
	repl := slices.Clone(p.segments[:i])
	for _, s := range segs {
		repl = append(repl, s)
		size += s.storedBytes()
	}
	p.segments = append(repl, p.segments[i+1:]...)
	p.mu.Unlock()
	p.log.diskBytes.Add(size - ss.storedBytes())
	ss.retire(false) // its path now names the first salvaged segment, or nothing
	return true
}
