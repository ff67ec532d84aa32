// Package testfleet fills storage streams for tests: [Appender] pipelines appends and waits for
// them to be durable, and [Fill] writes readings shaped like a real fleet's, for benchmarks whose
// figures depend on what the records look like (bytes on disk, sink throughput).
//
// It lives in internal/ because storage/ and sync/ tests both use it. The simulator's signal
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
	a := NewAppender(tb, s)
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
			a.Append(storage.Record{
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
			})
		}
	}
	a.Wait()
}

// Appender appends to one stream with many appends in flight (AppendAsync), as a busy edge does,
// so filling a log for a test costs group commits, not one fsync per record.
type Appender struct {
	tb  testing.TB
	s   *storage.Stream
	wg  sync.WaitGroup
	mu  sync.Mutex
	err error // the first append error
}

// NewAppender appends to s for the test tb.
func NewAppender(tb testing.TB, s *storage.Stream) *Appender { return &Appender{tb: tb, s: s} }

// Append starts appending r; [Appender.Wait] learns how it went.
func (a *Appender) Append(r storage.Record) {
	a.wg.Add(1)
	a.s.AppendAsync(r, func(_ int, _ int64, err error) {
		if err != nil {
			a.mu.Lock()
			if a.err == nil {
				a.err = err
			}
			a.mu.Unlock()
		}
		a.wg.Done()
	})
}

// Wait returns when every append started so far is done, durable as the log is configured; it
// fails the test with the first append error. Call it from the test's goroutine; the Appender can
// go on appending after it.
func (a *Appender) Wait() {
	a.tb.Helper()
	a.wg.Wait()
	a.mu.Lock()
	err := a.err
	a.mu.Unlock()
	if err != nil {
		a.tb.Fatal(err)
	}
}
