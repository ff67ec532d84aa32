package kafkasink

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	// Test-only: the simulator's signal model gives payloads as compressible as real fleets', which
	// is what the disk figure depends on.
	firmwaresim "github.com/tributary-iot/tributary/firmware-sim"
	"github.com/tributary-iot/tributary/storage"
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
	fillReadings(b, s, devices, perDevice)
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

// fillReadings appends perDevice readings per device, as the edge stores them: firmware-sim's
// JSON payload and the headers edge/ingest.go writes for a QoS 1 publish.
func fillReadings(tb testing.TB, s *storage.Stream, devices, perDevice int) {
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
