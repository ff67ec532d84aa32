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

// TestObserver sends one edge partition's records as small chunks, then again as larger chunks
// that overlap them, with repeats: the Observer is told of every record central stored exactly
// once, at the central partition and offset where the log holds it, and never of a repeat.
func TestObserver(t *testing.T) {
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
	obs := &recorder{}
	rcv, err := New(Config{Log: log, MaxBodyBytes: 64 << 10, Observer: obs})
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
	sent := 0
	send := func(c storage.Chunk) {
		sent += c.Records
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
	obs.mu.Lock()
	defer obs.mu.Unlock()
	queued := 0
	for _, a := range obs.applies {
		if !a.stored {
			t.Fatalf("an apply of %s/%s/%d was never reported stored", a.edge, a.stream, a.edgePartition)
		}
		if a.edge != "gw-1" || a.stream != "readings" || a.edgePartition != 0 {
			t.Fatalf("apply reported as %s/%s/%d", a.edge, a.stream, a.edgePartition)
		}
		n := 0
		for _, p := range a.parts {
			n += len(p.Offsets)
			if len(p.EdgeOffsets) != len(p.Offsets) || len(p.Offsets) != len(a.queued[p.Partition]) {
				t.Fatalf("partition %d: %d edge offsets, %d offsets, %d queued", p.Partition, len(p.EdgeOffsets), len(p.Offsets), len(a.queued[p.Partition]))
			}
			for i, off := range p.Offsets {
				q := a.queued[p.Partition][i]
				if q.index != i || q.offset != p.EdgeOffsets[i] {
					t.Fatalf("partition %d index %d: queued as index %d at edge offset %d, stored at edge offset %d", p.Partition, i, q.index, q.offset, p.EdgeOffsets[i])
				}
				k := [2]int64{int64(p.Partition), off}
				if seen[k] || edgeSeen[q.offset] {
					t.Fatalf("edge offset %d (central %d:%d) reported twice", q.offset, p.Partition, off)
				}
				seen[k], edgeSeen[q.offset] = true, true
				e, err := st.Partition(p.Partition).NewReader(off, nil).Next(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if string(e.Key) != q.key || string(e.Value) != q.value {
					t.Fatalf("central %d:%d holds %s=%s, reported %s=%s", p.Partition, off, e.Key, e.Value, q.key, q.value)
				}
				if want := st.PartitionFor(e.Key); p.Partition != want {
					t.Fatalf("key %s reported in partition %d, stored by key in %d", e.Key, p.Partition, want)
				}
			}
		}
		queued += n
	}
	if sent <= records || queued != records {
		t.Fatalf("%d records sent, %d queued to the observer; want repeats among those sent and %d queued", sent, queued, records)
	}
	if len(seen) != records {
		t.Fatalf("%d records reported, central stores %d", len(seen), records)
	}
}

// recorder is an Observer that keeps what it is told.
type recorder struct {
	mu      sync.Mutex
	applies []*recordedApply
}

type recordedApply struct {
	rec           *recorder
	edge, stream  string
	edgePartition int
	queued        map[int][]queuedRecord
	parts         []AppliedPart
	stored        bool
}

type queuedRecord struct {
	key, value string
	offset     int64
	index      int
}

func (r *recorder) Apply(edge, stream string, edgePartition int) ApplyObserver {
	a := &recordedApply{rec: r, edge: edge, stream: stream, edgePartition: edgePartition, queued: map[int][]queuedRecord{}}
	r.mu.Lock()
	r.applies = append(r.applies, a)
	r.mu.Unlock()
	return a
}

func (a *recordedApply) Queued(e *storage.Entry, partition, index int) {
	a.rec.mu.Lock()
	defer a.rec.mu.Unlock()
	a.queued[partition] = append(a.queued[partition], queuedRecord{string(e.Key), string(e.Value), e.Offset, index})
}

func (a *recordedApply) Stored(parts []AppliedPart) {
	a.rec.mu.Lock()
	defer a.rec.mu.Unlock()
	if a.stored {
		panic("Stored called twice")
	}
	a.parts, a.stored = parts, true
}
