package kafkaserve_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/kafkaserve"
)

// TestFetchInsideStoredBatch fetches from an offset in the middle of a stored batch, as a
// consumer resuming from a committed offset does. Kafka lets a broker return the whole batch
// holding the fetch offset, and clients drop the records below it; whatever the response holds,
// every record must carry its true offset, key and value, the records from the fetch offset on
// must all be there in order, and a franz-go consumer started there must see exactly the
// records from that offset to the end.
func TestFetchInsideStoredBatch(t *testing.T) {
	for _, compression := range []string{"none", "zstd"} {
		t.Run(compression, func(t *testing.T) {
			log := openLog(t)
			const n = 12000
			st := fillLog(t, log, 1, 50, n, time.UnixMilli(1_700_000_000_000))
			p := st.Partition(0)
			// A stored batch of many records, found through the raw read API.
			var b storage.RawBatch
			rr := p.NewRawReader()
			for off := int64(0); b.Count < 100; off = b.BaseOffset + int64(b.Count) {
				rb, err := rr.Read(off, 0)
				if err != nil {
					t.Fatalf("no stored batch of 100 records or more: %v", err)
				}
				if b, _, err = storage.NextBatch(rb.Data); err != nil {
					t.Fatal(err)
				}
			}
			from := b.BaseOffset + int64(b.Count)/2
			want := map[int64]storage.Entry{}
			r := p.NewReader(0, nil)
			for {
				e, err := r.Next(context.Background())
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				want[e.Offset] = e
			}
			addr := serve(t, kafkaserve.Config{Log: log, Compression: compression})
			cl := rawClient(t, addr)
			ctx := timeout(t, 30*time.Second)

			for _, version := range []int16{4, 11, 12} {
				rp := fetchPartition(0, from, 64<<10)
				rp.LogStartOffset = -1
				req := fetchReadings(version, rp)
				req.MaxWaitMillis, req.MaxBytes = 100, 1<<20
				if version >= 7 {
					req.SessionEpoch = -1 // sessionless (KIP-227)
				}
				resp, err := req.RequestWith(ctx, cl)
				if err != nil {
					t.Fatalf("fetch v%d: %v", version, err)
				}
				part := &resp.Topics[0].Partitions[0]
				if part.ErrorCode != 0 || part.HighWatermark != n {
					t.Fatalf("fetch v%d: error %d, high watermark %d (want 0, %d)", version, part.ErrorCode, part.HighWatermark, n)
				}
				// Everything in the response, as a client reads it before dropping what it did
				// not ask for.
				all, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Offset: 0, Topic: "readings"}, part, kgo.DefaultDecompressor(), nil)
				if all.Err != nil || len(all.Records) == 0 {
					t.Fatalf("fetch v%d: %d records, %v", version, len(all.Records), all.Err)
				}
				if first := all.Records[0].Offset; first > from {
					t.Fatalf("fetch v%d at %d: the response starts at %d", version, from, first)
				}
				for _, rec := range all.Records {
					w, ok := want[rec.Offset]
					if !ok || !bytes.Equal(rec.Key, w.Key) || !bytes.Equal(rec.Value, w.Value) || !rec.Timestamp.Equal(w.Timestamp) {
						t.Fatalf("fetch v%d: record at offset %d is %q=%q, stored %q=%q", version, rec.Offset, rec.Key, rec.Value, w.Key, w.Value)
					}
				}
				// What a client keeps: from the fetch offset on, dense.
				kept, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Offset: from, Topic: "readings"}, part, kgo.DefaultDecompressor(), nil)
				if len(kept.Records) < 100 {
					t.Fatalf("fetch v%d at %d: %d records from the fetch offset on in 64 KiB", version, from, len(kept.Records))
				}
				for i, rec := range kept.Records {
					if rec.Offset != from+int64(i) {
						t.Fatalf("fetch v%d at %d: record %d has offset %d", version, from, i, rec.Offset)
					}
				}
			}

			cons, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.FetchMaxWait(200*time.Millisecond),
				kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"readings": {0: kgo.NewOffset().At(from)}}))
			if err != nil {
				t.Fatal(err)
			}
			defer cons.Close()
			next := from
			for next < n {
				fs := cons.PollFetches(ctx)
				if err := ctx.Err(); err != nil {
					t.Fatalf("consumer at %d: %v", next, err)
				}
				fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
				fs.EachRecord(func(r *kgo.Record) {
					if r.Offset != next || !bytes.Equal(r.Value, want[next].Value) {
						t.Fatalf("consumer started at %d got offset %d (%q), want %d", from, r.Offset, r.Value, next)
					}
					next++
				})
			}
		})
	}
}

// TestReadAheadFollowsTheClient runs one connection through fetches that each continue where
// the last ended, as a consumer catching up does (so the listener encodes ahead), while the
// client changes what it asks: a smaller partition limit than the read-ahead was made for, an
// older Fetch version without zstd, a jump back to an earlier offset. Every response must hold
// exactly the records from the offset asked for on, dense and as stored, within the limit.
func TestReadAheadFollowsTheClient(t *testing.T) {
	for _, compression := range []string{"none", "zstd"} {
		t.Run(compression, func(t *testing.T) { readAheadSteps(t, compression) })
	}
}

func readAheadSteps(t *testing.T, compression string) {
	log := openLog(t)
	const n = 30000
	st := fillLog(t, log, 1, 50, n, time.UnixMilli(1_700_000_000_000))
	values := map[int64][]byte{}
	r := st.Partition(0).NewReader(0, nil)
	for {
		e, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		values[e.Offset] = e.Value
	}
	addr := serve(t, kafkaserve.Config{Log: log, Compression: compression})
	cl := rawClient(t, addr)
	ctx := timeout(t, 30*time.Second)
	steps := []struct {
		version int16
		limit   int32
		back    int64 // fetch this many offsets before where the last response ended
	}{
		{12, 64 << 10, 0}, {12, 64 << 10, 0}, {12, 64 << 10, 0}, // read-ahead at 64 KiB
		{12, 16 << 10, 0}, {12, 16 << 10, 0}, {12, 4 << 10, 0}, // less than was read ahead
		{12, 256 << 10, 0}, {12, 256 << 10, 0}, // more
		{9, 64 << 10, 0}, {9, 64 << 10, 0}, // no zstd before v10
		{12, 64 << 10, 0}, {12, 64 << 10, 1000}, {12, 64 << 10, 0}, // a jump back
		{12, 8 << 20, 0}, {12, 8 << 20, 0},
	}
	next := int64(0)
	for i, s := range steps {
		from := max(next-s.back, 0)
		req := fetchReadings(s.version, fetchPartition(0, from, s.limit))
		req.MaxWaitMillis, req.MaxBytes, req.SessionEpoch = 10, 50<<20, -1
		resp, err := req.RequestWith(ctx, cl.Broker(1))
		if err != nil {
			t.Fatal(err)
		}
		part := &resp.Topics[0].Partitions[0]
		if part.ErrorCode != 0 {
			t.Fatalf("step %d: error %d", i, part.ErrorCode)
		}
		if len(part.RecordBatches) > int(s.limit) {
			t.Fatalf("step %d: %d bytes over a partition limit of %d", i, len(part.RecordBatches), s.limit)
		}
		fp, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Offset: from, Topic: "readings"}, part, kgo.DefaultDecompressor(), nil)
		if fp.Err != nil || (len(fp.Records) == 0 && from < n) {
			t.Fatalf("step %d at %d: %d records, %v", i, from, len(fp.Records), fp.Err)
		}
		for j, rec := range fp.Records {
			if rec.Offset != from+int64(j) || !bytes.Equal(rec.Value, values[rec.Offset]) {
				t.Fatalf("step %d at %d: record %d is offset %d %q, want offset %d %q", i, from, j, rec.Offset, rec.Value, from+int64(j), values[from+int64(j)])
			}
		}
		next = from + int64(len(fp.Records))
	}
	if next != n {
		t.Fatalf("the steps ended at offset %d, want %d", next, n)
	}
}
