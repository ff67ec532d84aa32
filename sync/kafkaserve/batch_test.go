package kafkaserve

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tributary-iot/tributary/storage"
)

var zstdDecoder, _ = zstd.NewReader(nil)

// kafkaRecord is a record as a Kafka client reads it from a batch.
type kafkaRecord struct {
	offset, timestamp int64
	key, value        []byte
	headers           []kmsg.Header
}

// decodeBatches reads Kafka record batches as a client does: CRC, then the (decompressed)
// records, with the offset and timestamp deltas applied.
func decodeBatches(t testing.TB, raw []byte) []kafkaRecord {
	t.Helper()
	var out []kafkaRecord
	for len(raw) > 0 {
		var b kmsg.RecordBatch
		if err := b.ReadFrom(raw); err != nil {
			t.Fatalf("batch: %v", err)
		}
		l := 12 + int(b.Length)
		if crc := int32(crc32.Checksum(raw[21:l], crc32c)); crc != b.CRC {
			t.Fatalf("batch at %d: CRC %x, want %x", b.FirstOffset, b.CRC, crc)
		}
		raw = raw[l:]
		recs := b.Records
		if b.Attributes&7 == codecZstd {
			var err error
			if recs, err = zstdDecoder.DecodeAll(recs, nil); err != nil {
				t.Fatal(err)
			}
		}
		for i := int32(0); i < b.NumRecords; i++ {
			var r kmsg.Record
			if err := r.ReadFrom(recs); err != nil {
				t.Fatalf("batch at %d, record %d: %v", b.FirstOffset, i, err)
			}
			n, k := binary.Varint(recs)
			if int(n) != int(r.Length) || k <= 0 {
				t.Fatalf("record length %d", n)
			}
			recs = recs[k+int(n):]
			if i == b.NumRecords-1 && r.OffsetDelta != b.LastOffsetDelta {
				t.Fatalf("batch at %d: last offset delta %d, the last record's %d", b.FirstOffset, b.LastOffsetDelta, r.OffsetDelta)
			}
			out = append(out, kafkaRecord{offset: b.FirstOffset + int64(r.OffsetDelta), timestamp: b.FirstTimestamp + r.TimestampDelta64,
				key: r.Key, value: r.Value, headers: r.Headers})
		}
		if len(recs) != 0 {
			t.Fatalf("batch at %d: %d bytes after its records", b.FirstOffset, len(recs))
		}
	}
	return out
}

func sameRecord(t testing.TB, got kafkaRecord, want storage.Entry) {
	t.Helper()
	ts := int64(-1)
	if !want.Timestamp.IsZero() {
		ts = want.Timestamp.UnixMilli()
	}
	if got.offset != want.Offset || got.timestamp != ts || !bytes.Equal(got.key, want.Key) || !bytes.Equal(got.value, want.Value) ||
		len(got.headers) != len(want.Headers) {
		t.Fatalf("record %d: got offset %d, timestamp %d, key %d bytes, value %d bytes, %d headers; want timestamp %d, key %d bytes, value %d bytes, %d headers",
			want.Offset, got.offset, got.timestamp, len(got.key), len(got.value), len(got.headers), ts, len(want.Key), len(want.Value), len(want.Headers))
	}
	for i, h := range want.Headers {
		if got.headers[i].Key != h.Key || !bytes.Equal(got.headers[i].Value, h.Value) {
			t.Fatalf("record %d, header %d: got %d+%d bytes, want %d+%d", want.Offset, i, len(got.headers[i].Key), len(got.headers[i].Value), len(h.Key), len(h.Value))
		}
	}
}

// TestEncodeRecordShapes converts records whose keys, values and header lengths sit at the
// boundaries where a uvarint and a zig-zag varint change width (64, 128, 8192 bytes), with and
// without timestamps, and checks every record a client decodes against storage's own reader:
// from several starting offsets, with byte limits that cut batches anywhere, with and without
// compression.
func TestEncodeRecordShapes(t *testing.T) {
	log, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	st, err := log.CreateStream("readings", storage.StreamConfig{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	lengths := []int{0, 1, 63, 64, 65, 127, 128, 8191, 8192, 70000}
	start := time.UnixMilli(1_700_000_000_000)
	var n int
	for i, kl := range lengths {
		for j, vl := range lengths {
			hl := lengths[(i+j)%len(lengths)]
			rec := storage.Record{Key: bytes.Repeat([]byte{'k'}, kl), Value: bytes.Repeat([]byte{byte('a' + j)}, vl),
				Headers: []storage.Header{{Key: strings.Repeat("h", hl%300), Value: bytes.Repeat([]byte{'v'}, hl)}, {Key: "topic", Value: []byte("t")}}}
			if (i+j)%3 != 0 {
				rec.Timestamp = start.Add(time.Duration(i*len(lengths)+j) * time.Millisecond)
			}
			if j%4 == 0 {
				rec.Headers = nil
			}
			if _, _, err := st.Append(context.Background(), rec); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	p := st.Partition(0)
	var want []storage.Entry
	r := p.NewReader(0, nil)
	for {
		e, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, e)
	}
	if len(want) != n {
		t.Fatalf("storage read %d records, want %d", len(want), n)
	}
	for _, zstd := range []bool{false, true} {
		for _, room := range []int{1, 100, 300, 9000, 1 << 20} {
			for _, from := range []int64{0, 1, 37, int64(n - 1)} {
				t.Run(fmt.Sprintf("zstd=%v/room=%d/from=%d", zstd, room, from), func(t *testing.T) {
					pr := newPartReader(p, from, nil)
					var got []kafkaRecord
					for {
						out, full, err := encode(pr, &batchBuilder{zstd: zstd}, nil, room, true)
						if err != nil {
							t.Fatal(err)
						}
						if len(out) > room && len(decodeBatches(t, out)) > 1 {
							t.Fatalf("%d bytes for a limit of %d, more than one record", len(out), room)
						}
						got = append(got, decodeBatches(t, out)...)
						if !full {
							break
						}
					}
					if len(got) != n-int(from) {
						t.Fatalf("got %d records from %d, want %d", len(got), from, n-int(from))
					}
					for i, g := range got {
						sameRecord(t, g, want[int(from)+i])
					}
				})
			}
		}
	}
}

// FuzzParseStored checks the listener's one-pass reading of stored records against storage's
// RawBatch.Next on any bytes: both refuse the same records, agree on the ones they accept, and
// the Kafka record made of one decodes to the same key, value, timestamp and headers.
func FuzzParseStored(f *testing.F) {
	var seed []byte
	for i := range 3 {
		rec := storage.Record{Key: []byte("sensor-1"), Value: bytes.Repeat([]byte{'x'}, 60+i*40),
			Headers: []storage.Header{{Key: "topic", Value: bytes.Repeat([]byte{'t'}, 62+i)}}}
		seed = binary.AppendUvarint(seed, uint64(len(rec.Key)))
		seed = append(seed, rec.Key...)
		seed = binary.AppendUvarint(seed, uint64(len(rec.Value)))
		seed = append(seed, rec.Value...)
		seed = binary.AppendVarint(seed, int64(i*5-3))
		seed = binary.AppendUvarint(seed, 1)
		for _, b := range [][]byte{[]byte(rec.Headers[0].Key), rec.Headers[0].Value} {
			seed = binary.AppendUvarint(seed, uint64(len(b)))
			seed = append(seed, b...)
		}
	}
	f.Add(seed, uint8(3))
	f.Add([]byte{1, 'k', 0, 0, 2, 0x80, 0x01}, uint8(1))
	f.Fuzz(func(t *testing.T, recs []byte, count uint8) {
		if count == 0 {
			return
		}
		// A stored batch header (storage/FORMAT.md, "Batch") around recs.
		h := make([]byte, 40, 40+len(recs))
		binary.LittleEndian.PutUint32(h[0:], uint32(40+len(recs)))
		h[8] = 1
		binary.LittleEndian.PutUint64(h[12:], 100)
		binary.LittleEndian.PutUint32(h[20:], uint32(count))
		binary.LittleEndian.PutUint64(h[24:], 1_700_000_000_000)
		batch, _, err := storage.SplitBatch(append(h, recs...))
		if err != nil {
			t.Fatal(err)
		}
		p := batch.Records()
		for i := 0; i < int(count); i++ {
			var want storage.RawRecord
			ok, nextErr := batch.Next(&want)
			var r storedRecord
			rest, parsed := parseStored(p, &r)
			if !ok || nextErr != nil {
				if parsed && nextErr != nil {
					t.Fatalf("record %d: parseStored accepts what Next refuses: %v", i, nextErr)
				}
				return
			}
			if !parsed {
				t.Fatalf("record %d: parseStored refuses what Next accepts", i)
			}
			p = rest
			ts := kafkaTimestamp(batch.BaseTimestamp, &r)
			if !bytes.Equal(r.key, want.Key) || !bytes.Equal(r.value, want.Value) || !bytes.Equal(r.headers, want.Headers) ||
				r.headerCount != want.HeaderCount || (ts != want.Timestamp && !(ts == -1 && want.Timestamp == 0)) {
				t.Fatalf("record %d: parseStored and Next disagree", i)
			}
			b := &batchBuilder{}
			out := b.add(nil, &r, want.Offset, ts, b.size(&r, want.Offset, ts))
			got := decodeBatches(t, b.flush(out))
			if len(got) != 1 || got[0].offset != want.Offset || got[0].timestamp != ts || !bytes.Equal(got[0].key, want.Key) ||
				!bytes.Equal(got[0].value, want.Value) || len(got[0].headers) != want.HeaderCount {
				t.Fatalf("record %d: the Kafka record decodes to something else", i)
			}
			hs := want.Headers
			for j := range want.HeaderCount {
				k, v, rest, ok := storage.NextHeader(hs)
				if !ok || got[0].headers[j].Key != string(k) || !bytes.Equal(got[0].headers[j].Value, v) {
					t.Fatalf("record %d, header %d differs", i, j)
				}
				hs = rest
			}
		}
	})
}
