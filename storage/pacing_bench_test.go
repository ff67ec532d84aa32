package storage

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

var pacingFor = flag.Duration("pacing.duration", 3*time.Second, "how long each BenchmarkCommitPacing case offers its load")

// BenchmarkCommitPacing offers 200, 2k and 20k records/s from 1,000 writers that each wait for
// their append (devices waiting for their PUBACK), to 2 partitions as the edge has them, under
// three commit policies in one run: at once, the old fixed 1ms linger, and the adaptive commit
// with the edge's 20ms budget. It reports fsyncs/s, records per fsync and the append latency
// p50/p99 (publish to durable, what a device sees before its ack).
//
//	go test ./storage -run '^$' -bench CommitPacing -benchtime 1x
func BenchmarkCommitPacing(b *testing.B) {
	const writers = 1000
	policies := []struct {
		name string
		opts Options
	}{
		{"at-once", Options{}},
		{"linger-1ms", Options{GroupLinger: time.Millisecond}},
		{"budget-20ms", Options{CommitBudget: 20 * time.Millisecond}},
	}
	for _, rate := range []int{200, 2000, 20000} {
		for _, pol := range policies {
			b.Run(fmt.Sprintf("rate=%d/%s", rate, pol.name), func(b *testing.B) {
				for range b.N {
					opts := pol.opts
					l := openTest(b, b.TempDir(), &opts)
					s, err := l.CreateStream("readings", StreamConfig{Partitions: 2})
					if err != nil {
						b.Fatal(err)
					}
					every := time.Duration(writers) * time.Second / time.Duration(rate)
					before := l.Stats()
					start := time.Now()
					stop := start.Add(max(*pacingFor, 2*every)) // every writer appends at least twice
					lat := make([][]time.Duration, writers)
					var wg sync.WaitGroup
					for w := range writers {
						wg.Go(func() {
							next := start.Add(time.Duration(w) * every / writers)
							for i := 0; ; i++ {
								time.Sleep(time.Until(next))
								if time.Now().After(stop) {
									return
								}
								t0 := time.Now()
								if _, _, err := s.Append(context.Background(), reading(fmt.Sprintf("dev-%d", w), i)); err != nil {
									b.Error(err)
									return
								}
								lat[w] = append(lat[w], time.Since(t0))
								next = next.Add(every)
							}
						})
					}
					wg.Wait()
					elapsed := stop.Sub(start) // appends happen only before stop
					st := l.Stats()
					l.Close()
					all := slices.Concat(lat...)
					slices.Sort(all)
					fsyncs := float64(st.Fsyncs - before.Fsyncs)
					b.ReportMetric(float64(len(all))/elapsed.Seconds(), "records/s")
					b.ReportMetric(fsyncs/elapsed.Seconds(), "fsyncs/s")
					b.ReportMetric(float64(len(all))/fsyncs, "records/fsync")
					b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
					b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
				}
			})
		}
	}
}

// BenchmarkCommitPacingClosedLoop is the other side of the budget: writers that wait on the
// disk and nothing else, so any time the committer spends gathering is time they all stand
// still. "devices" are 100 writers each appending its next record as soon as the previous one
// is durable (devices waiting for their PUBACK, with no think time); "window" is one writer
// keeping 100 records in flight with AppendAsync, refilling as they complete (a bridge). Both
// run with 2 partitions, committing at once and under the edge's 20ms budget, in one run: the
// budget's records/s over at-once's is what the pacing costs them (1 means nothing), next to the
// fsyncs it saves.
//
//	go test ./storage -run '^$' -bench CommitPacingClosedLoop -benchtime 20000x
func BenchmarkCommitPacingClosedLoop(b *testing.B) {
	const writers, window = 100, 100
	for _, load := range []string{"devices", "window"} {
		for _, pol := range []struct {
			name string
			opts Options
		}{
			{"at-once", Options{}},
			{"budget-20ms", Options{CommitBudget: 20 * time.Millisecond}},
		} {
			b.Run(load+"/"+pol.name, func(b *testing.B) {
				opts := pol.opts
				l := openTest(b, b.TempDir(), &opts)
				defer l.Close()
				s, err := l.CreateStream("readings", StreamConfig{Partitions: 2})
				if err != nil {
					b.Fatal(err)
				}
				before := l.Stats()
				b.ResetTimer()
				switch load {
				case "devices":
					per := max(b.N/writers, 1)
					var wg sync.WaitGroup
					for w := range writers {
						wg.Go(func() {
							for i := range per {
								if _, _, err := s.Append(context.Background(), reading(fmt.Sprintf("dev-%d", w), i)); err != nil {
									b.Error(err)
									return
								}
							}
						})
					}
					wg.Wait()
				case "window":
					slots := make(chan struct{}, window)
					var wg sync.WaitGroup
					for i := range b.N {
						slots <- struct{}{}
						wg.Add(1)
						rec := reading(fmt.Sprintf("sensor-%d", i%window), i)
						s.Partition(s.PartitionFor(rec.Key)).AppendAsync(rec, func(_ int64, err error) {
							if err != nil {
								b.Error(err)
							}
							<-slots
							wg.Done()
						})
					}
					wg.Wait()
				}
				st := l.Stats()
				fsyncs := float64(st.Fsyncs - before.Fsyncs)
				records := float64(st.RecordsAppended - before.RecordsAppended)
				b.ReportMetric(records/b.Elapsed().Seconds(), "records/s")
				b.ReportMetric(fsyncs/b.Elapsed().Seconds(), "fsyncs/s")
				b.ReportMetric(records/fsyncs, "records/fsync")
			})
		}
	}
}
