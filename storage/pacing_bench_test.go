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
