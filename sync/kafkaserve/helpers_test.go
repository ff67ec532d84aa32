package kafkaserve_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/tributary-iot/tributary/internal/testfleet"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/kafkaserve"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

type reading struct {
	Device string `json:"device"`
	Seq    int64  `json:"seq"`
	TS     int64  `json:"ts"`
}

// fillLog appends n readings of devices sensor-0..sensor-(devices-1) to stream readings, in
// rounds so that every device's seqs run 1, 2, 3, ... and timestamps rise by 1 ms per round.
func fillLog(t testing.TB, log *storage.Log, partitions, devices, n int, start time.Time) *storage.Stream {
	t.Helper()
	st, err := log.CreateStream("readings", storage.StreamConfig{Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	appendReadings(t, st, devices, 0, n, start)
	return st
}

// appendReadings appends readings number from..from+n-1 (reading i is device i%devices, seq
// i/devices+1) and waits until they are durable.
func appendReadings(t testing.TB, st *storage.Stream, devices, from, n int, start time.Time) {
	t.Helper()
	a := testfleet.NewAppender(t, st)
	for i := from; i < from+n; i++ {
		dev := fmt.Sprintf("sensor-%d", i%devices)
		ts := start.Add(time.Duration(i/devices) * time.Millisecond)
		v, _ := json.Marshal(reading{Device: dev, Seq: int64(i/devices + 1), TS: ts.UnixMilli()})
		a.Append(storage.Record{Key: []byte(dev), Value: v, Timestamp: ts,
			Headers: []storage.Header{{Key: "edge", Value: []byte("gw-1")}, {Key: "topic", Value: []byte("devices/" + dev + "/readings")}}})
		if (i-from)%5000 == 4999 {
			a.Wait()
		}
	}
	a.Wait()
}

func openLog(t testing.TB) *storage.Log {
	t.Helper()
	log, err := storage.Open(t.TempDir(), &storage.Options{SegmentBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	return log
}

// serve runs a Kafka listener on a loopback port until the test ends.
func serve(t testing.TB, cfg kafkaserve.Config) string {
	t.Helper()
	srv, err := kafkaserve.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// rawClient is a kgo client of the listener at addr for hand-built requests (its one broker is
// cl.Broker(1)); it closes when the test ends.
func rawClient(t testing.TB, addr string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// timeout is a context that ends after d or with the test, whichever comes first.
func timeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// fetchReadings is a Fetch request at version for the readings topic, asking parts (none: the
// request names no topic, as an incremental fetch that changes nothing); the caller sets the rest.
func fetchReadings(version int16, parts ...kmsg.FetchRequestTopicPartition) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.Version = version
	if len(parts) > 0 {
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.Partitions = "readings", parts
		req.Topics = append(req.Topics, rt)
	}
	return req
}

// fetchPartition asks partition p from offset, at most maxBytes of it.
func fetchPartition(p int32, offset int64, maxBytes int32) kmsg.FetchRequestTopicPartition {
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, offset, maxBytes
	return rp
}

// orderChecker checks per-device seqs: each exactly once and rising.
type orderChecker struct {
	last  map[string]int64
	count int
	bad   []string
}

func newOrderChecker() *orderChecker { return &orderChecker{last: map[string]int64{}} }

func (c *orderChecker) add(key string, value []byte) {
	var r reading
	if err := json.Unmarshal(value, &r); err != nil {
		c.bad = append(c.bad, fmt.Sprintf("undecodable value %q", value))
		return
	}
	if r.Device != key {
		c.bad = append(c.bad, fmt.Sprintf("key %q carries device %q", key, r.Device))
	}
	if r.Seq != c.last[r.Device]+1 && len(c.bad) < 20 {
		c.bad = append(c.bad, fmt.Sprintf("%s: seq %d after %d", r.Device, r.Seq, c.last[r.Device]))
	}
	c.last[r.Device] = max(c.last[r.Device], r.Seq)
	c.count++
}

func (c *orderChecker) check(t testing.TB, want int) {
	t.Helper()
	if len(c.bad) > 0 || c.count != want {
		t.Fatalf("read %d records, want %d; problems: %v", c.count, want, c.bad)
	}
}
