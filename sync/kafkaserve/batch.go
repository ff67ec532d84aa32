package kafkaserve

import (
	"encoding/binary"
	"hash/crc32"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"
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
	scratch []byte // compressed records, or the headers of a record converted the slow way
	start   int    // where the open batch begins in the record set
	base    int64
	last    int64
	count   int
	firstTS int64
	maxTS   int64
	body    int // the record length size worked out for the record add appends next
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

// putVarint writes v as a Kafka (zig-zag) varint at the start of b and returns its length.
func putVarint(b []byte, v int64) int {
	if u := uint64(v<<1) ^ uint64(v>>63); u < 0x80 {
		b[0] = byte(u)
		return 1
	}
	return binary.PutVarint(b, v)
}

// storedRecord is one record in its stored form (storage/FORMAT.md, "Record"), split off a
// stored batch's records by parseStored. Its slices alias the batch.
type storedRecord struct {
	key, value  []byte
	tsDelta     int64 // from the stored batch's base timestamp
	headers     []byte
	headerCount int
	// short: every header key and value is shorter than 64 bytes, so each length is one byte
	// in both forms and Kafka's headers are the stored ones with each length byte doubled.
	short bool
}

// parseStored splits the first record off p (stored records, back to back) and checks that
// every length stays within p. It reads the stored layout itself rather than through
// storage.RawBatch.Next so that a record is walked once on its way into a Kafka batch.
func parseStored(p []byte, r *storedRecord) (rest []byte, ok bool) {
	if r.key, p, ok = splitBytes(p); !ok {
		return p, false
	}
	if r.value, p, ok = splitBytes(p); !ok {
		return p, false
	}
	var n int
	if r.tsDelta, n = binary.Varint(p); n <= 0 {
		return p, false
	}
	p = p[n:]
	count, n := binary.Uvarint(p)
	if n <= 0 || count > uint64(len(p)) {
		return p, false
	}
	p = p[n:]
	hs, short := p, true
	for range 2 * count { // each header's key, then its value
		if len(p) == 0 {
			return p, false
		}
		if c := int(p[0]); c < 64 {
			if c >= len(p) {
				return p, false
			}
			p = p[1+c:]
			continue
		}
		short = false
		l, k := binary.Uvarint(p)
		if k <= 0 || l > uint64(len(p)-k) {
			return p, false
		}
		p = p[k+int(l):]
	}
	r.headers, r.headerCount, r.short = hs[:len(hs)-len(p)], int(count), short
	return p, true
}

// splitBytes splits a uvarint length and that many bytes off p.
func splitBytes(p []byte) (v, rest []byte, ok bool) {
	if len(p) > 0 && p[0] < 0x80 {
		n := int(p[0])
		if n >= len(p) {
			return nil, p, false
		}
		return p[1 : 1+n], p[1+n:], true
	}
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)-k) {
		return nil, p, false
	}
	return p[k : k+int(n)], p[k+int(n):], true
}

// kafkaTimestamp is a stored record's timestamp as Kafka has it: stored 0 is "no timestamp", -1.
func kafkaTimestamp(base int64, r *storedRecord) int64 {
	if ts := base + r.tsDelta; ts != 0 {
		return ts
	}
	return -1
}

// size is the bytes add appends for r at offset with timestamp ts: the record with its length
// prefix, and the batch header when r opens a batch. A record whose headers are not short has
// them converted into b.scratch here, for add to copy.
func (b *batchBuilder) size(r *storedRecord, offset, ts int64) int {
	base, firstTS, open := b.base, b.firstTS, 0
	if b.count == 0 {
		base, firstTS, open = offset, ts, batchHeaderLen
	}
	h := len(r.headers)
	if !r.short {
		b.scratch = appendHeaders(b.scratch[:0], r.headers)
		h = len(b.scratch)
	}
	b.body = 1 + varintLen(ts-firstTS) + varintLen(offset-base) + varintLen(int64(len(r.key))) + len(r.key) +
		varintLen(int64(len(r.value))) + len(r.value) + varintLen(int64(r.headerCount)) + h
	return open + varintLen(int64(b.body)) + b.body
}

// add appends r, of offset and timestamp ts, to out as a Kafka record, opening a batch when none
// is; n is what size returned for it, just before. The stored form's lengths are uvarints,
// Kafka's zig-zag varints; its timestamp delta is from the stored batch's base, Kafka's from
// the Kafka batch's first record, and Kafka adds an offset delta.
func (b *batchBuilder) add(out []byte, r *storedRecord, offset, ts int64, n int) []byte {
	if b.count == 0 {
		b.base, b.firstTS, b.maxTS = offset, ts, ts
		b.start = len(out)
	}
	out = slices.Grow(out, n)
	o := out[len(out) : len(out)+n]
	i := 0
	if b.count == 0 {
		i = batchHeaderLen // filled in by flush
	}
	b.maxTS = max(b.maxTS, ts)
	i += putVarint(o[i:], int64(b.body))
	o[i] = 0 // attributes
	i++
	i += putVarint(o[i:], ts-b.firstTS)
	i += putVarint(o[i:], offset-b.base)
	i += putVarint(o[i:], int64(len(r.key)))
	i += copy(o[i:], r.key)
	i += putVarint(o[i:], int64(len(r.value)))
	i += copy(o[i:], r.value)
	i += putVarint(o[i:], int64(r.headerCount))
	if r.short {
		h := o[i:]
		copy(h, r.headers)
		for j := 0; j < len(h); j += 1 + int(h[j]>>1) {
			h[j] <<= 1
		}
	} else {
		copy(o[i:], b.scratch)
	}
	b.last = offset
	b.count++
	return out[:len(out)+n]
}

// appendHeaders converts stored headers (uvarint lengths) to Kafka's (zig-zag varint lengths).
// The headers were checked by parseStored.
func appendHeaders(out, hs []byte) []byte {
	for len(hs) > 0 {
		for range 2 { // key, then value
			n, k := binary.Uvarint(hs)
			hs = hs[k:]
			out = binary.AppendVarint(out, int64(n))
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
