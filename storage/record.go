package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Record is one event: a key (the device id), an opaque value, a timestamp and headers.
// Storage gives the bytes no meaning; devices/ owns the reading codec.
type Record struct {
	Key       []byte
	Value     []byte
	Timestamp time.Time // stored with millisecond precision
	Headers   []Header
}

// Header is one record header, such as the MQTT topic or the gateway receive time.
type Header struct {
	Key   string
	Value []byte
}

// HeaderValue returns the value of the first header named key, or nil.
func (r *Record) HeaderValue(key string) []byte {
	for _, h := range r.Headers {
		if h.Key == key {
			return h.Value
		}
	}
	return nil
}

// Batch layout constants; storage/FORMAT.md documents every byte.
const (
	batchVersion    = 1
	batchHeaderSize = 40
	// maxBatchSize bounds one batch on disk; a length above it is treated as damage, not a huge batch.
	maxBatchSize = 64 << 20
	// MaxRecordSize is the largest encoded record an append accepts.
	MaxRecordSize = 16 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendRecord encodes rec at the end of buf: varint lengths, timestamp delta from base, headers.
func appendRecord(buf []byte, rec *Record, baseMillis int64) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(rec.Key)))
	buf = append(buf, rec.Key...)
	buf = binary.AppendUvarint(buf, uint64(len(rec.Value)))
	buf = append(buf, rec.Value...)
	buf = binary.AppendVarint(buf, millis(rec.Timestamp)-baseMillis)
	buf = binary.AppendUvarint(buf, uint64(len(rec.Headers)))
	for _, h := range rec.Headers {
		buf = binary.AppendUvarint(buf, uint64(len(h.Key)))
		buf = append(buf, h.Key...)
		buf = binary.AppendUvarint(buf, uint64(len(h.Value)))
		buf = append(buf, h.Value...)
	}
	return buf
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func encodedRecordSize(rec *Record) int {
	n := 2*binary.MaxVarintLen64 + len(rec.Key) + len(rec.Value) + 2*binary.MaxVarintLen64
	for _, h := range rec.Headers {
		n += 2*binary.MaxVarintLen64 + len(h.Key) + len(h.Value)
	}
	return n
}

// batchHeader is the fixed part in front of every batch.
type batchHeader struct {
	Length        uint32 // whole batch including this header
	CRC           uint32 // CRC32-C of bytes [8, Length)
	BaseOffset    int64
	Count         uint32
	BaseTimestamp int64 // unix milliseconds
	MaxTimestamp  int64
}

// NextOffset is the offset after the last record of the batch.
func (h batchHeader) NextOffset() int64 { return h.BaseOffset + int64(h.Count) }

// putBatchHeader writes the header into b[:batchHeaderSize] and computes the CRC over b[8:].
// b must hold the whole batch: header space followed by the encoded records.
func putBatchHeader(b []byte, baseOffset int64, count int, baseTS, maxTS int64) {
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)))
	b[8] = batchVersion
	b[9] = 0 // flags, reserved
	b[10], b[11] = 0, 0
	binary.LittleEndian.PutUint64(b[12:], uint64(baseOffset))
	binary.LittleEndian.PutUint32(b[20:], uint32(count))
	binary.LittleEndian.PutUint64(b[24:], uint64(baseTS))
	binary.LittleEndian.PutUint64(b[32:], uint64(maxTS))
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:], castagnoli))
}

var (
	errShortBatch   = errors.New("batch shorter than its header")
	errBatchLength  = errors.New("batch length out of range")
	errBatchCRC     = errors.New("batch checksum mismatch")
	errBatchVersion = errors.New("unknown batch version")
	errTruncated    = errors.New("batch extends past the end of data")
)

// parseBatchHeader reads and checks the fixed header at the start of b. It does not check the CRC.
func parseBatchHeader(b []byte) (batchHeader, error) {
	if len(b) < batchHeaderSize {
		return batchHeader{}, errShortBatch
	}
	h := batchHeader{
		Length:        binary.LittleEndian.Uint32(b[0:]),
		CRC:           binary.LittleEndian.Uint32(b[4:]),
		BaseOffset:    int64(binary.LittleEndian.Uint64(b[12:])),
		Count:         binary.LittleEndian.Uint32(b[20:]),
		BaseTimestamp: int64(binary.LittleEndian.Uint64(b[24:])),
		MaxTimestamp:  int64(binary.LittleEndian.Uint64(b[32:])),
	}
	if h.Length < batchHeaderSize || h.Length > maxBatchSize {
		return h, errBatchLength
	}
	if b[8] != batchVersion {
		return h, fmt.Errorf("%w %d", errBatchVersion, b[8])
	}
	if h.Count == 0 || h.BaseOffset < 0 {
		return h, errBatchLength
	}
	return h, nil
}

// checkBatch parses the header of the batch at the start of b and verifies its checksum.
func checkBatch(b []byte) (batchHeader, error) {
	h, err := parseBatchHeader(b)
	if err != nil {
		return h, err
	}
	if int(h.Length) > len(b) {
		return h, errTruncated
	}
	if crc32.Checksum(b[8:h.Length], castagnoli) != h.CRC {
		return h, errBatchCRC
	}
	return h, nil
}

// decodeBatch calls fn for every record of a checked batch. Keys, values and header values alias b.
func decodeBatch(b []byte, h batchHeader, fn func(offset int64, rec Record) error) error {
	p := b[batchHeaderSize:h.Length]
	// The records of a batch share one header array, carved per record: one allocation per
	// batch rather than one per record.
	var shared []Header
	for i := int64(0); i < int64(h.Count); i++ {
		var rec Record
		var ok bool
		if rec.Key, p, ok = readBytes(p); !ok {
			return fmt.Errorf("record %d: bad key", i)
		}
		if rec.Value, p, ok = readBytes(p); !ok {
			return fmt.Errorf("record %d: bad value", i)
		}
		delta, n := binary.Varint(p)
		if n <= 0 {
			return fmt.Errorf("record %d: bad timestamp", i)
		}
		p = p[n:]
		if ts := h.BaseTimestamp + delta; ts != 0 {
			rec.Timestamp = time.UnixMilli(ts)
		}
		nh, n := binary.Uvarint(p)
		if n <= 0 || nh > uint64(len(p)) {
			return fmt.Errorf("record %d: bad header count", i)
		}
		p = p[n:]
		if nh > 0 {
			if uint64(len(shared)) < nh {
				// Enough for the rest of the batch at this record's count, within bounds.
				n := nh * uint64(int64(h.Count)-i)
				if n > 1024 {
					n = max(nh, 1024)
				}
				shared = make([]Header, n)
			}
			rec.Headers = shared[:nh:nh]
			shared = shared[nh:]
			for j := range rec.Headers {
				var k []byte
				if k, p, ok = readBytes(p); !ok {
					return fmt.Errorf("record %d: bad header key", i)
				}
				rec.Headers[j].Key = internKey(k)
				if rec.Headers[j].Value, p, ok = readBytes(p); !ok {
					return fmt.Errorf("record %d: bad header value", i)
				}
			}
		}
		if err := fn(h.BaseOffset+i, rec); err != nil {
			return err
		}
	}
	if len(p) != 0 {
		return fmt.Errorf("%d bytes after the last record", len(p))
	}
	return nil
}

func readBytes(p []byte) (v, rest []byte, ok bool) {
	if len(p) > 0 && p[0] < 0x80 { // a length below 128, the common case, in one byte
		n := int(p[0])
		if n > len(p)-1 {
			return nil, p, false
		}
		return p[1 : 1+n : 1+n], p[1+n:], true
	}
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)-k) {
		return nil, p, false
	}
	p = p[k:]
	return p[:n:n], p[n:], true
}

// internKey avoids one string allocation per header for the names every reading carries; a
// switch on constants costs less than a map lookup, which hashes the key.
func internKey(b []byte) string {
	switch string(b) {
	case "topic":
		return "topic"
	case "content-type":
		return "content-type"
	case "device-time":
		return "device-time"
	case "receive-time":
		return "receive-time"
	case "client-id":
		return "client-id"
	case "packet-id":
		return "packet-id"
	case "payload-hash":
		return "payload-hash"
	case "edge":
		return "edge"
	case "edge-partition":
		return "edge-partition"
	case "edge-offset":
		return "edge-offset"
	case "central-receive-time":
		return "central-receive-time"
	case "reason":
		return "reason"
	case "qos":
		return "qos"
	}
	return string(b)
}
