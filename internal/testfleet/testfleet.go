// Package testfleet fills a storage stream with readings shaped like a real fleet's, for
// benchmarks whose figures depend on what the records look like (bytes on disk, sink throughput).
//
// It lives in internal/ because storage/ and sync/ benchmarks both use it. The simulator's signal
// model gives payloads as compressible as real fleets'; firmware-sim imports nothing of the project,
// so storage's tests stay free of devices, edge and sync.
package testfleet

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	firmwaresim "github.com/tributary-iot/tributary/firmware-sim"
	"github.com/tributary-iot/tributary/storage"
)

// Fill appends perDevice readings for each of devices devices to s, as the edge stores them:
// firmware-sim's JSON payload and the headers edge/ingest.go writes for a QoS 1 publish. Devices
// are dev-0000, dev-0001, ...; readings are a second apart from a fixed epoch, interleaved across
// devices. It returns when every append is durable as s's log is configured, and fails tb on the
// first append error.
func Fill(tb testing.TB, s *storage.Stream, devices, perDevice int) {
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
