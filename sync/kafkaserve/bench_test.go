package kafkaserve_test

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tributary-iot/tributary/internal/testcpu"
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

// BenchmarkFetchServe measures the serving path alone: raw Fetch requests that read a 200k-record
// stream from the start, whose responses are framed but whose records are not decoded, so the
// client's record decoding (most of BenchmarkFetch) is left out.
func BenchmarkFetchServe(b *testing.B) {
	log := openLog(b)
	const n, parts = 200000, 8
	fillLog(b, log, parts, 300, n, time.Now())
	addr := serve(b, kafkaserve.Config{Log: log})
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	b.ResetTimer()
	cpu := testcpu.Self()
	var bytes int
	for i := 0; i < b.N; i++ {
		next := make([]int64, parts)
		for got := 0; got < n; {
			req := kmsg.NewPtrFetchRequest()
			req.Version, req.MaxWaitMillis, req.MaxBytes = 11, 100, 50<<20
			rt := kmsg.NewFetchRequestTopic()
			rt.Topic = "readings"
			for p := range next {
				rp := kmsg.NewFetchRequestTopicPartition()
				rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = int32(p), next[p], 1<<20
				rt.Partitions = append(rt.Partitions, rp)
			}
			req.Topics = append(req.Topics, rt)
			resp, err := req.RequestWith(ctx, cl)
			if err != nil {
				b.Fatal(err)
			}
			for _, rp := range resp.Topics[0].Partitions {
				if rp.ErrorCode != 0 {
					b.Fatalf("partition %d: error %d", rp.Partition, rp.ErrorCode)
				}
				bytes += len(rp.RecordBatches)
				for raw := rp.RecordBatches; len(raw) >= 61; {
					base := int64(binary.BigEndian.Uint64(raw))
					l := int(binary.BigEndian.Uint32(raw[8:]))
					cnt := int(binary.BigEndian.Uint32(raw[57:]))
					got += int(base + int64(cnt) - max(base, next[rp.Partition]))
					next[rp.Partition] = base + int64(cnt)
					raw = raw[12+l:]
				}
			}
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(bytes)/float64(n*b.N), "bytes/record")
	// The process's CPU: the serving path, and a client that only frames the responses.
	if c := testcpu.Self() - cpu; c > 0 {
		b.ReportMetric(float64(c.Nanoseconds())/float64(n*b.N), "cpu-ns/record")
	}
}
