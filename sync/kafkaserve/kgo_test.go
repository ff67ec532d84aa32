package kafkaserve_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-iot/tributary/sync/kafkaserve"
)

// TestKgoConsumesEverything reads a stream with franz-go from the beginning, plain and with zstd
// batches: every record once, in order per device, with its key, headers and timestamp.
func TestKgoConsumesEverything(t *testing.T) {
	for _, compression := range []string{"none", "zstd"} {
		t.Run(compression, func(t *testing.T) {
			log := openLog(t)
			start := time.UnixMilli(1_700_000_000_000)
			fillLog(t, log, 4, 50, 20000, start)
			addr := serve(t, kafkaserve.Config{Log: log, Compression: compression})
			cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics("readings"),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			c := newOrderChecker()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for c.count < 20000 {
				fs := cl.PollFetches(ctx)
				if err := ctx.Err(); err != nil {
					t.Fatalf("after %d records: %v", c.count, err)
				}
				fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
				fs.EachRecord(func(r *kgo.Record) {
					c.add(string(r.Key), r.Value)
					if len(r.Headers) != 2 || r.Headers[0].Key != "edge" || string(r.Headers[0].Value) != "gw-1" {
						t.Fatalf("record %d/%d headers %v", r.Partition, r.Offset, r.Headers)
					}
					if r.Timestamp.Before(start) || r.Timestamp.After(start.Add(time.Second)) {
						t.Fatalf("record %d/%d timestamp %v", r.Partition, r.Offset, r.Timestamp)
					}
				})
			}
			c.check(t, 20000)
		})
	}
}
