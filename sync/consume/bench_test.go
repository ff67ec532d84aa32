package consume

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
)

// centralRecord is a reading as central stores it: the edge agent's headers and provenance.
func centralRecord(i int, now time.Time) storage.Record {
	dev := fmt.Sprintf("sensor-%04d", i%200)
	ms := []byte(strconv.FormatInt(now.UnixMilli(), 10))
	return storage.Record{Key: []byte(dev), Timestamp: now,
		Value: fmt.Appendf(nil, `{"battery_v":3.69,"device":%q,"humidity":47.3,"seq":%d,"temp_c":22.4,"ts":%d}`, dev, i/200, now.UnixMilli()),
		Headers: []storage.Header{
			{Key: "topic", Value: []byte("devices/" + dev + "/readings")},
			{Key: "content-type", Value: []byte("application/json")},
			{Key: "device-time", Value: ms},
			{Key: "receive-time", Value: ms},
			{Key: "client-id", Value: []byte(dev)},
			{Key: "packet-id", Value: []byte(strconv.Itoa(i%65535 + 1))},
			{Key: "payload-hash", Value: []byte("9f86d081884c7d65")},
			{Key: "edge", Value: []byte("gw-1")},
			{Key: "edge-partition", Value: []byte(strconv.Itoa(i % 2))},
			{Key: "edge-offset", Value: []byte(strconv.Itoa(i / 2))},
			{Key: "central-receive-time", Value: ms},
		}}
}

// fillLog appends n central records to a stream of parts partitions, partitioned by key.
func fillLog(tb testing.TB, l *storage.Log, parts, n int) *storage.Stream {
	st, err := l.CreateStream("readings", storage.StreamConfig{Partitions: parts})
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	now := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		st.AppendAsync(centralRecord(i, now.Add(time.Duration(i)*time.Millisecond)), func(_ int, _ int64, err error) {
			if err != nil {
				tb.Error(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	return st
}

var streamEncoding = flag.String("stream-encoding", "identity", "Accept-Encoding of BenchmarkStreamLines (identity, zstd, gzip)")

// BenchmarkStreamLines serves a whole stream as JSON lines over loopback HTTP and discards them:
// central's side of `tributary consume`, next to a Reader scan of the same records.
func BenchmarkStreamLines(b *testing.B) {
	const n = 200_000
	l, err := storage.Open(b.TempDir(), &storage.Options{Fsync: storage.FsyncNone})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	st := fillLog(b, l, 8, n)
	srv := httptest.NewServer(newServer(b, l))
	defer srv.Close()
	b.ResetTimer()
	var bytes int64
	for i := 0; i < b.N; i++ {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/consume/readings?format=jsonl&from=beginning", nil)
		req.Header.Set("Accept-Encoding", *streamEncoding)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		k, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		bytes += k
	}
	el := b.Elapsed()
	b.StopTimer()
	start := time.Now()
	scanned := 0
	for p := 0; p < st.Partitions(); p++ {
		r := st.Partition(p).NewReader(0, nil)
		for {
			if _, err := r.Next(context.Background()); err != nil {
				break
			}
			scanned++
		}
	}
	scan := float64(scanned) / time.Since(start).Seconds()
	rate := float64(n*b.N) / el.Seconds()
	b.ReportMetric(rate, "records/s")
	b.ReportMetric(float64(bytes)/float64(n*b.N), "bytes/line")
	b.ReportMetric(scan, "scan-records/s")
	b.ReportMetric(rate/scan, "served/scan")
}

// BenchmarkFollowLatency appends to central's log at 10k records/s for a few seconds while a
// follower reads through the consume API, and reports append-to-follower latency: the consume
// path's share of device-to-consumer latency (BenchmarkLiveLatency in sync/central adds the edge
// and the forwarder).
func BenchmarkFollowLatency(b *testing.B) {
	const rate, seconds = 10000, 4
	for i := 0; i < b.N; i++ {
		l, err := storage.Open(b.TempDir(), nil)
		if err != nil {
			b.Fatal(err)
		}
		st := fillLog(b, l, 8, 1)
		srv := httptest.NewServer(newServer(b, l))
		var mu sync.Mutex
		sent := make([]time.Time, rate*seconds+rate) // by the edge-offset each record carries
		var lat []time.Duration
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := (&Client{BaseURL: srv.URL}).Lines(ctx, Options{Follow: true}, func(line []byte, _ int, _ int64) error {
				now := time.Now()
				_, rest, _ := bytes.Cut(line, []byte(`"edge_offset":`))
				n, _, _ := leadingInt(rest)
				mu.Lock()
				if n < int64(len(sent)) && !sent[n].IsZero() {
					lat = append(lat, now.Sub(sent[n]))
				}
				mu.Unlock()
				return nil
			})
			done <- err
		}()
		time.Sleep(200 * time.Millisecond) // the follower reaches the end
		b.ResetTimer()
		start := time.Now()
		tick := time.NewTicker(time.Millisecond)
		total := 0
		for time.Since(start) < seconds*time.Second {
			<-tick.C
			due := int(time.Since(start).Seconds()*rate) - total
			for k := 0; k < due; k++ {
				if total >= len(sent) {
					break
				}
				rec := centralRecord(total, time.Now())
				rec.Headers[9].Value = strconv.AppendInt(nil, int64(total), 10) // edge-offset: the index
				mu.Lock()
				sent[total] = time.Now()
				mu.Unlock()
				st.AppendAsync(rec, func(int, int64, error) {})
				total++
			}
		}
		tick.Stop()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := len(lat)
			mu.Unlock()
			if n >= total || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		b.StopTimer()
		cancel()
		<-done
		srv.Close()
		l.Close()
		slices.Sort(lat)
		if len(lat) < total*99/100 {
			b.Fatalf("follower saw %d of %d records", len(lat), total)
		}
		q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
		b.ReportMetric(q(0.5), "p50-ms")
		b.ReportMetric(q(0.99), "p99-ms")
		b.ReportMetric(float64(total)/seconds, "records/s")
	}
}
