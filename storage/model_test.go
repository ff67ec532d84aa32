package storage

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// partModel is what one partition must hold, kept in memory by the state-machine test.
type partModel struct {
	values     []string   // by offset
	start      int64      // first offset still stored, as observed after retention
	gaps       [][2]int64 // ranges retention dropped before the required cursor reached them
	cursor     int64      // the required cursor
	lastCursor int64      // the cursor at the previous observation
}

// TestLogAgainstModel runs random sequences of appends, reads from random offsets, forced rolls,
// waits for sealing, cursor moves, retention and quota steps, and close+reopen, and checks the
// log against an in-memory model after each step. TRIBUTARY_MODEL_SEED=n replays one run.
func TestLogAgainstModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("TRIBUTARY_MODEL_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (TRIBUTARY_MODEL_SEED=%d replays this run)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	budget := 4 * time.Second
	if testing.Short() {
		budget = time.Second
	}
	deadline := time.Now().Add(budget)

	const parts = 3
	opts := &Options{
		SegmentBytes: 2 << 10, FrameBytes: 512, MaintenanceInterval: time.Hour, // the test drives retention
		RetentionBytes: 12 << 10, RetentionAge: time.Hour,
		QuotaBytes: 24 << 10, QuotaPolicy: DropOldest,
	}
	dir := t.TempDir()
	l := openTest(t, dir, opts)
	defer func() { l.Close() }()
	must(t, l.RequireCursor("fwd"))
	s, err := l.CreateStream("m", StreamConfig{Partitions: parts})
	must(t, err)
	models := make([]*partModel, parts)
	for i := range models {
		models[i] = &partModel{}
	}
	keys := make([][]byte, 40)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "sensor-%02d", i)
	}
	seq := 0
	steps := 0
	var dropped, droppedBefore int64
	counts := map[string]int{}
	for ; steps < 5000 && time.Now().Before(deadline); steps++ {
		op := rng.IntN(100)
		switch {
		case op < 45:
			counts["append"]++
			n := 1 + rng.IntN(20)
			for i := 0; i < n; i++ {
				key := keys[rng.IntN(len(keys))]
				seq++
				v := fmt.Sprintf(`{"seq":%d,"pad":"%s"}`, seq, make([]byte, rng.IntN(200)))
				p, off, err := s.Append(context.Background(), Record{Key: key, Value: []byte(v), Timestamp: time.Now()})
				if err != nil {
					t.Fatalf("step %d: append: %v", steps, err)
				}
				m := models[p]
				if off != int64(len(m.values)) {
					t.Fatalf("step %d: partition %d: append got offset %d, model says %d", steps, p, off, len(m.values))
				}
				m.values = append(m.values, v)
			}
		case op < 65:
			counts["read"]++
			p := rng.IntN(parts)
			from := int64(rng.IntN(len(models[p].values) + 2))
			// Hold retention still while reading, so the model knows what is there.
			l.retentionMu.Lock()
			observeRetention(t, steps, s.Partition(p), models[p])
			checkModelRead(t, steps, s.Partition(p), models[p], from)
			l.retentionMu.Unlock()
		case op < 72:
			counts["roll"]++
			p := s.Partition(rng.IntN(parts))
			p.rollReq.Store(true)
			select {
			case p.kick <- struct{}{}:
			default:
			}
		case op < 78:
			counts["wait-seal"]++
			for i := 0; i < parts; i++ {
				p := s.Partition(i)
				waitFor(t, func() bool { return sealedCount(p) >= len(p.snapshot())-1 })
			}
		case op < 86:
			counts["cursor"]++
			i := rng.IntN(parts)
			m := models[i]
			m.cursor += int64(rng.IntN(int(int64(len(m.values))-m.cursor) + 1))
			must(t, l.SetCursor("fwd", "m", i, m.cursor))
		case op < 96:
			counts["retention"]++
			now := time.Now()
			if rng.IntN(3) == 0 {
				now = now.Add(2 * time.Hour) // everything sealed is past RetentionAge
			}
			l.enforceRetention(now)
		default:
			counts["reopen"]++
			must(t, l.Close())
			droppedBefore = observeAll(t, steps, s, models) // the new log counts drops from zero
			l = openTest(t, dir, opts)
			s, err = l.Stream("m")
			must(t, err)
			l.retentionMu.Lock()
			for i := 0; i < parts; i++ {
				observeRetention(t, steps, s.Partition(i), models[i])
				checkModelRead(t, steps, s.Partition(i), models[i], 0)
			}
			l.retentionMu.Unlock()
		}
		// Retention also runs in the background (a seal or a cursor move kicks it when the
		// quota is set), so the model observes it after every step.
		l.retentionMu.Lock()
		dropped = observeAll(t, steps, s, models)
		if got := l.Stats().DroppedRecords; got != dropped-droppedBefore {
			t.Fatalf("step %d: Stats().DroppedRecords = %d, gaps hold %d", steps, got, dropped-droppedBefore)
		}
		l.retentionMu.Unlock()
		if t.Failed() {
			t.Fatalf("failed at step %d, seed %d", steps, seed)
		}
	}
	l.retentionMu.Lock()
	for i := 0; i < parts; i++ {
		observeRetention(t, steps, s.Partition(i), models[i])
		checkModelRead(t, steps, s.Partition(i), models[i], 0)
	}
	l.retentionMu.Unlock()
	t.Logf("%d steps: %v; dropped %d records", steps, counts, l.Stats().DroppedRecords)
}

// observeAll observes retention in every partition and returns the records the gaps hold.
func observeAll(t *testing.T, step int, s *Stream, models []*partModel) int64 {
	t.Helper()
	var dropped int64
	for i, m := range models {
		observeRetention(t, step, s.Partition(i), m)
		for _, g := range m.gaps {
			dropped += g[1] - g[0]
		}
	}
	return dropped
}

// observeRetention learns which front segments retention removed and checks the gaps it
// recorded: a removed offset at or past the required cursor must be in a gap, one below the
// cursor must not (the cursor may have moved between the previous observation and now, so
// offsets between the two values may go either way); nothing else may change.
func observeRetention(t *testing.T, step int, p *Partition, m *partModel) {
	t.Helper()
	defer func() { m.lastCursor = m.cursor }()
	start := p.StartOffset()
	if start < m.start {
		t.Fatalf("step %d: partition %d start went back from %d to %d", step, p.ID(), m.start, start)
	}
	got := mergeRanges(gapRanges(p.Gaps()))
	inGot := func(o int64) bool {
		for _, r := range got {
			if o >= r[0] && o < r[1] {
				return true
			}
		}
		return false
	}
	// Outside the removed range the gaps are what they were.
	var outside [][2]int64
	for _, r := range got {
		if r[0] < m.start {
			outside = append(outside, [2]int64{r[0], min(r[1], m.start)})
		}
		if r[1] > start {
			outside = append(outside, [2]int64{max(r[0], start), r[1]})
		}
	}
	if want := mergeRanges(m.gaps); !slices.Equal(mergeRanges(outside), want) {
		t.Fatalf("step %d: partition %d: gaps %v outside the removed range [%d, %d), model %v", step, p.ID(), got, m.start, start, want)
	}
	for o := m.start; o < start; o++ {
		if o >= m.cursor && !inGot(o) || o < m.lastCursor && inGot(o) {
			t.Fatalf("step %d: partition %d: removed [%d, %d) with the cursor moving from %d to %d: offset %d gapped %v (gaps %v)",
				step, p.ID(), m.start, start, m.lastCursor, m.cursor, o, inGot(o), got)
		}
	}
	m.gaps = got
	m.start = start
}

func gapRanges(gaps []Gap) [][2]int64 {
	var out [][2]int64
	for _, g := range gaps {
		out = append(out, [2]int64{g.From, g.To})
	}
	return out
}

func mergeRanges(rs [][2]int64) [][2]int64 {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b [2]int64) int { return int(a[0] - b[0]) })
	var out [][2]int64
	for _, r := range rs {
		if r[1] <= r[0] {
			continue
		}
		if n := len(out); n > 0 && out[n-1][1] >= r[0] {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}

// checkModelRead reads a partition from an offset to its end and compares with the model: gaps
// where the model dropped records the cursor had not reached, nothing for records it had, then
// every stored record, with dense offsets.
func checkModelRead(t *testing.T, step int, p *Partition, m *partModel, from int64) {
	t.Helper()
	if end := p.EndOffset(); end != int64(len(m.values)) {
		t.Fatalf("step %d: partition %d end %d, model %d", step, p.ID(), end, len(m.values))
	}
	var gotGaps, wantGaps [][2]int64
	for _, g := range m.gaps {
		if g[1] > from {
			wantGaps = append(wantGaps, [2]int64{max(g[0], from), g[1]})
		}
	}
	next := max(from, m.start)
	for _, e := range readAll(t, p, from) {
		if e.Gap != nil {
			if e.Gap.Reason != GapQuotaDropped || e.Gap.Records != e.Gap.To-e.Gap.From || e.Offset != e.Gap.From {
				t.Fatalf("step %d: partition %d: gap %+v", step, p.ID(), *e.Gap)
			}
			if e.Gap.From >= m.start || len(gotGaps) > 0 && e.Gap.From < gotGaps[len(gotGaps)-1][1] {
				t.Fatalf("step %d: partition %d: gap %+v out of order (start %d)", step, p.ID(), *e.Gap, m.start)
			}
			gotGaps = append(gotGaps, [2]int64{e.Gap.From, e.Gap.To})
			continue
		}
		if e.Offset != next {
			t.Fatalf("step %d: partition %d read from %d: offset %d, want %d", step, p.ID(), from, e.Offset, next)
		}
		if string(e.Value) != m.values[e.Offset] {
			t.Fatalf("step %d: partition %d offset %d: value %q, model %q", step, p.ID(), e.Offset, e.Value, m.values[e.Offset])
		}
		next++
	}
	if next != int64(len(m.values)) && !(from > int64(len(m.values))) {
		t.Fatalf("step %d: partition %d read from %d stopped at %d, model end %d", step, p.ID(), from, next, len(m.values))
	}
	if got, want := mergeRanges(gotGaps), mergeRanges(wantGaps); !slices.Equal(got, want) {
		t.Fatalf("step %d: partition %d read from %d: gaps %v, model %v", step, p.ID(), from, got, want)
	}
}
