package storage

import (
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// Chunk is a run of records in transfer form, for forwarding a partition to another node: one zstd
// frame of whole raw batches (the same bytes as a plain segment, FORMAT.md). From a sealed segment
// it is the stored frame itself, sent without recompression; from the active segment the batches
// are compressed on the fly. The receiver checks every batch's CRC as it decodes.
type Chunk struct {
	Base     int64  // offset of the first record in Data; may be below the offset asked for
	Next     int64  // offset after the last record in Data
	Records  int    // Next - Base
	RawBytes int    // bytes of raw batches inside Data
	Data     []byte // one zstd frame
	Sealed   bool   // Data came from a sealed segment as stored
	// Gap, when set, reports [Gap.From, Gap.To) as lost; Data is empty.
	Gap *Gap
}

// ReadChunk returns records from offset from on, about maxRawBytes of raw batches (at least one
// batch; a sealed frame is returned whole). It returns io.EOF when from is at the end.
func (p *Partition) ReadChunk(from int64, maxRawBytes int) (Chunk, error) {
	for {
		end := p.end.Load()
		if from >= end {
			return Chunk{}, io.EOF
		}
		seg := p.segmentFor(from)
		if seg == nil {
			return Chunk{}, ErrClosed
		}
		if b := seg.baseOffset(); b > from {
			seg.release()
			if g, ok := p.gapAt(from, b); ok {
				return Chunk{Base: g.From, Next: g.To, Gap: &g}, nil
			}
			from = b
			continue
		}
		if ss, ok := seg.(*sealedSegment); ok {
			i := ss.frameFor(from)
			if i >= len(ss.frames) {
				seg.release()
				continue
			}
			comp, err := ss.readFrame(i)
			seg.release()
			if err != nil {
				var ce *CorruptionError
				if errors.As(err, &ce) {
					p.quarantineSegment(seg, err)
					continue
				}
				return Chunk{}, err
			}
			fi := ss.frames[i]
			return Chunk{Base: fi.base, Next: fi.next(), Records: int(fi.count), RawBytes: int(fi.rawLen), Data: comp, Sealed: true}, nil
		}
		raw, err := seg.readBatches(from, maxRawBytes)
		seg.release()
		if err == io.EOF {
			continue
		}
		if err != nil {
			return Chunk{}, err
		}
		// Trim batches past the readable end, which cannot happen for plain segments today but
		// keeps the rule local: never ship what a reader could not see.
		var first, next int64 = -1, 0
		n := 0
		for n < len(raw) {
			h, err := checkBatch(raw[n:])
			if err != nil {
				return Chunk{}, &CorruptionError{Stream: p.stream, Partition: p.id, Segment: seg.baseOffset(), Offset: from, Reason: "batch check", Err: err}
			}
			if h.NextOffset() > end {
				break
			}
			if first < 0 {
				first = h.BaseOffset
			}
			next = h.NextOffset()
			n += int(h.Length)
		}
		if n == 0 {
			continue
		}
		return Chunk{Base: first, Next: next, Records: int(next - first), RawBytes: n, Data: compressFrame(raw[:n])}, nil
	}
}

// DecodeChunk decompresses a chunk's data, checks every batch and calls fn for each record in
// offset order. It refuses more than maxRawBytes of output (0 means 64 MiB), so a hostile chunk
// cannot exhaust memory. Keys and values alias a buffer owned by the caller after return.
func DecodeChunk(data []byte, maxRawBytes int, fn func(offset int64, rec Record) error) error {
	if maxRawBytes <= 0 {
		maxRawBytes = maxBatchSize
	}
	// The frame header declares the raw size; refuse before allocating anything larger, and let
	// the decoder stop at that size whatever the frame claims inside.
	var zh zstd.Header
	if err := zh.Decode(data); err != nil {
		return fmt.Errorf("decode chunk: %w", err)
	}
	if zh.Skippable || !zh.HasFCS {
		return errors.New("decode chunk: not a zstd frame with a content size (chunks come from ReadChunk)")
	}
	if zh.FrameContentSize > uint64(maxRawBytes) {
		return fmt.Errorf("decode chunk: %d raw bytes exceeds the limit of %d", zh.FrameContentSize, maxRawBytes)
	}
	if zh.FrameContentSize == 0 {
		return errors.New("decode chunk: empty")
	}
	raw, err := decompressInto(data, make([]byte, 0, zh.FrameContentSize))
	if err != nil {
		return fmt.Errorf("decompress chunk: %w", err)
	}
	expect := int64(-1)
	for len(raw) > 0 {
		h, err := checkBatch(raw)
		if err != nil {
			return fmt.Errorf("decode chunk: %w", err)
		}
		if expect >= 0 && h.BaseOffset != expect {
			return fmt.Errorf("decode chunk: batch starts at offset %d, want %d", h.BaseOffset, expect)
		}
		if err := decodeBatch(raw, h, fn); err != nil {
			return fmt.Errorf("decode chunk: %w", err)
		}
		expect = h.NextOffset()
		raw = raw[h.Length:]
	}
	return nil
}
