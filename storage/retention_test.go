package storage

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// fillSealed appends n records with the given timestamp to partition 0 and waits until every
// segment but the active one is sealed.
func fillSealed(t *testing.T, p *Partition, n int, ts time.Time) {
	t.Helper()
	for i := 0; i < n; i++ {
		rec := reading("dev-1", i)
		rec.Timestamp = ts
		if _, err := p.Append(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return sealedCount(p) == len(p.snapshot())-1 && sealedCount(p) > 2 })
}

// checkNoGapFrom reads a partition from 0 and checks it holds exactly [start, end) with no gap.
func checkNoGapFrom(t *testing.T, p *Partition) {
	t.Helper()
	entries := readAll(t, p, 0)
	start := p.StartOffset()
	for i, e := range entries {
		if e.Gap != nil {
			t.Fatalf("gap %+v: retention may not drop records a required cursor has not passed", *e.Gap)
		}
		if e.Offset != start+int64(i) {
			t.Fatalf("entry %d at offset %d, want %d", i, e.Offset, start+int64(i))
		}
	}
	if start+int64(len(entries)) != p.EndOffset() {
		t.Fatalf("read [%d, %d), end is %d", start, start+int64(len(entries)), p.EndOffset())
	}
}

func TestRetentionNeverPastRequiredCursor(t *testing.T) {
	for _, c := range []struct {
		name string
		opts Options
	}{
		{"by-age", Options{RetentionAge: time.Hour}},
		{"by-size", Options{RetentionBytes: 1024}},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := c.opts
			o.SegmentBytes, o.FrameBytes, o.MaintenanceInterval = 2048, 512, time.Hour
			dir := t.TempDir()
			l := openTest(t, dir, &o)
			defer func() { l.Close() }()
			must(t, l.RequireCursor("fwd"))
			s, _ := l.CreateStream("r", StreamConfig{Partitions: 1})
			p := s.Partition(0)
			fillSealed(t, p, 200, time.Now().Add(-3*time.Hour))

			// Cursor unset: nothing was forwarded, nothing goes.
			l.enforceRetention(time.Now())
			if p.StartOffset() != 0 {
				t.Fatalf("retention removed up to %d with the required cursor unset", p.StartOffset())
			}
			must(t, l.SetCursor("fwd", "r", 0, 100))
			l.enforceRetention(time.Now())
			if st := p.StartOffset(); st == 0 || st > 100 {
				t.Fatalf("start %d after retention with the cursor at 100: want some removed, none past 100", st)
			}
			checkNoGapFrom(t, p)
			// A second, non-required cursor does not hold anything back.
			must(t, l.SetCursor("dashboard", "r", 0, 0))
			must(t, l.SetCursor("fwd", "r", 0, p.EndOffset()))
			l.enforceRetention(time.Now())
			if segs := p.Segments(); len(segs) != 1 || p.StartOffset() != segs[0].Base {
				t.Fatalf("with everything forwarded, %d segments remain", len(segs))
			}
			checkNoGapFrom(t, p)
			must(t, l.Close())
			l = openTest(t, dir, &o)
			s, _ = l.Stream("r")
			checkNoGapFrom(t, s.Partition(0))
		})
	}
}

func TestBackpressureFailsFastAndRecovers(t *testing.T) {
	for _, c := range []struct {
		name         string
		segmentBytes int64
	}{
		{"small-segments", 2048},
		// Everything sits in the active segment: recovering needs a roll and a seal first.
		{"quota-below-one-segment", 1 << 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := &Options{SegmentBytes: c.segmentBytes, FrameBytes: 512, QuotaBytes: 16 << 10, QuotaPolicy: Backpressure, MaintenanceInterval: time.Hour}
			l := openTest(t, t.TempDir(), o)
			defer l.Close()
			must(t, l.RequireCursor("fwd"))
			s, _ := l.CreateStream("r", StreamConfig{Partitions: 1})
			p := s.Partition(0)
			// Fill to the quota; sealing compresses and frees space, so refill until the log is
			// full with nothing left to seal.
			full := false
			for round := 0; round < 50 && !full; round++ {
				for i := 0; i < 10000; i++ {
					_, err := p.Append(context.Background(), reading("dev-1", i))
					if errors.Is(err, ErrFull) {
						break
					} else if err != nil {
						t.Fatal(err)
					}
				}
				waitFor(t, func() bool { return sealedCount(p) == len(p.snapshot())-1 })
				full = l.diskBytes.Load() >= o.QuotaBytes
			}
			if !full {
				t.Fatal("log never stayed full over a 16 KiB quota")
			}
			end := p.EndOffset()
			start := time.Now()
			for i := 0; i < 1000; i++ {
				if _, err := p.Append(context.Background(), reading("dev-1", i)); !errors.Is(err, ErrFull) {
					t.Fatalf("append %d while full: %v, want ErrFull", i, err)
				}
			}
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Fatalf("1000 refused appends took %v: ErrFull must be fast", d)
			}
			asyncErr := make(chan error, 1)
			p.AppendAsync(reading("dev-1", 0), func(_ int64, err error) { asyncErr <- err })
			if err := <-asyncErr; !errors.Is(err, ErrFull) {
				t.Fatalf("AppendAsync while full: %v", err)
			}
			if p.EndOffset() != end {
				t.Fatal("a refused append was written")
			}
			// Nothing was forwarded, so nothing may go; once the cursor moves, space comes back
			// without waiting for the hourly maintenance tick.
			l.enforceRetention(time.Now())
			checkNoGapFrom(t, p)
			if p.StartOffset() != 0 {
				t.Fatalf("backpressure dropped unforwarded records up to %d", p.StartOffset())
			}
			must(t, l.SetCursor("fwd", "r", 0, end))
			deadline := time.Now().Add(10 * time.Second)
			for {
				_, err := p.Append(context.Background(), reading("dev-1", 1))
				if err == nil {
					break
				}
				if !errors.Is(err, ErrFull) || time.Now().After(deadline) {
					t.Fatalf("append after the cursor moved: %v", err)
				}
				time.Sleep(5 * time.Millisecond)
			}
			checkNoGapFrom(t, p)
			if len(p.Gaps()) != 0 || l.Stats().DroppedRecords != 0 {
				t.Fatalf("backpressure recorded gaps %v", p.Gaps())
			}
		})
	}
}

func TestDropOldestRecordsGapsInOrder(t *testing.T) {
	dir := t.TempDir()
	o := &Options{SegmentBytes: 2048, FrameBytes: 512, QuotaBytes: 8 << 10, QuotaPolicy: DropOldest, MaintenanceInterval: time.Hour}
	l := openTest(t, dir, o)
	defer func() { l.Close() }()
	must(t, l.RequireCursor("fwd"))
	s, _ := l.CreateStream("r", StreamConfig{Partitions: 1})
	p := s.Partition(0)
	must(t, l.SetCursor("fwd", "r", 0, 30))
	before := time.Now().UTC()
	for i := 0; i < 400; i++ {
		if _, err := p.Append(context.Background(), reading("dev-1", i)); err != nil {
			t.Fatalf("append %d under drop-oldest: %v", i, err)
		}
	}
	waitFor(t, func() bool { return sealedCount(p) == len(p.snapshot())-1 })
	l.enforceRetention(time.Now())
	if l.diskBytes.Load() >= o.QuotaBytes {
		t.Fatalf("disk %d bytes after drop-oldest, quota %d", l.diskBytes.Load(), o.QuotaBytes)
	}
	start := p.StartOffset()
	if start <= 30 {
		t.Fatalf("start %d: drop-oldest should have gone past the cursor", start)
	}
	check := func(l *Log, p *Partition) {
		t.Helper()
		// Forwarded records [0, 30) go silently; every unforwarded one dropped is in a gap,
		// received in order before the records that remain.
		var gapped int64
		next := int64(30)
		for _, e := range readAll(t, p, 0) {
			if e.Gap != nil {
				g := e.Gap
				if g.From != next || e.Offset != g.From || g.To <= g.From || g.Records != g.To-g.From ||
					g.Reason != GapQuotaDropped || g.Time.Before(before.Add(-time.Second)) || g.Time.After(time.Now()) {
					t.Fatalf("gap %+v, want one from %d with reason %s and a time", *g, next, GapQuotaDropped)
				}
				gapped += g.Records
				next = g.To
				continue
			}
			if e.Offset != next || next < start {
				t.Fatalf("record at %d, want %d (start %d)", e.Offset, next, start)
			}
			next++
		}
		if next != p.EndOffset() || gapped != start-30 {
			t.Fatalf("read to %d with %d records in gaps; end %d, start %d", next, gapped, p.EndOffset(), start)
		}
		// The transfer form carries the same gaps.
		next = 30
		for from := int64(0); ; {
			c, err := p.ReadChunk(from, 4096)
			if err == io.EOF {
				break
			}
			must(t, err)
			if c.Gap != nil {
				if c.Gap.From != next {
					t.Fatalf("chunk gap %+v, want from %d", *c.Gap, next)
				}
				next = c.Gap.To
			} else if next < start {
				t.Fatalf("chunk at %d before the gaps covered up to %d", c.Base, start)
			} else {
				next = c.Next
			}
			from = c.Next
		}
	}
	check(l, p)
	if got := l.Stats().DroppedRecords; got != start-30 {
		t.Fatalf("DroppedRecords %d, want %d", got, start-30)
	}
	gaps := p.Gaps()
	must(t, l.Close())
	l = openTest(t, dir, o)
	s, _ = l.Stream("r")
	p = s.Partition(0)
	if got := p.Gaps(); len(got) != len(gaps) || got[0] != gaps[0] {
		t.Fatalf("gaps after reopen %+v, before %+v", got, gaps)
	}
	check(l, p)
	// Appends continue after the drops, at the end.
	if off, err := p.Append(context.Background(), reading("dev-1", 1000)); err != nil || off != 400 {
		t.Fatalf("append after reopen: %d %v", off, err)
	}
}
