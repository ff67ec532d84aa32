package kafkaserve

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testcpu"
	"github.com/tributary-iot/tributary/storage"
)

// BenchmarkEncode converts a partition's stored batches into Kafka batches, as a fetch does but
// with no connection: the serving path's CPU per record without the network or a client. The
// records are shaped like central's (a JSON reading, topic and receive-time headers and the four
// provenance headers), in sealed segments (decompressed on read) and in a plain one.
func BenchmarkEncode(b *testing.B) {
	for _, sealed := range []bool{true, false} {
		name := "plain"
		if sealed {
			name = "sealed"
		}
		b.Run(name, func(b *testing.B) {
			const n = 100000
			p := benchPartition(b, n, sealed)
			var out []byte
			b.ResetTimer()
			cpu := int64(testcpu.Self())
			for i := 0; i < b.N; i++ {
				pr := newPartReader(p, 0, nil)
				for got := 0; ; {
					var err error
					bb := &batchBuilder{}
					out, _, err = encode(pr, bb, out[:0], 1<<20, true)
					if err != nil {
						b.Fatal(err)
					}
					if len(out) == 0 {
						if got != n {
							b.Fatalf("encoded %d records, want %d", got, n)
						}
						break
					}
					got += countRecords(b, out)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
			if c := int64(testcpu.Self()) - cpu; c > 0 {
				b.ReportMetric(float64(c)/float64(n*b.N), "cpu-ns/record")
			}
		})
	}
}

func countRecords(tb testing.TB, out []byte) int {
	got := 0
	for len(out) >= batchHeaderLen {
		l := 12 + int(uint32(out[8])<<24|uint32(out[9])<<16|uint32(out[10])<<8|uint32(out[11]))
		got += int(uint32(out[57])<<24 | uint32(out[58])<<16 | uint32(out[59])<<8 | uint32(out[60]))
		out = out[l:]
	}
	if len(out) != 0 {
		tb.Fatalf("%d bytes after the last batch", len(out))
	}
	return got
}

// benchPartition is a one-partition stream of n central-like readings, sealed when asked.
func benchPartition(b *testing.B, n int, sealed bool) *storage.Partition {
	segment := int64(64 << 20)
	if sealed {
		segment = 4 << 20
	}
	log, err := storage.Open(b.TempDir(), &storage.Options{SegmentBytes: segment})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { log.Close() })
	st, err := log.CreateStream("readings", storage.StreamConfig{Partitions: 1})
	if err != nil {
		b.Fatal(err)
	}
	now := time.UnixMilli(1_700_000_000_000)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := 0; i < n; i++ {
		dev := fmt.Sprintf("sensor-%04d", i%300)
		ts := now.Add(time.Duration(i) * time.Microsecond)
		v, _ := json.Marshal(map[string]any{"device": dev, "seq": i/300 + 1, "temp_c": 21.3, "humidity": 44.8, "battery_v": 3.69, "ts": ts.UnixMilli()})
		ms := []byte(strconv.FormatInt(ts.UnixMilli(), 10))
		wg.Add(1)
		st.AppendAsync(storage.Record{Key: []byte(dev), Value: v, Timestamp: ts, Headers: []storage.Header{
			{Key: "topic", Value: []byte("devices/" + dev + "/readings")}, {Key: "receive-time", Value: ms},
			{Key: "edge", Value: []byte("gw-1")}, {Key: "edge-partition", Value: []byte("0")},
			{Key: "edge-offset", Value: []byte(strconv.Itoa(i))}, {Key: "central-time", Value: ms}}},
			func(_ int, _ int64, err error) {
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
				wg.Done()
			})
		if i%50000 == 49999 {
			wg.Wait()
		}
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	if sealed {
		for deadline := time.Now().Add(60 * time.Second); !allSealed(st.Partition(0)); {
			if time.Now().After(deadline) {
				b.Fatal("segments not sealed within 60 s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return st.Partition(0)
}

// allSealed reports whether every segment but the active one is sealed.
func allSealed(p *storage.Partition) bool {
	segs := p.Segments()
	for _, s := range segs[:len(segs)-1] {
		if !s.Sealed {
			return false
		}
	}
	return len(segs) > 1
}
