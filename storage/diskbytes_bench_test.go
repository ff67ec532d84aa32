package storage_test

import (
	"testing"
	"time"

	// Test-only: fleet-shaped readings, as compressible as real fleets', which is what the disk
	// figure depends on; testfleet imports only firmware-sim and storage.
	"github.com/tributary-iot/tributary/internal/testfleet"
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
		testfleet.Fill(b, s, devices, perDevice)
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
