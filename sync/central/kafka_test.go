package central_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/forward"
	"github.com/tributary-iot/tributary/sync/kafkasink"
)

// TestCentralKafkaSink runs central with `sinks: kafka:` against an in-process Kafka (kfake):
// readings forwarded from an edge reach the Kafka topic once each, keyed by device, on the
// partition the device has at central, in per-device order.
func TestCentralKafkaSink(t *testing.T) {
	cluster, url, token := runCentralKafkaSink(t, 8, kafkasink.Config{Topic: "tributary-readings"})

	edge, st := openEdge(t, 4)
	defer edge.Close()
	f := newFleet(50, 7)
	const n = 3000
	appendAll(t, st, f, n)
	_, stopFwd := runForwarder(t, edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token})
	defer stopFwd()
	waitCaughtUp(t, url, n, 30*time.Second)

	cl := kafkaReader(t, cluster, "tributary-readings")
	defer cl.Close()
	seen := map[string]int64{}
	got := 0
	deadline := time.Now().Add(30 * time.Second)
	for got < n && time.Now().Before(deadline) {
		pctx, pcancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(pctx)
		pcancel()
		fs.EachRecord(func(r *kgo.Record) {
			got++
			dev := string(r.Key)
			if want := storage.PartitionFor(r.Key, 8); int(r.Partition) != want {
				t.Errorf("device %s on Kafka partition %d, central partition %d", dev, r.Partition, want)
			}
			var seq int64
			for _, h := range r.Headers {
				if h.Key == "edge-offset" && len(h.Value) == 0 {
					t.Errorf("empty provenance header")
				}
			}
			seq = seqOf(t, r.Value)
			if seq != seen[dev]+1 {
				t.Fatalf("device %s: seq %d after %d in Kafka", dev, seq, seen[dev])
			}
			seen[dev] = seq
		})
	}
	if got != n {
		t.Fatalf("Kafka holds %d records, want %d", got, n)
	}
}

// runCentralKafkaSink starts an in-process Kafka (kfake) whose topic sink.Topic has partitions
// partitions, and central with as many, an edge gw-1 registered, and its Kafka sink (sink, with
// kfake's brokers and, unless set, a 100ms checkpoint interval) producing to it. It returns the
// cluster, central's URL and gw-1's token; central stops, then the cluster, when the test ends.
func runCentralKafkaSink(t *testing.T, partitions int, sink kafkasink.Config) (cluster *kfake.Cluster, url, token string) {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(partitions), sink.Topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	cdir := t.TempDir()
	token = addEdge(t, cdir, "gw-1")
	sink.Brokers = cluster.ListenAddrs()
	if sink.CheckpointInterval == 0 {
		sink.CheckpointInterval = 100 * time.Millisecond
	}
	addr, stop := runCentral(t, central.Config{DataDir: cdir, Partitions: partitions, Sinks: central.Sinks{Kafka: &sink}})
	t.Cleanup(stop)
	return cluster, "http://" + addr, token
}

// kafkaReader consumes topic from its start; the caller closes it.
func kafkaReader(t *testing.T, cluster *kfake.Cluster, topic string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func seqOf(t *testing.T, v []byte) int64 {
	t.Helper()
	var r reading
	if err := json.Unmarshal(v, &r); err != nil {
		t.Fatalf("Kafka value %q: %v", v, err)
	}
	return r.Seq
}
