package central_test

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/forward"
)

var (
	catchUpTrace    = flag.String("catchup-trace", "", "write an execution trace of BenchmarkCatchUp's timed part to this file")
	catchUpInFlight = flag.Int("catchup-inflight", 0, "chunks in flight per lane in BenchmarkCatchUp (0: the forwarder's default)")
	catchUpParts    = flag.Int("catchup-partitions", 4, "partitions of the edge stream in BenchmarkCatchUp (the edge agent's default is 2)")
)

var catchUpProfile = flag.String("catchup-cpuprofile", "", "write a CPU profile of BenchmarkCatchUp's timed part (not its backlog setup) to this file")

// profileCatchUp profiles only the catch-up itself: -cpuprofile would mostly show the setup that
// generates and appends the backlog.
func profileCatchUp(b *testing.B) func() {
	if *catchUpTrace != "" {
		f, err := os.Create(*catchUpTrace)
		if err != nil {
			b.Fatal(err)
		}
		if err := trace.Start(f); err != nil {
			b.Fatal(err)
		}
		return func() {
			trace.Stop()
			f.Close()
		}
	}
	if *catchUpProfile == "" {
		return func() {}
	}
	f, err := os.Create(*catchUpProfile)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

var backlog = flag.Int("backlog", 1_000_000, "readings in BenchmarkCatchUp's backlog (5000000 for the full figure)")

// BenchmarkCatchUp forwards a backlog of realistic readings (300 devices, ~120-byte JSON, slowly
// varying values) from an edge log to central over loopback HTTP, and reports readings/s and
// wire bytes against raw payload bytes.
func BenchmarkCatchUp(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		cdir := b.TempDir()
		token := addEdgeTB(b, cdir, "gw-1")
		url, stop := startCentralTB(b, cdir)
		edge, st := openEdgeBench(b, *catchUpParts)
		f := newFleet(300, 9)
		var payload int64
		for done := 0; done < *backlog; done += 10000 {
			n := min(10000, *backlog-done)
			recs := make([]storage.Record, n)
			now := time.Now()
			for j := range recs {
				recs[j] = f.next(now)
				payload += int64(len(recs[j].Value))
			}
			appendRecords(b, st, recs)
		}
		waitSealed(b, edge)
		b.StartTimer()
		stopProf := profileCatchUp(b)
		start := time.Now()
		fwd, stopFwd := runForwarder(b, edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token, InFlight: *catchUpInFlight})
		waitCaughtUpTB(b, url, int64(*backlog), 10*time.Minute)
		elapsed := time.Since(start)
		stopProf()
		b.StopTimer()
		var wire, raw int64
		for _, s := range fwd.Status() {
			wire += s.WireBytes
			raw += s.RawBytes
		}
		stopFwd()
		stop()
		edge.Close()
		b.ReportMetric(float64(*backlog)/elapsed.Seconds(), "readings/s")
		b.ReportMetric(float64(wire)/float64(*backlog), "wire-B/reading")
		b.ReportMetric(float64(payload)/float64(*backlog), "payload-B/reading")
		b.ReportMetric(float64(payload)/float64(wire), "payload/wire")
		b.ReportMetric(float64(raw)/float64(wire), "raw/wire")
	}
}

// BenchmarkLiveLatency appends readings at 10k/s for a few seconds while a consumer follows the
// merged stream through the consume API (long-poll), and reports append-to-consumer latency.
func BenchmarkLiveLatency(b *testing.B) {
	const rate, seconds = 10000, 4
	for i := 0; i < b.N; i++ {
		cdir := b.TempDir()
		token := addEdgeTB(b, cdir, "gw-1")
		url, stop := startCentralTB(b, cdir)
		edge, st := openEdgeBench(b, 4)
		f := newFleet(300, 11)
		fwd, stopFwd := runForwarder(b, edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token})
		// The central stream exists once the first readings arrive; prime it.
		appendRecords(b, st, []storage.Record{f.next(time.Now())})
		waitCaughtUpTB(b, url, 1, 10*time.Second)

		var mu sync.Mutex
		sent := map[[2]int64]time.Time{}
		var lat []time.Duration
		ctx, cancel := context.WithCancel(context.Background())
		consumed := make(chan error, 1)
		devIndex := map[string]int64{}
		for j, d := range f.devices {
			devIndex[d] = int64(j)
		}
		go func() {
			cl := &consume.Client{BaseURL: url}
			consumed <- cl.Consume(ctx, consume.Options{Follow: true}, func(m consume.Message) error {
				now := time.Now()
				var r reading
				json.Unmarshal(m.Payload(), &r)
				mu.Lock()
				if t0, ok := sent[[2]int64{devIndex[r.Device], r.Seq}]; ok {
					lat = append(lat, now.Sub(t0))
				}
				mu.Unlock()
				return nil
			})
		}()
		time.Sleep(200 * time.Millisecond) // let the consumer reach the end
		b.ResetTimer()
		tick := time.NewTicker(time.Millisecond)
		end := time.Now().Add(seconds * time.Second)
		total := 0
		for time.Now().Before(end) {
			<-tick.C
			due := int(time.Since(end.Add(-seconds*time.Second)).Seconds()*rate) - total
			for k := 0; k < due; k++ {
				rec := f.next(time.Now())
				var r reading
				json.Unmarshal(rec.Value, &r)
				mu.Lock()
				sent[[2]int64{devIndex[r.Device], r.Seq}] = time.Now()
				mu.Unlock()
				st.AppendAsync(rec, func(int, int64, error) {})
				total++
			}
		}
		tick.Stop()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			n := len(lat)
			mu.Unlock()
			if n >= total {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		b.StopTimer()
		cancel()
		<-consumed
		var wire, raw int64
		for _, s := range fwd.Status() {
			wire += s.WireBytes
			raw += s.RawBytes
		}
		stopFwd()
		stop()
		edge.Close()
		slices.Sort(lat)
		if len(lat) < total {
			b.Fatalf("consumer saw %d of %d readings", len(lat), total)
		}
		q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
		b.ReportMetric(q(0.5), "p50-ms")
		b.ReportMetric(q(0.99), "p99-ms")
		b.ReportMetric(float64(total)/seconds, "readings/s")
		b.ReportMetric(float64(raw)/float64(wire), "raw/wire")
	}
}

// waitSealed waits until the edge's sealer has compressed the backlog's full segments, so the
// catch-up timing measures forwarding and central, not the edge's ingest work still running.
func waitSealed(b *testing.B, log *storage.Log) {
	last, stable := int64(-1), 0
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && stable < 3; {
		n := log.Stats().SealedSegments
		if n == last {
			stable++
		} else {
			last, stable = n, 0
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func openEdgeBench(b *testing.B, partitions int) (*storage.Log, *storage.Stream) {
	log, err := storage.Open(b.TempDir(), &storage.Options{SegmentBytes: 16 << 20})
	if err != nil {
		b.Fatal(err)
	}
	st, err := log.CreateStream("readings", storage.StreamConfig{Partitions: partitions})
	if err != nil {
		b.Fatal(err)
	}
	return log, st
}

func appendRecords(tb testing.TB, st *storage.Stream, recs []storage.Record) {
	var wg sync.WaitGroup
	wg.Add(len(recs))
	for _, r := range recs {
		st.AppendAsync(r, func(_ int, _ int64, err error) {
			if err != nil {
				tb.Error(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
}
