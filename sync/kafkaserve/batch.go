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

// batchBuilder encodes records of one partition into Kafka batches, in place at the end of the
// response's record set: the open batch's header is reserved and filled in by flush.
type batchBuilder struct {
	zstd    bool
	scratch []byte // compressed records
	start   int    // where the open batch begins in the record set
	base    int64
	last    int64
	count   int
	firstTS int64
	maxTS   int64
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

// recordSize is an upper bound of a record's encoded size including its length prefix: timestamp
// and offset deltas are taken at their widest, and each header length may be one byte longer as
// a Kafka (zig-zag) varint than as the stored uvarint.
func recordSize(rec *storage.RawRecord) int {
	return 5 + 1 + 10 + 10 + varintLen(int64(len(rec.Key))) + len(rec.Key) + varintLen(int64(len(rec.Value))) + len(rec.Value) +
		varintLen(int64(rec.HeaderCount)) + len(rec.Headers) + 2*rec.HeaderCount
}

// add appends one record to out, opening a batch when none is, re-encoding it from its stored
// form (FORMAT.md's uvarint lengths) to Kafka's (zig-zag varint lengths, deltas from the batch's
// first offset and timestamp).
func (b *batchBuilder) add(out []byte, rec *storage.RawRecord) []byte {
	ts := rec.Timestamp
	if ts == 0 {
		ts = -1 // stored 0 is "no timestamp"
	}
	if b.count == 0 {
		b.base, b.firstTS, b.maxTS = rec.Offset, ts, ts
		b.start = len(out)
		out = append(out, make([]byte, batchHeaderLen)...)
	}
	b.maxTS = max(b.maxTS, ts)
	tsDelta, offDelta := ts-b.firstTS, rec.Offset-b.base
	// The length prefix comes first but the header lengths are only known once converted: reserve
	// the prefix at the width of the record's bound, which is almost always the actual width,
	// and move the body in the rare case it is not.
	width := varintLen(int64(recordSize(rec)))
	out = append(out, make([]byte, width)...)
	body := len(out)
	out = append(out, 0)
	out = binary.AppendVarint(out, tsDelta)
	out = binary.AppendVarint(out, offDelta)
	out = binary.AppendVarint(out, int64(len(rec.Key)))
	out = append(out, rec.Key...)
	out = binary.AppendVarint(out, int64(len(rec.Value)))
	out = append(out, rec.Value...)
	out = binary.AppendVarint(out, int64(rec.HeaderCount))
	out = appendHeaders(out, rec.Headers)
	n := int64(len(out) - body)
	if w := varintLen(n); w != width {
		copy(out[body-width+w:], out[body:])
		out = out[:len(out)-width+w]
	}
	binary.PutVarint(out[body-width:], n)
	b.last = rec.Offset
	b.count++
	return out
}

// appendHeaders converts stored headers (uvarint lengths) to Kafka's (zig-zag varint lengths).
// The headers were checked when their record was decoded.
func appendHeaders(out, hs []byte) []byte {
	for len(hs) > 0 {
		for range 2 { // key, then value
			var n uint64
			if c := hs[0]; c < 0x80 {
				n, hs = uint64(c), hs[1:]
			} else {
				var k int
				n, k = binary.Uvarint(hs)
				hs = hs[k:]
			}
			if n < 64 {
				out = append(out, byte(n<<1))
			} else {
				out = binary.AppendVarint(out, int64(n))
			}
			out = append(out, hs[:n]...)
			hs = hs[n:]
		}
	}
	return out
}

// flush closes the open batch at the end of out: it fills in the header, compressing the records
// when asked and when that makes them smaller.
func (b *batchBuilder) flush(out []byte) []byte {
	if b.count == 0 {
		return out
	}
	attrs := int16(0)
	if b.zstd {
		recs := out[b.start+batchHeaderLen:]
		b.scratch = zstdEncoder().EncodeAll(recs, b.scratch[:0])
		if len(b.scratch) < len(recs) {
			attrs = codecZstd
			out = append(out[:b.start+batchHeaderLen], b.scratch...)
		}
	}
	h := out[b.start:]
	binary.BigEndian.PutUint64(h[0:], uint64(b.base))
	binary.BigEndian.PutUint32(h[8:], uint32(len(h)-12))
	binary.BigEndian.PutUint32(h[12:], leaderEpoch)
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
	return out
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
