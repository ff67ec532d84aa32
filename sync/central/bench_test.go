package central_test

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testcpu"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/central"
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

var catchUpAB = flag.Bool("catchup-console-ab", false, "BenchmarkCatchUp alternates central's console on and off per iteration (run with -benchtime 6x or more) and reports each side's median")

// BenchmarkCatchUp forwards a backlog of realistic readings (300 devices, ~120-byte JSON, slowly
// varying values) from an edge log to central over loopback HTTP, and reports readings/s, the
// process's CPU per reading (edge and central both) and wire bytes against raw payload bytes.
// BENCH_CONSOLE=off runs central without its console; -catchup-console-ab alternates both in
// one run.
func BenchmarkCatchUp(b *testing.B) {
	var rounds [2][]catchUpRound // console on, off
	var last catchUpRound
	for i := 0; i < b.N; i++ {
		off := os.Getenv("BENCH_CONSOLE") == "off"
		if *catchUpAB {
			off = i%2 == 1
		}
		last = catchUpOnce(b, off)
		side := 0
		if off {
			side = 1
		}
		rounds[side] = append(rounds[side], last)
	}
	if *catchUpAB {
		// One line per side: the benchmark's log shows only its first lines.
		for side, name := range []string{"on", "off"} {
			var rs []string
			for _, r := range rounds[side] {
				rs = append(rs, fmt.Sprintf("%.0fk/s %.2fµs", r.rate/1000, r.cpuPerReading))
			}
			b.Logf("console %s, rounds in order (readings/s, CPU-µs/reading): %s", name, strings.Join(rs, ", "))
		}
		on, off := medianRound(rounds[0]), medianRound(rounds[1])
		b.ReportMetric(on.rate, "on-readings/s")
		b.ReportMetric(off.rate, "off-readings/s")
		b.ReportMetric(on.rate/off.rate, "on/off")
		if on.cpuPerReading > 0 {
			b.ReportMetric(on.cpuPerReading, "on-CPU-µs/reading")
			b.ReportMetric(off.cpuPerReading, "off-CPU-µs/reading")
		}
	} else {
		b.ReportMetric(last.rate, "readings/s")
		if last.cpuPerReading > 0 {
			b.ReportMetric(last.cpuPerReading, "CPU-µs/reading")
		}
	}
	b.ReportMetric(last.wirePerReading, "wire-B/reading")
	b.ReportMetric(last.payloadPerReading, "payload-B/reading")
	b.ReportMetric(last.payloadPerReading/last.wirePerReading, "payload/wire")
	b.ReportMetric(last.rawPerWire, "raw/wire")
}

type catchUpRound struct {
	rate, cpuPerReading, wirePerReading, payloadPerReading, rawPerWire float64
}

// medianRound returns the round of median rate (of the lower middle for an even count), and the
// median CPU per reading.
func medianRound(rs []catchUpRound) catchUpRound {
	if len(rs) == 0 {
		return catchUpRound{}
	}
	byRate := slices.Clone(rs)
	slices.SortFunc(byRate, func(a, b catchUpRound) int { return cmp.Compare(a.rate, b.rate) })
	m := byRate[(len(byRate)-1)/2]
	cpus := make([]float64, len(rs))
	for i, r := range rs {
		cpus[i] = r.cpuPerReading
	}
	slices.Sort(cpus)
	m.cpuPerReading = cpus[(len(cpus)-1)/2]
	return m
}

func catchUpOnce(b *testing.B, consoleOff bool) catchUpRound {
	b.StopTimer()
	cdir := b.TempDir()
	token := addEdgeTB(b, cdir, "gw-1")
	addr, stop := runCentral(b, central.Config{DataDir: cdir, Fsync: os.Getenv("BENCH_FSYNC"), Console: central.ConsoleOptions{Off: consoleOff}})
	url := "http://" + addr
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
	start, cpu := time.Now(), testcpu.Self()
	fwd, stopFwd := runForwarder(b, edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token, InFlight: *catchUpInFlight})
	waitCaughtUpTB(b, url, int64(*backlog), 10*time.Minute)
	elapsed, cpu := time.Since(start), testcpu.Self()-cpu
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
	n := float64(*backlog)
	return catchUpRound{rate: n / elapsed.Seconds(), cpuPerReading: float64(cpu.Microseconds()) / n,
		wirePerReading: float64(wire) / n, payloadPerReading: float64(payload) / n, rawPerWire: float64(raw) / float64(wire)}
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
