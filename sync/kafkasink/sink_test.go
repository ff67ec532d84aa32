package kafkasink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/tributary-iot/tributary/internal/testfleet"
	"github.com/tributary-iot/tributary/storage"
)

const topic = "tributary-readings"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	goleak.VerifyTestMain(m)
}

func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func newCluster(t testing.TB, partitions int) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(partitions), topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func openLog(t testing.TB, dir string, partitions int) (*storage.Log, *storage.Stream) {
	t.Helper()
	l, err := storage.Open(dir, &storage.Options{Fsync: storage.FsyncNone})
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.CreateStream("readings", storage.StreamConfig{Partitions: partitions})
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	return l, s
}

// receiveTime is a deterministic gateway receive time for a device's sequence number.
func receiveTime(dev, seq int) time.Time {
	return time.UnixMilli(1_700_000_000_000 + int64(seq)*1000 + int64(dev))
}

// fill appends seqs [from, to) for each of devices devices, interleaved the way a fleet publishes.
func fill(t testing.TB, s *storage.Stream, devices, from, to int) {
	t.Helper()
	a := testfleet.NewAppender(t, s)
	for seq := from; seq < to; seq++ {
		for d := range devices {
			rt := receiveTime(d, seq)
			a.Append(storage.Record{
				Key:       fmt.Appendf(nil, "dev-%03d", d),
				Value:     fmt.Appendf(nil, `{"device":"dev-%03d","seq":%d}`, d, seq),
				Timestamp: rt.Add(time.Second), // central time: must not become the Kafka timestamp
				Headers: []storage.Header{
					{Key: "edge", Value: []byte("gw-1")},
					{Key: "edge-offset", Value: strconv.AppendInt(nil, int64(seq), 10)},
					{Key: HeaderReceiveTime, Value: strconv.AppendInt(nil, rt.UnixMilli(), 10)},
				},
			})
		}
	}
	a.Wait()
}

type running struct {
	sink   *Sink
	cancel context.CancelFunc
	done   chan error
}

func startSink(t testing.TB, l *storage.Log, cfg Config) *running {
	t.Helper()
	s, err := New(l, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{sink: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	return r
}

func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("sink did not stop within 20s")
	}
}

// waitCaughtUp waits until Kafka acknowledged every record of the stream.
func (r *running) waitCaughtUp(t testing.TB, s *storage.Stream) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		behind := int64(0)
		r.sink.mu.Lock()
		ready := r.sink.stream != nil
		r.sink.mu.Unlock()
		if ready {
			for p := range s.Partitions() {
				behind += s.Partition(p).EndOffset() - r.sink.acked[p].Load()
			}
			if behind == 0 {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("sink did not catch up within 30s")
}

// consumed is one record as a stock consumer group member sees it.
type consumed struct {
	kafkaPartition int32
	centralPart    int
	centralOffset  int64
	device         string
	seq            int
	timestamp      time.Time
	headers        map[string]string
}

// readBack reads the whole topic with a stock franz-go consumer group, waiting for want records
// and then a little longer so that extra (duplicate) records show up too.
func readBack(t testing.TB, c *kfake.Cluster, want int) []consumed {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.ConsumerGroup(fmt.Sprintf("verify-%d", time.Now().UnixNano())),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []consumed
	deadline := time.Now().Add(30 * time.Second)
	var settle time.Time
	for time.Now().Before(deadline) {
		if len(out) >= want && settle.IsZero() {
			settle = time.Now().Add(500 * time.Millisecond)
		}
		if !settle.IsZero() && time.Now().After(settle) {
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fetches := cl.PollFetches(ctx)
		cancel()
		fetches.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("fetch: %v", err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			h := map[string]string{}
			for _, kv := range r.Headers {
				h[kv.Key] = string(kv.Value)
			}
			var dev string
			var seq int
			if _, err := fmt.Sscanf(string(r.Value), `{"device":%q,"seq":%d}`, &dev, &seq); err != nil {
				t.Errorf("value %q: %v", r.Value, err)
			}
			cp, _ := strconv.Atoi(h[HeaderCentralPartition])
			co, _ := strconv.ParseInt(h[HeaderCentralOffset], 10, 64)
			out = append(out, consumed{r.Partition, cp, co, string(r.Key), seq, r.Timestamp, h})
		})
	}
	if err := cl.CommitUncommittedOffsets(context.Background()); err != nil {
		t.Errorf("commit: %v", err)
	}
	return out
}

// verify checks every device's sequence 0..perDevice-1 arrived exactly once, in order, on the
// expected partition, with headers and the receive time.
func verify(t testing.TB, got []consumed, devices, perDevice int, samePartitions bool) {
	t.Helper()
	if len(got) != devices*perDevice {
		t.Errorf("got %d records, want %d", len(got), devices*perDevice)
	}
	type pos struct {
		p   int
		off int64
	}
	seen := map[pos]bool{}
	next := map[string]int{}
	for _, r := range got {
		k := pos{r.centralPart, r.centralOffset}
		if seen[k] {
			t.Errorf("duplicate: central partition %d offset %d (%s seq %d)", k.p, k.off, r.device, r.seq)
			continue
		}
		seen[k] = true
		if r.seq != next[r.device] {
			t.Errorf("%s: seq %d after %d: lost or out of order", r.device, r.seq, next[r.device]-1)
		}
		next[r.device] = r.seq + 1
		if samePartitions && int(r.kafkaPartition) != r.centralPart {
			t.Errorf("%s: Kafka partition %d, central partition %d", r.device, r.kafkaPartition, r.centralPart)
		}
		if want := storage.PartitionFor([]byte(r.device), 4); samePartitions && r.centralPart != want {
			t.Errorf("%s: central partition %d, PartitionFor says %d", r.device, r.centralPart, want)
		}
		var d int
		fmt.Sscanf(r.device, "dev-%d", &d)
		if !r.timestamp.Equal(receiveTime(d, r.seq)) {
			t.Errorf("%s seq %d: timestamp %v, want the receive time %v", r.device, r.seq, r.timestamp, receiveTime(d, r.seq))
		}
		if r.headers["edge"] != "gw-1" || r.headers[HeaderCentralStream] != "readings" || r.headers[HeaderCentralLog] == "" {
			t.Errorf("%s seq %d: headers %v", r.device, r.seq, r.headers)
		}
	}
	for d := range devices {
		dev := fmt.Sprintf("dev-%03d", d)
		if next[dev] != perDevice {
			t.Errorf("%s: last seq %d, want %d", dev, next[dev]-1, perDevice-1)
		}
	}
}

// TestExactlyOnce runs the sink through a restart of itself and of the central log, a retried
// produce error, a produce that Kafka applied but answered as timed out, and a produce error that
// kgo gives up on, then reads the topic back with a consumer group.
func TestExactlyOnce(t *testing.T) {
	for _, tc := range []struct {
		name            string
		kafkaPartitions int
	}{
		{"same partition count", 4},
		{"different partition count", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const devices, perPhase = 20, 100
			c := newCluster(t, tc.kafkaPartitions)
			dir := t.TempDir()
			l, s := openLog(t, dir, 4)
			cfg := Config{Logger: testLogger(t), Brokers: c.ListenAddrs(), Topic: topic, CheckpointInterval: 50 * time.Millisecond,
				MaxRetryBackoff: 100 * time.Millisecond,
				// NOT_LEADER makes kgo refresh metadata, no sooner than this after the last time.
				KafkaOptions: []kgo.Opt{kgo.MetadataMinAge(50 * time.Millisecond)}}

			t0 := time.Now()
			fill(t, s, devices, 0, perPhase)
			r := startSink(t, l, cfg)
			r.waitCaughtUp(t, s)
			t.Logf("first phase done at %v", time.Since(t0))

			// Retried inside the producer: NOT_LEADER is retriable; REQUEST_TIMED_OUT on
			// produce is answered after the broker applied the batch, so the retry must be
			// deduplicated by the idempotent producer.
			retried := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotLeaderForPartition, Count: 2},
				kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.RequestTimedOut, Count: 2})
			fill(t, s, devices, perPhase, 2*perPhase)
			r.waitCaughtUp(t, s)
			t.Logf("retried phase done at %v", time.Since(t0))
			if retried.Hits() == 0 {
				t.Error("retriable faults never hit")
			}

			// INVALID_RECORD is final: the session fails, the sink scans Kafka's tail and resumes.
			fatal := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.InvalidRecord, Count: 1,
				// One Kafka partition only: with a different partition count the other
				// partitions carry later records of the same central partitions on.
				Partitions: []int32{0}})
			fill(t, s, devices, 2*perPhase, 3*perPhase)
			r.waitCaughtUp(t, s)
			if fatal.Hits() != 1 || r.sink.errs.Load() == 0 || r.sink.recoveries.Load() == 0 {
				t.Errorf("fatal fault hits %d, session errors %d, recoveries %d; want the session to fail and recover",
					fatal.Hits(), r.sink.errs.Load(), r.sink.recoveries.Load())
			}
			t.Logf("fatal phase done at %v", time.Since(t0))
			r.stop(t)
			t.Logf("stopped at %v", time.Since(t0))

			// Restart of central: close and reopen the log, with records appended while the
			// sink was down.
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l, s = openLog(t, dir, 4)
			defer l.Close()
			fill(t, s, devices, 3*perPhase, 4*perPhase)
			r = startSink(t, l, cfg)
			r.waitCaughtUp(t, s)
			r.stop(t)

			verify(t, readBack(t, c, devices*4*perPhase), devices, 4*perPhase, tc.kafkaPartitions == 4)
		})
	}
}

const childEnv = "KAFKASINK_TEST_CHILD"

// runChild runs a sink that never checkpoints after its start, until it is killed.
func runChild() int {
	l, err := storage.Open(os.Getenv("KAFKASINK_DIR"), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s, err := New(l, Config{Brokers: strings.Split(os.Getenv("KAFKASINK_BROKERS"), ","), Topic: topic,
		CheckpointInterval: time.Hour, MaxBufferedRecords: 64})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := s.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func kafkaRecords(t testing.TB, c *kfake.Cluster) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	s := &Sink{cfg: Config{Topic: topic}}
	_, ends, err := s.partitionBounds(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ends {
		n += e
	}
	return n
}

// TestCrashBetweenProduceAndCursor kills a sink process with SIGKILL after Kafka acknowledged
// records whose cursor was never stored, which is the window transactions would leave open.
func TestCrashBetweenProduceAndCursor(t *testing.T) {
	const devices, perDevice = 50, 400
	c := newCluster(t, 4)
	dir := t.TempDir()
	l, s := openLog(t, dir, 4)
	fill(t, s, devices, 0, perDevice)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"=1", "KAFKASINK_DIR="+dir, "KAFKASINK_BROKERS="+strings.Join(c.ListenAddrs(), ","))
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for kafkaRecords(t, c) < devices*perDevice/4 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	atKill := kafkaRecords(t, c)
	t.Logf("killed the sink with %d of %d records in Kafka", atKill, devices*perDevice)

	l, s = openLog(t, dir, 4)
	defer l.Close()
	var cursorSum int64
	for p := range 4 {
		off, _ := l.Cursor(DefaultCursor, "readings", p)
		cursorSum += off
	}
	if cursorSum >= atKill {
		t.Fatalf("cursor covers %d records, Kafka %d: the crash window was not exercised", cursorSum, atKill)
	}
	r := startSink(t, l, Config{Brokers: c.ListenAddrs(), Topic: topic})
	r.waitCaughtUp(t, s)
	r.stop(t)
	verify(t, readBack(t, c, devices*perDevice), devices, perDevice, true)
}

func TestPartitionerMatchesStorage(t *testing.T) {
	part := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
	for _, n := range []int{1, 3, 4, 8, 12, 64} {
		for i := range 500 {
			key := fmt.Appendf(nil, "device-%d", i)
			if got, want := part.Partition(&kgo.Record{Key: key}, n), storage.PartitionFor(key, n); got != want {
				t.Fatalf("key %s, %d partitions: Kafka %d, storage %d", key, n, got, want)
			}
		}
	}
}

// TestMissingTopicOnlyDelays starts a sink before its topic exists; it must wait, count the
// failed attempts, and deliver once the topic is created.
func TestMissingTopicOnlyDelays(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l, s := openLog(t, t.TempDir(), 4)
	defer l.Close()
	fill(t, s, 5, 0, 20)
	r := startSink(t, l, Config{Brokers: c.ListenAddrs(), Topic: topic, MaxRetryBackoff: 100 * time.Millisecond})
	deadline := time.Now().Add(10 * time.Second)
	for r.sink.errs.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if r.sink.errs.Load() < 2 || r.sink.up.Load() {
		t.Fatalf("errors %d, up %v: want the sink waiting for the topic", r.sink.errs.Load(), r.sink.up.Load())
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, 4, 1
	req.Topics = append(req.Topics, rt)
	if _, err := req.RequestWith(context.Background(), cl); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	r.waitCaughtUp(t, s)

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r.sink)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			values[mf.GetName()] += v
		}
	}
	if values[MetricRecordsProduced] != 100 || values[MetricRecordsBehind] != 0 || values[MetricUp] != 1 || values[MetricProduceErrors] < 2 {
		t.Errorf("metrics: %v", values)
	}
	r.stop(t)
	verify(t, readBack(t, c, 100), 5, 20, true)
}
