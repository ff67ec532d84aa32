//go:build unix

package storage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// sensorFleet makes n realistic readings: about 120-byte JSON payloads from devices whose
// values drift slowly, in arrival order, each with the topic header the edge adds.
func sensorFleet(n, devices int) []Record {
	rng := rand.New(rand.NewPCG(1, 2))
	type state struct{ temp, hum, pres, bat float64 }
	st := make([]state, devices)
	for i := range st {
		st[i] = state{18 + rng.Float64()*8, 35 + rng.Float64()*30, 1000 + rng.Float64()*25, 3.6 + rng.Float64()*0.5}
	}
	seq := make([]int, devices)
	recs := make([]Record, n)
	ts := int64(1_700_000_000_000)
	for i := range recs {
		d := rng.IntN(devices)
		s := &st[d]
		s.temp += (rng.Float64() - 0.5) * 0.05
		s.hum += (rng.Float64() - 0.5) * 0.1
		s.pres += (rng.Float64() - 0.5) * 0.02
		s.bat -= rng.Float64() * 0.0001
		seq[d]++
		ts += int64(rng.IntN(4))
		dev := fmt.Sprintf("dev-%04d", d)
		recs[i] = Record{
			Key: []byte(dev),
			Value: fmt.Appendf(nil, `{"device":"%s","seq":%d,"ts":%d,"temp":%.2f,"hum":%.1f,"pres":%.2f,"bat":%.3f,"rssi":%d,"fw":"2.1.%d"}`,
				dev, seq[d], ts, s.temp, s.hum, s.pres, s.bat, -60-d%25, d%3),
			Timestamp: time.UnixMilli(ts),
			Headers:   []Header{{"topic", []byte("devices/" + dev + "/readings")}},
		}
	}
	return recs
}

func TestSensorFleetRecordsAreAbout120Bytes(t *testing.T) {
	var total int
	recs := sensorFleet(1000, 300)
	for _, r := range recs {
		total += len(r.Value)
	}
	if avg := total / len(recs); avg < 110 || avg > 130 {
		t.Fatalf("average payload %d bytes, want about 120", avg)
	}
}

// benchDir returns a directory on a real disk: fsync on tmpfs costs nothing and would make the
// group-commit figures a lie, so when the temp dir is tmpfs the benchmark uses the folder above
// the working directory instead.
func benchDir(b *testing.B) string {
	b.Helper()
	const tmpfsMagic = 0x01021994
	var fs syscall.Statfs_t
	if err := syscall.Statfs(os.TempDir(), &fs); err == nil && fs.Type != tmpfsMagic {
		return b.TempDir()
	}
	wd, err := os.Getwd()
	if err != nil {
		b.Fatal(err)
	}
	dir, err := os.MkdirTemp(filepath.Dir(wd), ".storage-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	b.Logf("temp dir is tmpfs; benchmarking in %s", dir)
	return dir
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

func reportThroughput(b *testing.B, records int, recs []Record) {
	var bytes int
	for i := 0; i < records; i++ {
		bytes += len(recs[i%len(recs)].Value)
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(records)/sec, "records/s")
	b.ReportMetric(float64(bytes)/sec, "bytes/s")
	b.ReportMetric(0, "ns/op") // per-op time means little when one op is one record among 1,000 writers
}

// BenchmarkAppendGroupCommit1000Writers: 1,000 goroutines, each appending and waiting for its
// durable acknowledgement (FsyncGroup), as 1,000 QoS 1 devices would.
func BenchmarkAppendGroupCommit1000Writers(b *testing.B) {
	recs := sensorFleet(1<<16, 500)
	for _, parts := range []int{1, 4} {
		b.Run(fmt.Sprintf("partitions=%d", parts), func(b *testing.B) {
			l, err := Open(benchDir(b), &Options{Fsync: FsyncGroup})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			s, _ := l.CreateStream("bench", StreamConfig{Partitions: parts})
			const writers = 1000
			var next atomic.Int64
			lats := make([][]time.Duration, writers)
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						start := time.Now()
						if _, _, err := s.Append(context.Background(), recs[i%int64(len(recs))]); err != nil {
							b.Error(err)
							return
						}
						lats[w] = append(lats[w], time.Since(start))
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			reportThroughput(b, b.N, recs)
			b.ReportMetric(float64(l.Stats().Fsyncs)/b.Elapsed().Seconds(), "fsyncs/s")
			reportLatency(b, slices.Concat(lats...))
		})
	}
}

// BenchmarkAppendPipelined: one goroutine pipelining appends with AppendAsync; acks arrive by
// callback after the group fsync.
func BenchmarkAppendPipelined(b *testing.B) {
	recs := sensorFleet(1<<16, 500)
	l, err := Open(benchDir(b), &Options{Fsync: FsyncGroup})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	s, _ := l.CreateStream("bench", StreamConfig{Partitions: 4})
	var wg sync.WaitGroup
	var failed atomic.Int64
	done := func(_ int, _ int64, err error) {
		if err != nil {
			failed.Add(1)
		}
		wg.Done()
	}
	b.ResetTimer()
	wg.Add(b.N)
	for i := 0; i < b.N; i++ {
		s.AppendAsync(recs[i%len(recs)], done)
	}
	wg.Wait()
	b.StopTimer()
	if failed.Load() > 0 {
		b.Fatalf("%d appends failed", failed.Load())
	}
	reportThroughput(b, b.N, recs)
	b.ReportMetric(float64(l.Stats().Fsyncs)/b.Elapsed().Seconds(), "fsyncs/s")
}

// sealedLog appends n fleet records to one partition without fsync and waits until every
// rolled segment is sealed.
func sealedLog(b *testing.B, dir string, n int) (*Log, *Partition, []Record) {
	recs := sensorFleet(n, 300)
	l, err := Open(dir, &Options{Fsync: FsyncNone, SegmentBytes: 4 << 20})
	if err != nil {
		b.Fatal(err)
	}
	s, _ := l.CreateStream("bench", StreamConfig{Partitions: 1})
	p := s.Partition(0)
	var wg sync.WaitGroup
	wg.Add(len(recs))
	for _, r := range recs {
		p.AppendAsync(r, func(int64, error) { wg.Done() })
	}
	wg.Wait()
	p.rollReq.Store(true)
	p.kick <- struct{}{}
	deadline := time.Now().Add(time.Minute)
	for sealedCount(p) < len(p.snapshot())-1 || p.active.size.Load() > 0 {
		if time.Now().After(deadline) {
			b.Fatal("sealing did not finish in a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return l, p, recs
}

// BenchmarkScanSealed reads records from sealed segments with a Reader.
func BenchmarkScanSealed(b *testing.B) {
	const n = 200_000
	l, p, recs := sealedLog(b, benchDir(b), n)
	defer l.Close()
	b.ResetTimer()
	r := p.NewReader(0, nil)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		e, err := r.Next(ctx)
		if err == io.EOF {
			r = p.NewReader(0, nil)
			e, err = r.Next(ctx)
		}
		if err != nil || e.Gap != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportThroughput(b, b.N, recs)
}

// BenchmarkSealedSize reports stored/raw for sealed segments of fleet data, next to zstd -3 of
// the same raw bytes as one file (the zstd command when installed, and klauspost's level 3).
func BenchmarkSealedSize(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if i > 0 {
			continue // one measurement; -benchtime=1x is enough
		}
		dir := benchDir(b)
		l, p, _ := sealedLog(b, dir, 200_000)
		var raw, stored int64
		var rawBytes bytes.Buffer
		for _, si := range p.Segments() {
			if !si.Sealed {
				continue
			}
			raw += si.RawBytes
			stored += si.StoredBytes
			zst, err := os.ReadFile(filepath.Join(p.dir, si.File))
			if err != nil {
				b.Fatal(err)
			}
			d, err := zstd.NewReader(bytes.NewReader(zst))
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(&rawBytes, d)
			d.Close()
		}
		l.Close()
		if int64(rawBytes.Len()) != raw {
			b.Fatalf("sealed segments decode to %d bytes, index says %d", rawBytes.Len(), raw)
		}
		b.ReportMetric(float64(stored)/float64(raw), "stored/raw")
		b.ReportMetric(float64(stored)/200_000, "stored-bytes/record")
		kz, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
		klaus := len(kz.EncodeAll(rawBytes.Bytes(), nil))
		kz.Close()
		b.ReportMetric(float64(klaus)/float64(raw), "klauspost-level3/raw")
		b.ReportMetric(float64(stored)/float64(klaus), "stored/klauspost-level3")
		if _, err := exec.LookPath("zstd"); err == nil {
			cmd := exec.Command("zstd", "-3", "-c", "-q")
			cmd.Stdin = bytes.NewReader(rawBytes.Bytes())
			out, err := cmd.Output()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(len(out))/float64(raw), "zstd-3/raw")
			b.ReportMetric(float64(stored)/float64(len(out)), "stored/zstd-3")
		} else {
			b.Log("zstd command not installed (Debian package zstd): compared with klauspost's level 3 only")
		}
	}
	b.ReportMetric(0, "ns/op")
}
