package receive

import (
	"fmt"
	"io"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/protocol"
)

// TestOnApplied sends one edge partition's records as small chunks, then again as larger chunks
// that overlap them, with repeats: OnApplied reports every record central stored exactly once,
// at the central partition and offset where the log holds it, and never a repeat.
func TestOnApplied(t *testing.T) {
	const records = 400
	edge, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()
	est, err := edge.CreateStream("readings", storage.StreamConfig{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range records {
		v := fmt.Sprintf(`{"device":"d-%d","seq":%d}`, i%13, i)
		if _, err := est.Partition(0).Append(t.Context(), storage.Record{Key: []byte(fmt.Sprintf("d-%d", i%13)), Value: []byte(v), Timestamp: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	chunks := func(maxRaw int, upTo int64) []storage.Chunk {
		var out []storage.Chunk
		for off := int64(0); off < upTo; {
			c, err := est.Partition(0).ReadChunk(off, maxRaw)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, c)
			off = c.Next
		}
		return out
	}

	log, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []*AppliedChunk
	rcv, err := New(Config{Log: log, MaxBodyBytes: 64 << 10, OnApplied: func(ac *AppliedChunk) {
		mu.Lock()
		got = append(got, ac)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	token, err := rcv.AddEdge("gw-1")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, log: log, rcv: rcv, srv: httptest.NewServer(rcv), token: token}
	defer func() { h.srv.Close(); log.Close() }()
	path := protocol.SyncPath("readings", 0)
	send := func(c storage.Chunk) {
		if code, e, _ := h.post(path, chunkHeaders(c), c.Data, h.token); code != 200 {
			t.Fatalf("chunk [%d, %d): %d %+v", c.Base, c.Next, code, e)
		}
	}
	small := chunks(2<<10, records/2)
	for _, c := range small {
		send(c)
	}
	send(small[0]) // a repeat: nothing applied, nothing reported
	// Larger chunks from the start: their first records are repeats, the rest new.
	for _, c := range chunks(16<<10, records) {
		send(c)
	}
	if n := h.stored(); n != records {
		t.Fatalf("central stores %d records, want %d", n, records)
	}

	// Every record reported is where the log says, and the reports cover the log once.
	st, err := log.Stream("readings")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[[2]int64]bool{} // central partition, offset
	edgeSeen := map[int64]bool{}
	mu.Lock()
	defer mu.Unlock()
	overlapped := false
	for _, ac := range got {
		n := 0
		for _, p := range ac.Parts {
			n += len(p.Offsets)
		}
		overlapped = overlapped || n < len(ac.Records)
		if ac.Edge != "gw-1" || ac.Stream != "readings" || ac.EdgePartition != 0 || ac.RawBytes <= 0 {
			t.Fatalf("chunk reported as %s/%s/%d with %d raw bytes", ac.Edge, ac.Stream, ac.EdgePartition, ac.RawBytes)
		}
		for _, p := range ac.Parts {
			if len(p.EdgeOffsets) != len(p.Offsets) {
				t.Fatalf("part of partition %d: %d edge offsets, %d offsets", p.Partition, len(p.EdgeOffsets), len(p.Offsets))
			}
			for i, eoff := range p.EdgeOffsets {
				rec := ac.Records[eoff-ac.Records[0].Offset]
				if rec.Offset != eoff {
					t.Fatalf("edge offset %d names record at %d", eoff, rec.Offset)
				}
				k := [2]int64{int64(p.Partition), p.Offsets[i]}
				if seen[k] || edgeSeen[eoff] {
					t.Fatalf("edge offset %d (central %d:%d) reported twice", eoff, p.Partition, p.Offsets[i])
				}
				seen[k], edgeSeen[eoff] = true, true
				rd := st.Partition(p.Partition).NewReader(p.Offsets[i], nil)
				e, err := rd.Next(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if string(e.Key) != string(rec.Key) || string(e.Value) != string(rec.Value) {
					t.Fatalf("central %d:%d holds %s=%s, reported %s=%s", p.Partition, p.Offsets[i], e.Key, e.Value, rec.Key, rec.Value)
				}
				if want := st.PartitionFor(rec.Key); p.Partition != want {
					t.Fatalf("key %s reported in partition %d, stored by key in %d", rec.Key, p.Partition, want)
				}
			}
		}
	}
	if !overlapped {
		t.Fatal("no chunk reported with repeats among its records: the larger chunks did not overlap")
	}
	if len(seen) != records {
		t.Fatalf("%d records reported, central stores %d", len(seen), records)
	}
}
