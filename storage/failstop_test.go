package storage

import (
	"context"
	"errors"
	"testing"
)

// TestWriteErrorStopsPartition: after a failed write no later append of the partition may
// succeed (a writer's record N+1 must not land while N failed), and reopening recovers every
// record acknowledged before the failure.
func TestWriteErrorStopsPartition(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, nil)
	s, _ := l.CreateStream("readings", StreamConfig{Partitions: 1})
	p := s.Partition(0)
	for i := 1; i <= 10; i++ {
		if _, err := p.Append(context.Background(), reading("d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Fail the next write the way a dying disk does: the descriptor stops working.
	p.mu.Lock()
	p.active.f.Close()
	p.mu.Unlock()
	if _, err := p.Append(context.Background(), reading("d", 11)); err == nil {
		t.Fatal("append after the write failure succeeded")
	}
	for i := 12; i <= 14; i++ {
		if _, err := p.Append(context.Background(), reading("d", i)); !errors.Is(err, ErrPartitionFailed) {
			t.Fatalf("append %d after a failed write: %v, want ErrPartitionFailed", i, err)
		}
	}
	l.Close()

	l = openTest(t, dir, nil)
	defer l.Close()
	s, _ = l.Stream("readings")
	got := readAll(t, s.Partition(0), 0)
	if len(got) != 10 {
		t.Fatalf("after reopen %d records, want the 10 acknowledged", len(got))
	}
	if _, err := s.Partition(0).Append(context.Background(), reading("d", 11)); err != nil {
		t.Fatalf("append after reopen: %v", err)
	}
}
