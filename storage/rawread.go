package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// RawReader reads a partition's batches as they are stored (FORMAT.md, "Batch"): for readers
// that re-encode records into another format, such as central's Kafka listener, without building
// a Record per record. It keeps its buffers between reads, so a reader going through a partition
// in order allocates nothing once they have grown. A RawReader is not safe for concurrent use.
type RawReader struct {
	p    *Partition
	comp []byte // a sealed frame as read from disk
	raw  []byte // the batches handed out by the last Read
}

// NewRawReader returns a RawReader of p.
func (p *Partition) NewRawReader() *RawReader { return &RawReader{p: p} }

// RawBatches is what RawReader.Read returns: whole stored batches, or a gap.
type RawBatches struct {
	// Data holds whole batches back to back in offset order, each in the stored form of
	// FORMAT.md's "Batch" section and checked against its CRC. The first batch holds the offset
	// asked for but may start below it. Data is only valid until the next Read.
	Data []byte
	// Next is the offset after the last record in Data, or after the gap.
	Next int64
	// Gap, when set, reports [Gap.From, Gap.To) as lost (dropped or quarantined); Data is empty.
	Gap *Gap
}

// Read returns the batches from offset from on: a sealed segment's frame holding from (about
// 256 KiB of batches, decompressed), or about maxBytes of batches of a plain segment (at least one
// batch). Only readable records are returned. An offset below the partition's start reads from
// its first record, after any recorded gap in between. It returns io.EOF when from is at the end,
// and ErrClosed once the log closes. A sealed segment found damaged is salvaged or quarantined as
// for Reader, and the read moves on to what replaced it.
func (r *RawReader) Read(from int64, maxBytes int) (RawBatches, error) {
	p := r.p
	from = max(from, 0)
	for {
		end := p.end.Load()
		if from >= end {
			return RawBatches{}, io.EOF
		}
		seg := p.segmentFor(from)
		if seg == nil {
			return RawBatches{}, ErrClosed
		}
		if b := seg.baseOffset(); b > from {
			seg.release()
			if g, ok := p.gapAt(from, b); ok {
				return RawBatches{Next: g.To, Gap: &g}, nil
			}
			from = b // removed by retention: nothing was lost, it was consumed
			continue
		}
		var err error
		switch s := seg.(type) {
		case *sealedSegment:
			err = r.readSealed(s, from)
		case *plainSegment:
			r.raw, err = s.readBatchesInto(from, maxBytes, r.raw)
		default:
			err = fmt.Errorf("raw read: segment type %T", seg)
		}
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
			return RawBatches{}, err
		}
		data, next, err := checkedPrefix(r.raw, from, end)
		if err != nil {
			ce := &CorruptionError{Stream: p.stream, Partition: p.id, Segment: seg.baseOffset(), Offset: from, Reason: "batch check", Err: err}
			if seg.sealed() {
				// A frame that passed its CRC but holds a bad batch was damaged before it was
				// compressed: the segment is no better than one with a bad frame.
				p.quarantineSegment(seg, ce)
				continue
			}
			return RawBatches{}, ce
		}
		if len(data) == 0 {
			continue
		}
		return RawBatches{Data: data, Next: next}, nil
	}
}

// readSealed decompresses the frame of s holding from into r.raw.
func (r *RawReader) readSealed(s *sealedSegment, from int64) error {
	i := s.frameFor(from)
	if i >= len(s.frames) {
		return io.EOF
	}
	fi := s.frames[i]
	var err error
	if r.comp, err = s.readFrameInto(i, r.comp); err != nil {
		return err
	}
	if cap(r.raw) < int(fi.rawLen) {
		r.raw = make([]byte, 0, fi.rawLen)
	}
	raw, err := decompressInto(r.comp, r.raw[:0:fi.rawLen])
	if err != nil || len(raw) != int(fi.rawLen) {
		return &CorruptionError{Segment: s.base, Offset: fi.base, Reason: "frame does not decompress", Err: err}
	}
	r.raw = raw
	return nil
}

// checkedPrefix checks the batches of raw and returns those that end at or below end, dropping
// leading batches that end at or below from, with the offset after the last one kept.
func checkedPrefix(raw []byte, from, end int64) ([]byte, int64, error) {
	start, n := 0, 0
	var next int64
	for n < len(raw) {
		h, err := checkBatch(raw[n:])
		if err != nil {
			return nil, 0, err
		}
		if h.NextOffset() > end {
			break
		}
		if h.NextOffset() <= from {
			start = n + int(h.Length)
		}
		next = h.NextOffset()
		n += int(h.Length)
	}
	return raw[start:n], next, nil
}

// readFrameInto reads the compressed bytes of frame i into buf (grown when too small) and
// checks their CRC.
func (s *sealedSegment) readFrameInto(i int, buf []byte) ([]byte, error) {
	fi := s.frames[i]
	if cap(buf) < int(fi.compLen) {
		buf = make([]byte, fi.compLen)
	}
	comp := buf[:fi.compLen]
	if _, err := s.f.ReadAt(comp, fi.pos); err != nil {
		return buf, fmt.Errorf("read frame %d: %w", i, err)
	}
	if crc32.Checksum(comp, castagnoli) != fi.crc {
		return buf, &CorruptionError{Segment: s.base, Offset: fi.base, Reason: "frame checksum mismatch"}
	}
	return comp, nil
}

// readBatchesInto is readBatches reading into buf, grown when too small.
func (s *plainSegment) readBatchesInto(offset int64, maxBytes int, buf []byte) ([]byte, error) {
	// next before size: publish stores size first, so the size read here covers every offset
	// below the next read here.
	next := s.next.Load()
	size := s.size.Load()
	if offset >= next {
		return buf, io.EOF
	}
	pos := s.seek(offset)
	// Walk batch headers from the index entry to the batch that holds offset.
	var hdr [batchHeaderSize]byte
	for {
		if pos >= size {
			return buf, io.EOF
		}
		if _, err := s.f.ReadAt(hdr[:], pos); err != nil {
			return buf, fmt.Errorf("read batch header at %d: %w", pos, err)
		}
		h, err := parseBatchHeader(hdr[:])
		if err != nil {
			return buf, fmt.Errorf("read batch header at %d: %w", pos, err)
		}
		if h.NextOffset() > offset {
			if maxBytes > 0 {
				maxBytes = max(maxBytes, int(h.Length)) // the first batch whole, whatever its size
			}
			break
		}
		pos += int64(h.Length)
	}
	end := size
	if maxBytes > 0 && end-pos > int64(maxBytes) {
		end = pos + int64(maxBytes)
	}
	if int64(cap(buf)) < end-pos {
		buf = make([]byte, end-pos)
	}
	buf = buf[:end-pos]
	if _, err := s.f.ReadAt(buf, pos); err != nil && err != io.EOF {
		return buf, fmt.Errorf("read batches at %d: %w", pos, err)
	}
	// Keep whole batches only.
	n := 0
	for n < len(buf) {
		h, err := parseBatchHeader(buf[n:])
		if err != nil || n+int(h.Length) > len(buf) {
			break
		}
		n += int(h.Length)
	}
	if n == 0 {
		return buf, fmt.Errorf("read batches at %d: no whole batch", pos)
	}
	return buf[:n], nil
}

// RawBatch is one stored batch (FORMAT.md, "Batch"), split off by NextBatch. Its records are
// walked with Next.
type RawBatch struct {
	BaseOffset    int64
	Count         int
	BaseTimestamp int64 // unix milliseconds
	MaxTimestamp  int64 // unix milliseconds
	recs          []byte
	i             int
}

// NextBatch checks the batch at the start of data (header and CRC) and returns it with the bytes
// after it.
func NextBatch(data []byte) (RawBatch, []byte, error) {
	h, err := checkBatch(data)
	if err != nil {
		return RawBatch{}, data, err
	}
	return rawBatch(data, h), data[h.Length:], nil
}

// SplitBatch is NextBatch for the Data of a RawReader.Read, whose batches passed their CRC in
// Read: it checks the header and that the batch is whole, not the CRC again. Records are still
// checked as they are walked, so damage past the CRC cannot make a reader go out of bounds.
func SplitBatch(data []byte) (RawBatch, []byte, error) {
	h, err := parseBatchHeader(data)
	if err != nil {
		return RawBatch{}, data, err
	}
	if int(h.Length) > len(data) {
		return RawBatch{}, data, errTruncated
	}
	return rawBatch(data, h), data[h.Length:], nil
}

func rawBatch(data []byte, h batchHeader) RawBatch {
	return RawBatch{BaseOffset: h.BaseOffset, Count: int(h.Count), BaseTimestamp: h.BaseTimestamp,
		MaxTimestamp: h.MaxTimestamp, recs: data[batchHeaderSize:h.Length:h.Length]}
}

// Records returns the batch's records in their stored form (FORMAT.md, "Record"), all Count of
// them back to back, whatever Next has walked: for a reader that converts them in one pass of
// its own rather than through RawRecord. Such a reader must check every length against the
// bytes it has, as Next does.
func (b *RawBatch) Records() []byte { return b.recs }

// RawRecord is one record of a RawBatch in its stored form. Its slices alias the batch's bytes.
type RawRecord struct {
	Offset    int64
	Key       []byte
	Value     []byte
	Timestamp int64 // unix milliseconds; 0 means none
	// Headers are the record's headers as stored: per header a uvarint key length, the key, a
	// uvarint value length and the value. NextHeader walks them.
	Headers     []byte
	HeaderCount int
}

// Next decodes the batch's next record into rec, returning false after the last one. The record's
// structure is checked, so NextHeader cannot fail on its headers.
func (b *RawBatch) Next(rec *RawRecord) (bool, error) {
	p := b.recs
	if b.i >= b.Count {
		if len(p) != 0 {
			return false, fmt.Errorf("batch at offset %d: %d bytes after the last record", b.BaseOffset, len(p))
		}
		return false, nil
	}
	bad := func(what string) (bool, error) {
		return false, fmt.Errorf("batch at offset %d, record %d: bad %s", b.BaseOffset, b.i, what)
	}
	var ok bool
	if rec.Key, p, ok = readBytes(p); !ok {
		return bad("key")
	}
	if rec.Value, p, ok = readBytes(p); !ok {
		return bad("value")
	}
	delta, n := binary.Varint(p)
	if n <= 0 {
		return bad("timestamp")
	}
	p = p[n:]
	rec.Timestamp = b.BaseTimestamp + delta
	nh, n := binary.Uvarint(p)
	if n <= 0 || nh > uint64(len(p)) {
		return bad("header count")
	}
	p = p[n:]
	hs := p
	for j := uint64(0); j < nh; j++ {
		if _, p, ok = readBytes(p); !ok {
			return bad("header key")
		}
		if _, p, ok = readBytes(p); !ok {
			return bad("header value")
		}
	}
	rec.Headers, rec.HeaderCount = hs[:len(hs)-len(p)], int(nh)
	rec.Offset = b.BaseOffset + int64(b.i)
	b.recs = p
	b.i++
	return true, nil
}

// NextHeader splits the first header off hs (a RawRecord's Headers, or what an earlier call
// returned as rest). ok is false when hs is empty or malformed.
func NextHeader(hs []byte) (key, value, rest []byte, ok bool) {
	if key, hs, ok = readBytes(hs); !ok {
		return nil, nil, hs, false
	}
	if value, hs, ok = readBytes(hs); !ok {
		return nil, nil, hs, false
	}
	return key, value, hs, true
}
