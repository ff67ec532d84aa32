package storage

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testfs"
)

// TestFullDiskPartitionResumes fills a real (size-limited tmpfs) file system under a log: the
// append that hits ENOSPC fails and stops the partition, Failures reports it as out of space, and
// once the space is freed the partition resumes by itself, without a reopen. Every acknowledged
// record is there after a reopen, in order, and nothing that failed is.
func TestFullDiskPartitionResumes(t *testing.T) {
	dir := testfs.Tmpfs(t, 2<<20)
	l := openTest(t, dir, &Options{MaintenanceInterval: 100 * time.Millisecond})
	defer func() {
		if l != nil {
			l.Close()
		}
	}()
	s, err := l.CreateStream("readings", StreamConfig{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := s.Partition(0)
	var acked []int
	for i := range 10 {
		if _, err := p.Append(context.Background(), reading("d", i)); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, i)
	}
	filler := testfs.Fill(t, dir)
	seq := 10
	var appendErr error
	for ; seq < 10000; seq++ {
		// Big records, so the first failing write is well past what a page's slack can take.
		rec := reading("d", seq)
		rec.Value = append(rec.Value, make([]byte, 16<<10)...)
		if _, appendErr = p.Append(context.Background(), rec); appendErr != nil {
			break
		}
		acked = append(acked, seq)
	}
	if !errors.Is(appendErr, syscall.ENOSPC) || !errors.Is(appendErr, ErrPartitionFailed) {
		t.Fatalf("append on a full disk: %v, want ENOSPC and ErrPartitionFailed", appendErr)
	}
	f := l.Failures()
	if len(f) != 1 || f[0].Stream != "readings" || f[0].Partition != 0 || !f[0].NoSpace {
		t.Fatalf("Failures() = %+v, want readings/0 out of space", f)
	}
	// Still full: it stays stopped across several recovery attempts.
	time.Sleep(1500 * time.Millisecond)
	if p.Failure() == nil {
		t.Fatal("partition resumed while the disk is still full")
	}
	if _, err := p.Append(context.Background(), reading("d", -1)); !errors.Is(err, ErrPartitionFailed) {
		t.Fatalf("append while stopped: %v", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.Failure() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("partition still stopped 10s after space was freed: %v", p.Failure())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if f := l.Failures(); len(f) != 0 {
		t.Fatalf("Failures() after resume = %+v", f)
	}
	for i := seq + 1; i < seq+20; i++ {
		if _, err := p.Append(context.Background(), reading("d", i)); err != nil {
			t.Fatalf("append after resume: %v", err)
		}
		acked = append(acked, i)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openTest(t, dir, nil)
	s, _ = l.Stream("readings")
	got := readAll(t, s.Partition(0), 0)
	if len(got) != len(acked) {
		t.Fatalf("after reopen %d records, want the %d acknowledged", len(got), len(acked))
	}
	for i, e := range got {
		want := reading("d", acked[i])
		if e.Offset != int64(i) || string(e.Record.Value[:len(want.Value)]) != string(want.Value) {
			t.Fatalf("record %d: offset %d value %.60q, want acknowledged seq %d", i, e.Offset, e.Record.Value, acked[i])
		}
	}
	t.Logf("%d records acknowledged around a full disk; the failing one (seq %d) is not stored", len(acked), seq)
}
