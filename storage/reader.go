package storage

import (
	"context"
	"errors"
	"io"
)

// Entry is what a Reader returns: a record with its offset, or a gap marker in place of records
// that were dropped or quarantined.
type Entry struct {
	Offset int64
	Record
	// Gap, when set, reports offsets [Gap.From, Gap.To) as missing; Offset equals Gap.From and
	// the record is empty.
	Gap *Gap
}

// ReaderOptions tune a Reader. The zero value reads what is there and stops.
type ReaderOptions struct {
	// Follow makes Next wait for new records at the end instead of returning io.EOF.
	Follow bool
	// ReadBytes is how many raw bytes one read pulls from an uncompressed segment; default 1 MiB.
	ReadBytes int
}

// Reader reads one partition in offset order, across sealed and active segments. It never returns
// a record that is not yet readable (durable under FsyncGroup). A Reader is not safe for
// concurrent use; open one per goroutine.
type Reader struct {
	p       *Partition
	next    int64
	opts    ReaderOptions
	pending []Entry
	head    int
}

// NewReader returns a reader that starts at offset from. An offset below the start of the log
// starts at the first stored record (after reporting any recorded gap in between); an offset past
// the end waits there.
func (p *Partition) NewReader(from int64, opts *ReaderOptions) *Reader {
	r := &Reader{p: p, next: max(from, 0)}
	if opts != nil {
		r.opts = *opts
	}
	if r.opts.ReadBytes <= 0 {
		r.opts.ReadBytes = 1 << 20
	}
	return r
}

// Offset is the offset of the next record Next will return.
func (r *Reader) Offset() int64 { return r.next }

// Next returns the next entry. Without Follow it returns io.EOF at the end of the readable
// records; with Follow it waits until ctx ends. It returns ErrClosed after the log closes.
func (r *Reader) Next(ctx context.Context) (Entry, error) {
	for r.head >= len(r.pending) {
		if err := r.fill(ctx); err != nil {
			return Entry{}, err
		}
	}
	e := r.pending[r.head]
	r.pending[r.head] = Entry{}
	r.head++
	if e.Gap != nil {
		r.next = e.Gap.To
	} else {
		r.next = e.Offset + 1
	}
	return e, nil
}

func (r *Reader) fill(ctx context.Context) error {
	r.pending, r.head = r.pending[:0], 0
	p := r.p
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		wait := p.waitChan()
		end := p.end.Load()
		if r.next >= end {
			if !r.opts.Follow {
				return io.EOF
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
			continue
		}
		seg := p.segmentFor(r.next)
		if seg == nil {
			return ErrClosed
		}
		if b := seg.baseOffset(); b > r.next {
			seg.release()
			if g, ok := p.gapAt(r.next, b); ok {
				r.pending = append(r.pending, Entry{Offset: g.From, Gap: &g})
				return nil
			}
			r.next = b // removed by retention: nothing was lost, it was consumed
			continue
		}
		raw, err := seg.readBatches(r.next, r.opts.ReadBytes)
		seg.release()
		if err == io.EOF {
			continue // the segment was rolled or replaced under us; look again
		}
		var ce *CorruptionError
		if errors.As(err, &ce) && seg.sealed() {
			p.quarantineSegment(seg, err)
			continue
		}
		if err != nil {
			return err
		}
		if err := r.decode(raw, end); err != nil {
			if seg.sealed() {
				// A frame that passed its CRC but holds a bad batch was damaged before it was
				// compressed; the segment is no better than one with a bad frame.
				r.pending = r.pending[:0]
				p.quarantineSegment(seg, err)
				continue
			}
			return err
		}
		if len(r.pending) > 0 {
			return nil
		}
	}
}

func (r *Reader) decode(raw []byte, end int64) error {
	for len(raw) > 0 {
		h, err := checkBatch(raw)
		if err != nil {
			return &CorruptionError{Stream: r.p.stream, Partition: r.p.id, Offset: r.next, Reason: "batch check", Err: err}
		}
		if h.NextOffset() > r.next {
			err = decodeBatch(raw, h, func(off int64, rec Record) error {
				if off >= r.next && off < end {
					r.pending = append(r.pending, Entry{Offset: off, Record: rec})
				}
				return nil
			})
			if err != nil {
				return &CorruptionError{Stream: r.p.stream, Partition: r.p.id, Offset: h.BaseOffset, Reason: "batch decode", Err: err}
			}
		}
		raw = raw[h.Length:]
	}
	return nil
}

// gapAt returns the recorded gap covering the hole [from, to), clipped to it.
func (p *Partition) gapAt(from, to int64) (Gap, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range p.gaps {
		if g.To > from && g.From < to {
			g.From = max(g.From, from)
			g.To = min(g.To, to)
			g.Records = g.To - g.From
			return g, true
		}
	}
	return Gap{}, false
}
