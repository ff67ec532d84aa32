package storage

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestOffsetForTime checks the time seek against a linear scan, over sealed segments, the active
// one, timestamps that go back in time (edges with skewed clocks), and targets past the end.
func TestOffsetForTime(t *testing.T) {
	l := openTest(t, t.TempDir(), &Options{Fsync: FsyncNone, SegmentBytes: 64 << 10, FrameBytes: 4 << 10})
	defer l.Close()
	s, _ := l.CreateStream("readings", StreamConfig{Partitions: 1})
	p := s.Partition(0)
	base := int64(1_700_000_000_000)
	var stamps []int64
	for i := 0; i < 6000; i++ {
		ts := base + int64(i)*10
		if i%500 == 7 {
			ts -= 20_000 // a late reading from a clock behind
		}
		rec := reading("dev", i)
		rec.Timestamp = time.UnixMilli(ts)
		if _, err := p.Append(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
		stamps = append(stamps, ts)
	}
	waitFor(t, func() bool { return sealedCount(p) >= 3 })
	linear := func(target int64) int64 {
		for off, ts := range stamps {
			if ts >= target {
				return int64(off)
			}
		}
		return int64(len(stamps))
	}
	for _, target := range []int64{base - 1_000_000, base, base + 5, base + 12_345, base + 40_000, base + 59_990, base + 59_991, base + 1_000_000} {
		t.Run(fmt.Sprint(target-base), func(t *testing.T) {
			got, err := p.OffsetForTime(context.Background(), time.UnixMilli(target))
			if err != nil {
				t.Fatal(err)
			}
			if want := linear(target); got != want {
				t.Fatalf("OffsetForTime(base%+d ms) = %d, want %d", target-base, got, want)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.OffsetForTime(ctx, time.UnixMilli(base+40_000)); !errors.Is(err, context.Canceled) {
		t.Fatalf("with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestPartitionWait(t *testing.T) {
	l := openTest(t, t.TempDir(), &Options{Fsync: FsyncNone})
	s, _ := l.CreateStream("readings", StreamConfig{Partitions: 1})
	p := s.Partition(0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := p.Wait(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on an empty partition: %v, want the context's deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Wait(context.Background(), 0) }()
	if _, err := p.Append(context.Background(), reading("dev", 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after an append")
	}
	go func() { done <- p.Wait(context.Background(), 1) }()
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Wait after Close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after Close")
	}
}
