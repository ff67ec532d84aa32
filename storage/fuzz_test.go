package storage

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// encodeBatch builds one batch the way the committer does: records encoded against the first
// record's timestamp, then the header and CRC.
func encodeBatch(base int64, recs []Record) []byte {
	b := make([]byte, batchHeaderSize)
	baseTS, maxTS := millis(recs[0].Timestamp), millis(recs[0].Timestamp)
	for i := range recs {
		maxTS = max(maxTS, millis(recs[i].Timestamp))
		b = appendRecord(b, &recs[i], baseTS)
	}
	putBatchHeader(b, base, len(recs), baseTS, maxTS)
	return b
}

// decodeAll checks and decodes consecutive batches, copying what it returns.
func decodeAll(raw []byte) ([]Entry, error) {
	var out []Entry
	for len(raw) > 0 {
		h, err := checkBatch(raw)
		if err != nil {
			return out, err
		}
		err = decodeBatch(raw, h, func(off int64, rec Record) error {
			out = append(out, Entry{Offset: off, Record: cloneRecord(rec)})
			return nil
		})
		if err != nil {
			return out, err
		}
		raw = raw[h.Length:]
	}
	return out, nil
}

func cloneRecord(r Record) Record {
	c := Record{Key: bytes.Clone(r.Key), Value: bytes.Clone(r.Value), Timestamp: r.Timestamp}
	for _, h := range r.Headers {
		c.Headers = append(c.Headers, Header{h.Key, bytes.Clone(h.Value)})
	}
	return c
}

func sampleRecords(n int, seed int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = Record{
			Key:       fmt.Appendf(nil, "dev-%d", (seed+i)%7),
			Value:     fmt.Appendf(nil, `{"t":%d.%d}`, 20+i%5, seed%10),
			Timestamp: time.UnixMilli(1_700_000_000_000 + int64(seed*100+i)),
		}
		if i%2 == 0 {
			recs[i].Headers = []Header{{"topic", []byte("devices/x/readings")}, {"qos", []byte{1}}}
		}
		if i%5 == 3 {
			recs[i].Timestamp = time.Time{} // a record without a time
		}
	}
	return recs
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add(encodeBatch(0, sampleRecords(1, 0)))
	f.Add(encodeBatch(42, sampleRecords(5, 1)))
	f.Add(encodeBatch(1<<40, []Record{{}}))
	f.Add(append(encodeBatch(7, sampleRecords(3, 2)), encodeBatch(10, sampleRecords(2, 3))...))
	f.Add(make([]byte, batchHeaderSize))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := checkBatch(data)
		if err != nil {
			return
		}
		var recs []Record
		var offs []int64
		if err := decodeBatch(data, h, func(off int64, rec Record) error {
			recs = append(recs, cloneRecord(rec))
			offs = append(offs, off)
			return nil
		}); err != nil {
			return
		}
		if len(recs) != int(h.Count) || offs[0] != h.BaseOffset || offs[len(offs)-1] != h.NextOffset()-1 {
			t.Fatalf("decoded %d records at %v from a batch of %d at %d", len(recs), offs, h.Count, h.BaseOffset)
		}
		// Valid input round-trips: re-encoding the records gives a batch that decodes to them.
		again := encodeBatch(h.BaseOffset, recs)
		got, err := decodeAll(again)
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		if len(got) != len(recs) {
			t.Fatalf("%d records after round trip, was %d", len(got), len(recs))
		}
		for i := range got {
			if !equalRecords(got[i].Record, recs[i]) || got[i].Offset != offs[i] {
				t.Fatalf("record %d: %+v after round trip, was %+v", i, got[i].Record, recs[i])
			}
		}
		// The encoder's output is canonical: encoding what it decodes gives the same bytes.
		// (Fuzzed input may use longer varints than the encoder writes, so it is not compared.)
		var again2 []Record
		for _, e := range got {
			again2 = append(again2, e.Record)
		}
		if third := encodeBatch(h.BaseOffset, again2); !bytes.Equal(third, again) {
			t.Fatal("encoding is not stable across a decode")
		}
	})
}

func TestBatchRoundTripIsByteExact(t *testing.T) {
	for n := 1; n < 8; n++ {
		b := encodeBatch(int64(n*1000), sampleRecords(n, n))
		got, err := decodeAll(b)
		must(t, err)
		recs := make([]Record, len(got))
		for i, e := range got {
			recs[i] = e.Record
		}
		if again := encodeBatch(int64(n*1000), recs); !bytes.Equal(again, b) {
			t.Fatalf("%d records: re-encoding differs", n)
		}
	}
}

func equalRecords(a, b Record) bool {
	if !bytes.Equal(a.Key, b.Key) || !bytes.Equal(a.Value, b.Value) || !a.Timestamp.Equal(b.Timestamp) || len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if a.Headers[i].Key != b.Headers[i].Key || !bytes.Equal(a.Headers[i].Value, b.Headers[i].Value) {
			return false
		}
	}
	return true
}

// sealedSample seals a few batches into a sealed file and its index.
func sealedSample(t testing.TB, frameBytes int) (seg, idx []byte) {
	dir := t.TempDir()
	var raw []byte
	off := int64(0)
	for i := 0; i < 12; i++ {
		recs := sampleRecords(1+i%4, i)
		raw = append(raw, encodeBatch(off, recs)...)
		off += int64(len(recs))
	}
	f, err := os.Create(filepath.Join(dir, "seg"))
	must(t, err)
	defer f.Close()
	frames, err := sealFile(bytes.NewReader(raw), f, frameBytes)
	must(t, err)
	seg, err = os.ReadFile(f.Name())
	must(t, err)
	return seg, encodeIndex(0, off, frames)
}

func FuzzSealedReader(f *testing.F) {
	seg, idx := sealedSample(f, 300)
	f.Add(seg, idx, false)
	f.Add(seg, idx, true)
	f.Add(seg, []byte{}, false)
	f.Add(seg[:len(seg)-7], idx, false)
	f.Add(seg[:len(seg)/2], []byte{}, true)
	one, oneIdx := sealedSample(f, 1<<20)
	f.Add(one, oneIdx, true)
	f.Add([]byte{}, []byte{}, false)
	// One folder for all executions: t.TempDir per execution slows the fuzzer down to a crawl.
	root := f.TempDir()
	f.Fuzz(func(t *testing.T, seg, idx []byte, skipVerify bool) {
		dir := filepath.Join(root, "p")
		must(t, os.RemoveAll(dir))
		must(t, os.MkdirAll(dir, 0o755))
		must(t, os.WriteFile(filepath.Join(dir, segmentName(0, sealedExt)), seg, 0o644))
		if len(idx) > 0 {
			must(t, os.WriteFile(filepath.Join(dir, segmentName(0, indexExt)), idx, 0o644))
		}
		o := (&Options{SkipVerifyOnOpen: skipVerify}).withDefaults()
		l := &Log{dir: dir, opts: o, logger: slog.New(slog.DiscardHandler)}
		segs, err := l.openSealed(&Partition{log: l, stream: "s", dir: dir}, 0, false)
		if err != nil {
			var ce *CorruptionError
			if !errors.As(err, &ce) {
				t.Fatalf("open: untyped error %v", err)
			}
			return
		}
		s := segs[0]
		defer s.retire(false)
		if !s.acquire() {
			t.Fatal("acquire")
		}
		defer s.release()
		for off := s.baseOffset(); off < s.nextOffset(); {
			raw, err := s.readBatches(off, 1<<20)
			if err != nil {
				var ce *CorruptionError
				if !errors.As(err, &ce) {
					t.Fatalf("read at %d: untyped error %v", off, err)
				}
				return
			}
			entries, err := decodeAll(raw)
			if err != nil {
				return // the reader reports this as a CorruptionError and quarantines
			}
			if len(entries) == 0 || entries[len(entries)-1].Offset < off {
				return
			}
			off = entries[len(entries)-1].Offset + 1
		}
	})
}

func FuzzDecodeChunk(f *testing.F) {
	raw := append(encodeBatch(100, sampleRecords(3, 1)), encodeBatch(103, sampleRecords(4, 2))...)
	f.Add(compressFrame(raw), 1<<20)
	f.Add(compressFrame(raw), 10)
	f.Add(compressFrame(encodeBatch(0, sampleRecords(1, 0))), 0)
	f.Add(compressFrame(nil), 1<<20)
	f.Add(compressFrame(append(encodeBatch(0, sampleRecords(1, 0)), encodeBatch(5, sampleRecords(1, 0))...)), 1<<20)
	f.Add([]byte("not zstd"), 1<<20)
	f.Fuzz(func(t *testing.T, data []byte, limit int) {
		limit = limit % (4 << 20) // keep the fuzzer's memory bounded; the limit is the property
		next := int64(-1)
		raw := 0
		err := DecodeChunk(data, limit, func(off int64, rec Record) error {
			if next >= 0 && off != next {
				return fmt.Errorf("offset %d after %d", off, next-1)
			}
			next = off + 1
			raw += len(rec.Key) + len(rec.Value)
			return nil
		})
		if err != nil {
			return
		}
		if l := limit; l > 0 && raw > l {
			t.Fatalf("decoded %d bytes of records with a limit of %d", raw, l)
		}
	})
}
