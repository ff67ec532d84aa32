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
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(8, "tributary-readings"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()

	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- central.Run(ctx, central.Config{DataDir: cdir, Listen: "127.0.0.1:0", Partitions: 8,
			Sinks: central.Sinks{Kafka: &kafkasink.Config{Brokers: cluster.ListenAddrs(), Topic: "tributary-readings",
				CheckpointInterval: 100 * time.Millisecond}},
			Ready: func(a string) { addr <- a }})
	}()
	var url string
	select {
	case a := <-addr:
		url = "http://" + a
	case err := <-done:
		t.Fatalf("central: %v", err)
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("central: %v", err)
		}
	}()

	edge, st := openEdge(t, 4)
	defer edge.Close()
	f := newFleet(50, 7)
	const n = 3000
	appendAll(t, st, f, n)
	_, stopFwd := runForwarder(t, edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token})
	defer stopFwd()
	waitCaughtUp(t, url, n, 30*time.Second)

	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics("tributary-readings"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
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

func seqOf(t *testing.T, v []byte) int64 {
	t.Helper()
	var r reading
	if err := json.Unmarshal(v, &r); err != nil {
		t.Fatalf("Kafka value %q: %v", v, err)
	}
	return r.Seq
}
