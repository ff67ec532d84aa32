package kafkaserve_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-iot/tributary/sync/kafkaserve"
)

// BenchmarkFetch reads a 200k-record stream with franz-go from the listener, for profiling the
// serving path on its own (sync/central's BenchmarkConsumeKafka compares it with its peers).
func BenchmarkFetch(b *testing.B) {
	for _, compression := range []string{"none", "zstd"} {
		b.Run(compression, func(b *testing.B) {
			log := openLog(b)
			const n = 200000
			fillLog(b, log, 8, 300, n, time.Now())
			addr := serve(b, kafkaserve.Config{Log: log, Compression: compression})
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics("readings"),
					kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
				if err != nil {
					b.Fatal(err)
				}
				for got := 0; got < n; {
					fs := cl.PollFetches(context.Background())
					if err := fs.Err0(); err != nil {
						b.Fatal(err)
					}
					got += fs.NumRecords()
				}
				cl.Close()
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
