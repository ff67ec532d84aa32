package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if code, child := childMain(); child {
		os.Exit(code) // a crash or power-cut test's child process, killed by its parent
	}
	goleak.VerifyTestMain(m)
}

func openTest(t testing.TB, dir string, o *Options) *Log {
	t.Helper()
	l, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func reading(dev string, seq int) Record {
	return Record{
		Key:       []byte(dev),
		Value:     fmt.Appendf(nil, `{"device":%q,"seq":%d,"temperature":21.5}`, dev, seq),
		Timestamp: time.UnixMilli(1_700_000_000_000 + int64(seq)),
		Headers:   []Header{{Key: "topic", Value: []byte("devices/" + dev + "/readings")}},
	}
}

// readAll reads a partition from offset from to its end.
func readAll(t testing.TB, p *Partition, from int64) []Entry {
	t.Helper()
	r := p.NewReader(from, nil)
	var out []Entry
	for {
		e, err := r.Next(context.Background())
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read partition %d at %d: %v", p.ID(), r.Offset(), err)
		}
		out = append(out, e)
	}
}

func TestAppendReadReopen(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, &Options{SegmentBytes: 4096})
	s, err := l.CreateStream("readings", StreamConfig{Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	const devices, per = 20, 50
	var wg sync.WaitGroup
	for d := 0; d < devices; d++ {
		wg.Add(1)
		go func(d int) {
			defer wg.Done()
			dev := fmt.Sprintf("dev-%03d", d)
			for i := 1; i <= per; i++ {
				part, off, err := s.Append(context.Background(), reading(dev, i))
				if err != nil {
					t.Error(err)
					return
				}
				if part != PartitionFor([]byte(dev), 4) || off < 0 {
					t.Errorf("append %s: partition %d offset %d", dev, part, off)
				}
			}
		}(d)
	}
	wg.Wait()
	check := func(l *Log) {
		t.Helper()
		s, err := l.Stream("readings")
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for i := 0; i < s.Partitions(); i++ {
			last := map[string]int{}
			for j, e := range readAll(t, s.Partition(i), 0) {
				if e.Offset != int64(j) {
					t.Fatalf("partition %d: entry %d has offset %d", i, j, e.Offset)
				}
				var dev string
				var seq int
				if _, err := fmt.Sscanf(string(e.Value), `{"device":%q,"seq":%d`, &dev, &seq); err != nil {
					t.Fatalf("bad value %q: %v", e.Value, err)
				}
				if seq != last[dev]+1 {
					t.Fatalf("device %s: seq %d after %d", dev, seq, last[dev])
				}
				last[dev] = seq
				if string(e.HeaderValue("topic")) != "devices/"+dev+"/readings" {
					t.Fatalf("bad topic header %q", e.HeaderValue("topic"))
				}
				total++
			}
		}
		if total != devices*per {
			t.Fatalf("read %d records, want %d", total, devices*per)
		}
	}
	check(l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openTest(t, dir, nil)
	defer l.Close()
	check(l)
}

func TestSealingKeepsReadsWhole(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, &Options{SegmentBytes: 2048, FrameBytes: 512})
	s, _ := l.CreateStream("readings", StreamConfig{Partitions: 1})
	p := s.Partition(0)
	for i := 1; i <= 500; i++ {
		if _, err := p.Append(context.Background(), reading("dev-1", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return l.Stats().SealedSegments > 0 && sealedCount(p) >= len(p.snapshot())-2 })
	got := readAll(t, p, 0)
	if len(got) != 500 {
		t.Fatalf("read %d, want 500", len(got))
	}
	// Seek into the middle of a sealed segment.
	if e := readAll(t, p, 123); len(e) != 377 || e[0].Offset != 123 {
		t.Fatalf("seek to 123: got %d entries starting at %d", len(e), e[0].Offset)
	}
	l.Close()
	l = openTest(t, dir, nil)
	defer l.Close()
	s, _ = l.Stream("readings")
	if got := readAll(t, s.Partition(0), 0); len(got) != 500 {
		t.Fatalf("after reopen read %d, want 500", len(got))
	}
	if _, err := os.Stat(filepath.Join(dir, "streams", "readings", "0", segmentName(0, sealedExt))); err != nil {
		t.Fatalf("first segment not sealed: %v", err)
	}
}

func sealedCount(p *Partition) int {
	n := 0
	for _, s := range p.snapshot() {
		if s.sealed() {
			n++
		}
	}
	return n
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFollowReaderSeesOnlyDurable(t *testing.T) {
	l := openTest(t, t.TempDir(), nil)
	defer l.Close()
	s, _ := l.CreateStream("readings", StreamConfig{Partitions: 1})
	p := s.Partition(0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := p.NewReader(0, &ReaderOptions{Follow: true})
	got := make(chan Entry, 100)
	go func() {
		for i := 0; i < 100; i++ {
			e, err := r.Next(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			if e.Offset >= p.EndOffset() {
				t.Errorf("reader saw offset %d before it was durable (end %d)", e.Offset, p.EndOffset())
			}
			got <- e
		}
		close(got)
	}()
	for i := 1; i <= 100; i++ {
		p.AppendAsync(reading("d", i), func(int64, error) {})
	}
	n := 0
	for e := range got {
		if e.Offset != int64(n) {
			t.Fatalf("follow: offset %d, want %d", e.Offset, n)
		}
		n++
	}
	if n != 100 {
		t.Fatalf("follow read %d", n)
	}
}

func TestAppendAfterCloseFails(t *testing.T) {
	l := openTest(t, t.TempDir(), nil)
	s, _ := l.CreateStream("readings", StreamConfig{Partitions: 1})
	l.Close()
	if _, _, err := s.Append(context.Background(), reading("d", 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v, want ErrClosed", err)
	}
}
