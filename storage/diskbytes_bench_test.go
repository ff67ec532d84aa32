package storage_test

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	// Test-only: the simulator's signal model gives payloads as compressible as real fleets', which
	// is what the disk figure depends on. firmware-sim imports nothing of the project, so storage
	// stays free of devices, edge and sync.
	firmwaresim "github.com/tributary-iot/tributary/firmware-sim"
	"github.com/tributary-iot/tributary/storage"
)

// BenchmarkDiskBytesPerReading measures what one reading costs on an edge's disk, for quota
// sizing (deploy/README.md): readings shaped like firmware-sim's, with the headers the edge
// writes, in 1 MiB segments so most of the log is sealed (zstd) as it is during a long outage.
//
//	go test -run '^$' -bench DiskBytesPerReading -benchtime 1x ./storage
func BenchmarkDiskBytesPerReading(b *testing.B) {
	const partitions, devices, perDevice = 2, 1000, 200 // the edge's default partition count
	for range b.N {
		dir := b.TempDir()
		l, err := storage.Open(dir, &storage.Options{Fsync: storage.FsyncNone, SegmentBytes: 1 << 20})
		if err != nil {
			b.Fatal(err)
		}
		s, err := l.CreateStream("readings", storage.StreamConfig{Partitions: partitions})
		if err != nil {
			b.Fatal(err)
		}
		appendEdgeReadings(b, s, devices, perDevice)
		// Wait for the sealer to compress every full segment.
		deadline := time.Now().Add(30 * time.Second)
		var st storage.Stats
		for time.Now().Before(deadline) {
			st = l.Stats()
			if st.SealedRawBytes+(1<<20)*partitions >= st.BytesWritten {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
		st = l.Stats()
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
		readings := float64(devices * perDevice)
		b.ReportMetric(float64(st.BytesWritten)/readings, "raw-B/reading")
		if st.SealedRawBytes > 0 {
			ratio := float64(st.SealedBytes) / float64(st.SealedRawBytes)
			b.ReportMetric(ratio*float64(st.BytesWritten)/readings, "sealed-B/reading")
		}
		b.ReportMetric(float64(st.DiskBytes)/readings, "disk-B/reading")
		b.ReportMetric(0, "ns/op")
	}
}

// appendEdgeReadings appends perDevice readings per device, as the edge stores them: firmware-sim's
// JSON payload and the headers edge/ingest.go writes for a QoS 1 publish.
func appendEdgeReadings(tb testing.TB, s *storage.Stream, devices, perDevice int) {
	tb.Helper()
	epoch := time.UnixMilli(1_750_000_000_000)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	signals := make([]*firmwaresim.Signal, devices)
	for d := range signals {
		signals[d] = firmwaresim.NewSignal(1, fmt.Sprintf("dev-%04d", d), epoch)
	}
	for seq := range perDevice {
		for d := range devices {
			dev := fmt.Sprintf("dev-%04d", d)
			t := epoch.Add(time.Duration(seq) * time.Second)
			reading := signals[d].Reading(uint64(seq+1), t)
			payload := reading.AppendJSON(nil)
			rt := strconv.AppendInt(nil, t.UnixMilli(), 10)
			rec := storage.Record{
				Key:       []byte(dev),
				Value:     payload,
				Timestamp: t,
				Headers: []storage.Header{
					{Key: "topic", Value: []byte("devices/" + dev + "/readings")},
					{Key: "content-type", Value: []byte("application/json")},
					{Key: "device-time", Value: strconv.AppendInt(nil, reading.TS, 10)},
					{Key: "receive-time", Value: rt},
					{Key: "client-id", Value: []byte(dev)},
					{Key: "packet-id", Value: strconv.AppendInt(nil, int64(seq%65535+1), 10)},
					{Key: "payload-hash", Value: fmt.Appendf(nil, "%016x", uint64(seq)*0x9e3779b97f4a7c15^uint64(d))},
				},
			}
			wg.Add(1)
			s.AppendAsync(rec, func(_ int, _ int64, err error) {
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
				wg.Done()
			})
		}
	}
	wg.Wait()
	if firstErr != nil {
		tb.Fatal(firstErr)
	}
}
