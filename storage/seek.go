package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Wait returns once the partition has a readable record at or past offset (its end offset is
// above offset), when ctx ends (with ctx's error), or when the log closes (ErrClosed).
func (p *Partition) Wait(ctx context.Context, offset int64) error {
	for {
		wait := p.waitChan()
		if p.end.Load() > offset {
			return nil
		}
		p.mu.Lock()
		closing := p.closing
		p.mu.Unlock()
		if closing {
			return ErrClosed
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// OffsetForTime returns the first offset whose record has a timestamp at or after t, or the end
// offset when no readable record has. Timestamps are the writers' and need not grow with offsets,
// so this is the first such record in offset order, not a binary search. It stays cheap anyway:
// whole segments and sealed frames whose newest timestamp is older than t are skipped from their
// index without being read, plain segments are walked batch header by batch header, and only the
// first batch that may hold a match is decoded. It stops early when ctx ends.
func (p *Partition) OffsetForTime(ctx context.Context, t time.Time) (int64, error) {
	target := t.UnixMilli()
	end := p.end.Load()
	off := p.StartOffset()
	for off < end {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		seg := p.segmentFor(off)
		if seg == nil {
			return 0, ErrClosed
		}
		off = max(off, seg.baseOffset())
		if seg.maxTimestamp() < target {
			next := seg.nextOffset()
			seg.release()
			if next <= off {
				return end, nil // the active segment, with nothing new enough
			}
			off = next
			continue
		}
		found, next, err := seekTimeIn(ctx, seg, off, end, target)
		seg.release()
		if err != nil {
			return 0, fmt.Errorf("seek partition %d to %s: %w", p.id, t.Format(time.RFC3339), err)
		}
		if found >= 0 {
			return found, nil
		}
		if next <= off {
			return end, nil
		}
		off = next
	}
	return end, nil
}

// seekTimeIn looks for the first record at or after from (and below end) in seg whose timestamp
// is at least target. It returns its offset, or -1 and the offset after the part it searched.
func seekTimeIn(ctx context.Context, seg segment, from, end, target int64) (found, next int64, err error) {
	found = -1
	if ss, ok := seg.(*sealedSegment); ok {
		for i := ss.frameFor(from); i < len(ss.frames); i++ {
			if err := ctx.Err(); err != nil {
				return -1, 0, err
			}
			fi := ss.frames[i]
			if fi.base >= end {
				return -1, end, nil
			}
			if fi.maxTS < target {
				continue
			}
			raw, err := ss.readBatches(max(from, fi.base), 0)
			if err != nil {
				return -1, 0, err
			}
			if found, err = firstAtTime(raw, from, end, target); err != nil || found >= 0 {
				return found, 0, err
			}
		}
		return -1, ss.nextOffset(), nil
	}
	off := from
	for off < end {
		if err := ctx.Err(); err != nil {
			return -1, 0, err
		}
		raw, err := seg.readBatches(off, 1<<20)
		if errors.Is(err, io.EOF) {
			return -1, off, nil
		}
		if err != nil {
			return -1, 0, err
		}
		if found, err = firstAtTime(raw, from, end, target); err != nil || found >= 0 {
			return found, 0, err
		}
		for len(raw) >= batchHeaderSize {
			h, err := parseBatchHeader(raw)
			if err != nil {
				return -1, 0, err
			}
			off = h.NextOffset()
			raw = raw[min(int(h.Length), len(raw)):]
		}
	}
	return -1, off, nil
}

// firstAtTime decodes only the batches of raw whose newest timestamp reaches target.
func firstAtTime(raw []byte, from, end, target int64) (int64, error) {
	for len(raw) > 0 {
		h, err := checkBatch(raw)
		if err != nil {
			return -1, err
		}
		if h.MaxTimestamp >= target && h.NextOffset() > from {
			found := int64(-1)
			err := decodeBatch(raw, h, func(off int64, rec Record) error {
				if found < 0 && off >= from && off < end && millis(rec.Timestamp) >= target {
					found = off
				}
				return nil
			})
			if err != nil || found >= 0 {
				return found, err
			}
		}
		raw = raw[h.Length:]
	}
	return -1, nil
}
