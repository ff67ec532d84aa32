package central_test

import (
	"context"
	"flag"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-iot/tributary/internal/testcpu"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/protocol"
)

var (
	consumeRecords = flag.Int("consume-records", 1_000_000, "readings BenchmarkConsumeKafka reads from each source")
	consumeRounds  = flag.Int("consume-rounds", 3, "BenchmarkConsumeKafka's alternating reads of the listener and kfake (the median of each is reported)")
)

// BenchmarkConsumeKafka reads the same readings three ways in one run and reports records/s of
// each: a franz-go consumer on central's Kafka listener, the HTTP consume API's client on
// central, and a franz-go consumer on franz-go's in-process kfake cluster holding the same
// records (the anchor: a Kafka broker that serves produced batches as stored). The ratios
// kafka/kfake and kafka/http are the figures to compare across machines. On a shared machine the
// load changes from second to second, so the listener and kfake are read in turn
// -consume-rounds times and the median of each is reported (the HTTP API, 5-10x slower, once),
// with the median of the rounds' own ratios (kafka/kfake-paired) and the process's CPU per 1M
// records while reading each.
//
//	go test ./sync/central -run '^$' -bench ConsumeKafka -benchtime 1x
func BenchmarkConsumeKafka(b *testing.B) {
	n := *consumeRecords
	dir := b.TempDir()
	log, err := storage.Open(dir, &storage.Options{SegmentBytes: 16 << 20})
	if err != nil {
		b.Fatal(err)
	}
	st, err := log.CreateStream("readings", storage.StreamConfig{Partitions: 8})
	if err != nil {
		b.Fatal(err)
	}
	f := newFleet(300, 11)
	now := time.Now()
	recs := make([]storage.Record, 0, 50000)
	var all []*kgo.Record
	for i := 0; i < n; i++ {
		r := f.next(now.Add(time.Duration(i) * time.Microsecond))
		// What central stores: the edge's record plus provenance headers.
		r.Headers = append(r.Headers, storage.Header{Key: protocol.ProvEdge, Value: []byte("gw-1")},
			storage.Header{Key: protocol.ProvEdgePartition, Value: []byte("0")},
			storage.Header{Key: protocol.ProvEdgeOffset, Value: []byte(strconv.Itoa(i))},
			storage.Header{Key: protocol.ProvCentralTime, Value: []byte(strconv.FormatInt(now.UnixMilli(), 10))})
		recs = append(recs, r)
		kr := &kgo.Record{Topic: "readings", Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
		for _, h := range r.Headers {
			kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		all = append(all, kr)
		if len(recs) == cap(recs) {
			appendRecords(b, st, recs)
			recs = recs[:0]
		}
	}
	appendRecords(b, st, recs)
	waitSealed(b, log)
	log.Close()

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(8, "readings"))
	if err != nil {
		b.Fatal(err)
	}
	defer cluster.Close()
	ctx := context.Background()
	prod, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchMaxBytes(1<<20), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < len(all); i += 50000 {
		if err := prod.ProduceSync(ctx, all[i:min(i+50000, len(all))]...).FirstErr(); err != nil {
			b.Fatal(err)
		}
	}
	prod.Close()
	all = nil

	cfg := central.Config{DataDir: dir}
	url, kaddr, stop := runCentralKafka(b, cfg)
	defer stop()

	// kafkaRead returns records/s and the process's CPU seconds per 1M records (client and
	// server, which share the process) while reading from brokers. The client's goroutines carry
	// the pprof label source=name, so a -cpuprofile tells the two clients apart (-tagfocus);
	// the servers' goroutines are told apart by their packages.
	kafkaRead := func(name string, brokers ...string) (rate, cpu float64) {
		pprof.Do(ctx, pprof.Labels("source", name), func(ctx context.Context) {
			reads := &fetchReads{}
			defer func() {
				b.Logf("%s: %d fetch responses, %.0f MiB, %.0f ms reading them (waiting for the server included)", name, reads.n.Load(), float64(reads.bytes.Load())/(1<<20), float64(reads.wait.Load())/1e6)
			}()
			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("readings"),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.WithHooks(reads))
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			start, cpu0 := time.Now(), testcpu.Self()
			got := 0
			for got < n {
				fs := cl.PollFetches(ctx)
				if err := fs.Err0(); err != nil {
					b.Fatal(err)
				}
				fs.EachRecord(func(*kgo.Record) { got++ })
			}
			rate = float64(got) / time.Since(start).Seconds()
			cpu = (testcpu.Self() - cpu0).Seconds() / float64(got) * 1e6
		})
		return rate, cpu
	}
	httpRead := func() float64 {
		cl := &consume.Client{BaseURL: url}
		start := time.Now()
		got := 0
		err := cl.Consume(ctx, consume.Options{Stream: "readings", FromBeginning: true}, func(consume.Message) error {
			got++
			return nil
		})
		if err != nil || got != n {
			b.Fatalf("HTTP consume read %d of %d: %v", got, n, err)
		}
		return float64(got) / time.Since(start).Seconds()
	}
	b.ResetTimer()
	var kafka, http, fake, kafkaCPU, fakeCPU, paired float64
	for i := 0; i < b.N; i++ {
		var ks, fs, kc, fc, ratios []float64
		for r := 0; r < max(*consumeRounds, 1); r++ {
			rate, cpu := kafkaRead("listener", kaddr)
			ks, kc = append(ks, rate), append(kc, cpu)
			rate, cpu = kafkaRead("kfake", cluster.ListenAddrs()...)
			fs, fc = append(fs, rate), append(fc, cpu)
			ratios = append(ratios, ks[r]/fs[r])
		}
		paired += median(ratios)
		b.Logf("rounds, records/s: listener %.0f, kfake %.0f", ks, fs)
		b.Logf("rounds, process CPU s per 1M records: listener %.2f, kfake %.2f", kc, fc)
		kafka += median(ks)
		fake += median(fs)
		kafkaCPU += median(kc)
		fakeCPU += median(fc)
		http += httpRead()
	}
	k, h, fk := kafka/float64(b.N), http/float64(b.N), fake/float64(b.N)
	b.ReportMetric(k, "kafka-records/s")
	b.ReportMetric(h, "http-records/s")
	b.ReportMetric(fk, "kfake-records/s")
	b.ReportMetric(k/fk, "kafka/kfake")
	// The median of each round's listener/kfake, read one right after the other: on a machine
	// whose load swings between rounds it moves less than the ratio of the medians.
	b.ReportMetric(paired/float64(b.N), "kafka/kfake-paired")
	b.ReportMetric(k/h, "kafka/http")
	// CPU of the whole process (consumer and server) per 1M records read: on a loaded machine
	// it moves less than the rates, and it is what the two share on a small box.
	b.ReportMetric(kafkaCPU/float64(b.N), "kafka-cpu-s/1M")
	b.ReportMetric(fakeCPU/float64(b.N), "kfake-cpu-s/1M")
}

// fetchReads counts a client's Fetch responses and the time it spent reading them, from the
// request's end to the response's last byte: the server's latency and the transfer.
type fetchReads struct{ n, bytes, wait atomic.Int64 }

func (f *fetchReads) OnBrokerRead(_ kgo.BrokerMetadata, key int16, bytes int, _, timeToRead time.Duration, _ error) {
	if key == 1 {
		f.n.Add(1)
		f.bytes.Add(int64(bytes))
		f.wait.Add(int64(timeToRead))
	}
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
