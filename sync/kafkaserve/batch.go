package kafkaserve

import (
	"encoding/binary"
	"hash/crc32"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/tributary-iot/tributary/storage"
)

// Kafka record batch v2 ("magic 2"), the only format Fetch v4+ clients must read. Layout, all
// integers big-endian, varints zig-zag:
//
//	0  int64  base offset          31 int64 max timestamp
//	8  int32  batch length (after) 43 int64 producer id (-1)
//	12 int32  partition leader ep. 51 int16 producer epoch (-1)
//	16 int8   magic = 2            53 int32 base sequence (-1)
//	17 uint32 CRC-32C of [21, end) 57 int32 record count
//	21 int16  attributes           61 records (zstd-compressed when attributes&7 == 4)
//	23 int32  last offset delta
//	27 int64  first timestamp
//
// A record is: varint length, int8 attributes, varint timestamp delta, varint offset delta,
// varint key length + key, varint value length + value, varint header count, and per header
// varint key length + key, varint value length + value.
const (
	batchHeaderLen = 61
	codecZstd      = 4
	// batchTarget is where a batch is cut: big enough that per-batch costs vanish, small enough
	// that a client's per-partition byte limit is met closely.
	batchTarget = 128 << 10
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// batchBuilder appends records of one partition into Kafka batches.
type batchBuilder struct {
	zstd    bool
	recs    []byte // records of the open batch, uncompressed
	scratch []byte // compressed records
	base    int64
	last    int64
	count   int
	firstTS int64
	maxTS   int64
}

func (b *batchBuilder) empty() bool { return b.count == 0 }

// size is the open batch's uncompressed size so far.
func (b *batchBuilder) size() int {
	if b.count == 0 {
		return 0
	}
	return batchHeaderLen + len(b.recs)
}

func varintLen(v int64) int {
	u := uint64(v<<1) ^ uint64(v>>63)
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}

// recordSize is a record's encoded size including its length prefix, an upper bound on what add
// appends (timestamp and offset deltas are taken at their widest).
func recordSize(rec *storage.Record) int {
	n := 1 + 10 + 10 + varintLen(int64(len(rec.Key))) + len(rec.Key) + varintLen(int64(len(rec.Value))) + len(rec.Value) + varintLen(int64(len(rec.Headers)))
	for _, h := range rec.Headers {
		n += varintLen(int64(len(h.Key))) + len(h.Key) + varintLen(int64(len(h.Value))) + len(h.Value)
	}
	return n + 5
}

// add appends one record at offset off.
func (b *batchBuilder) add(off int64, rec *storage.Record) {
	ts := int64(-1)
	if !rec.Timestamp.IsZero() {
		ts = rec.Timestamp.UnixMilli()
	}
	if b.count == 0 {
		b.base, b.firstTS, b.maxTS = off, ts, ts
		b.recs = b.recs[:0]
	}
	b.maxTS = max(b.maxTS, ts)
	tsDelta, offDelta := ts-b.firstTS, off-b.base
	body := 1 + varintLen(tsDelta) + varintLen(offDelta) + varintLen(int64(len(rec.Value))) + len(rec.Value) + varintLen(int64(len(rec.Headers)))
	if rec.Key == nil {
		body += varintLen(-1)
	} else {
		body += varintLen(int64(len(rec.Key))) + len(rec.Key)
	}
	for _, h := range rec.Headers {
		body += varintLen(int64(len(h.Key))) + len(h.Key) + varintLen(int64(len(h.Value))) + len(h.Value)
	}
	p := binary.AppendVarint(b.recs, int64(body))
	p = append(p, 0)
	p = binary.AppendVarint(p, tsDelta)
	p = binary.AppendVarint(p, offDelta)
	if rec.Key == nil {
		p = binary.AppendVarint(p, -1)
	} else {
		p = binary.AppendVarint(p, int64(len(rec.Key)))
		p = append(p, rec.Key...)
	}
	p = binary.AppendVarint(p, int64(len(rec.Value)))
	p = append(p, rec.Value...)
	p = binary.AppendVarint(p, int64(len(rec.Headers)))
	for _, h := range rec.Headers {
		p = binary.AppendVarint(p, int64(len(h.Key)))
		p = append(p, h.Key...)
		p = binary.AppendVarint(p, int64(len(h.Value)))
		p = append(p, h.Value...)
	}
	b.recs = p
	b.last = off
	b.count++
}

// flush closes the open batch and appends it to dst.
func (b *batchBuilder) flush(dst []byte) []byte {
	if b.count == 0 {
		return dst
	}
	start := len(dst)
	dst = append(dst, make([]byte, batchHeaderLen)...)
	attrs := int16(0)
	if b.zstd {
		b.scratch = zstdEncoder().EncodeAll(b.recs, b.scratch[:0])
		if len(b.scratch) < len(b.recs) {
			attrs = codecZstd
			dst = append(dst, b.scratch...)
		} else {
			dst = append(dst, b.recs...)
		}
	} else {
		dst = append(dst, b.recs...)
	}
	h := dst[start:]
	binary.BigEndian.PutUint64(h[0:], uint64(b.base))
	binary.BigEndian.PutUint32(h[8:], uint32(len(h)-12))
	binary.BigEndian.PutUint32(h[12:], 0) // partition leader epoch
	h[16] = 2
	binary.BigEndian.PutUint16(h[21:], uint16(attrs))
	binary.BigEndian.PutUint32(h[23:], uint32(b.last-b.base))
	binary.BigEndian.PutUint64(h[27:], uint64(b.firstTS))
	binary.BigEndian.PutUint64(h[35:], uint64(b.maxTS))
	binary.BigEndian.PutUint64(h[43:], ^uint64(0)) // producer id -1: not idempotent
	binary.BigEndian.PutUint16(h[51:], ^uint16(0))
	binary.BigEndian.PutUint32(h[53:], ^uint32(0))
	binary.BigEndian.PutUint32(h[57:], uint32(b.count))
	binary.BigEndian.PutUint32(h[17:], crc32.Checksum(h[21:], crc32c))
	b.count = 0
	b.recs = b.recs[:0]
	return dst
}

var (
	encOnce sync.Once
	encoder *zstd.Encoder
)

// zstdEncoder is shared: EncodeAll is safe for concurrent use.
func zstdEncoder() *zstd.Encoder {
	encOnce.Do(func() {
		encoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
			zstd.WithZeroFrames(true))
	})
	return encoder
}
