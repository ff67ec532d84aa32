package kafkasink

import (
	"context"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testfleet"
)

// BenchmarkSinkThroughput measures records/s from a filled central log into a kfake topic, one
// sink session from the first read to the last acknowledgement.
//
//	go test -run '^$' -bench SinkThroughput -benchtime 200000x ./sync/kafkasink
func BenchmarkSinkThroughput(b *testing.B) {
	const partitions, devices = 8, 1000
	c := newCluster(b, partitions)
	l, s := openLog(b, b.TempDir(), partitions)
	defer l.Close()
	n := max(b.N, 1000)
	perDevice := (n + devices - 1) / devices
	testfleet.Fill(b, s, devices, perDevice)
	total := int64(devices * perDevice)
	var rawBytes int64
	for p := range partitions {
		r := s.Partition(p).NewReader(0, nil)
		for {
			e, err := r.Next(context.Background())
			if err != nil {
				break
			}
			rawBytes += int64(len(e.Key) + len(e.Value))
		}
	}

	b.ResetTimer()
	start := time.Now()
	r := startSink(b, l, Config{Brokers: c.ListenAddrs(), Topic: topic})
	r.waitCaughtUp(b, s)
	elapsed := time.Since(start)
	b.StopTimer()
	r.stop(b)
	b.ReportMetric(float64(total)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(rawBytes)/elapsed.Seconds(), "bytes/s")
	b.ReportMetric(0, "ns/op")
}
