package storage

import (
	"context"
	"io"
	"testing"
	"time"
)

// TestIntervalPolicyReadersWaitForFsync: under FsyncInterval an append is acknowledged after the
// write, but readers (the forwarder among them) see it only once the periodic fsync covered it,
// so nothing that a power cut could take back is ever forwarded.
func TestIntervalPolicyReadersWaitForFsync(t *testing.T) {
	l := openTest(t, t.TempDir(), &Options{Fsync: FsyncInterval, FsyncInterval: 300 * time.Millisecond})
	defer l.Close()
	s, _ := l.CreateStream("readings", StreamConfig{Partitions: 1})
	p := s.Partition(0)
	before := l.Stats().Fsyncs
	start := time.Now()
	off, err := p.Append(context.Background(), reading("d", 1))
	if err != nil || off != 0 {
		t.Fatalf("append: %d, %v", off, err)
	}
	if l.Stats().Fsyncs != before {
		t.Fatal("the append waited for an fsync under the interval policy")
	}
	if _, err := p.NewReader(0, nil).Next(context.Background()); err != io.EOF && time.Since(start) < 250*time.Millisecond {
		t.Fatalf("reader saw the record before any fsync: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := p.NewReader(0, &ReaderOptions{Follow: true}).Next(ctx)
	if err != nil || e.Offset != 0 {
		t.Fatalf("follow read: %+v, %v", e, err)
	}
	if l.Stats().Fsyncs == before {
		t.Fatal("the record became readable without an fsync")
	}
}
