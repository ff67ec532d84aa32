package storage

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestAdaptiveCommitAtLowRate: writers that each wait for their ack, at a low total rate (about
// 200 records/s), share fsyncs under a commit budget: the partition fsyncs at most about 2/budget
// times a second instead of once per record, and no append waits much past the budget.
func TestAdaptiveCommitAtLowRate(t *testing.T) {
	const writers, every, rounds = 10, 50 * time.Millisecond, 20 // 200 records/s for a second
	run := func(budget time.Duration) (fsyncs, records int64, elapsed, slowest time.Duration) {
		l := openTest(t, t.TempDir(), &Options{CommitBudget: budget})
		defer l.Close()
		s, _ := l.CreateStream("readings", StreamConfig{Partitions: 1})
		before := l.Stats()
		start := time.Now()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				time.Sleep(time.Duration(w) * every / writers) // spread the writers over the period
				for i := 1; i <= rounds; i++ {
					t0 := time.Now()
					if _, _, err := s.Append(context.Background(), reading(fmt.Sprintf("d%d", w), i)); err != nil {
						t.Error(err)
						return
					}
					d := time.Since(t0)
					mu.Lock()
					slowest = max(slowest, d)
					mu.Unlock()
					time.Sleep(every - d%every)
				}
			})
		}
		wg.Wait()
		st := l.Stats()
		return st.Fsyncs - before.Fsyncs, st.RecordsAppended - before.RecordsAppended, time.Since(start), slowest
	}
	const budget = 40 * time.Millisecond
	at0, n0, _, _ := run(0)
	fs, n, elapsed, slowest := run(budget)
	t.Logf("%d records: %d fsyncs committing at once, %d with a %v budget over %v (slowest append %v)", n, at0, fs, budget, elapsed, slowest)
	if limit := int64(elapsed.Seconds()*2/budget.Seconds()*1.2) + 3; fs > limit {
		t.Fatalf("%d fsyncs in %v under a %v budget, want at most %d (2/budget per second)", fs, elapsed, budget, limit)
	}
	if fs*2 > n0 {
		t.Fatalf("%d fsyncs for %d records under the budget, %d committing at once: the budget does not group", fs, n, at0)
	}
}

// TestAdaptiveCommitDoesNotPaceAPipeline: a writer keeping a window of records in flight gets its
// group written as soon as the group stops growing, not at the budget's pace: waiting would only
// slow it, since no more records come until it sees acks.
func TestAdaptiveCommitDoesNotPaceAPipeline(t *testing.T) {
	const budget, window, rounds = 400 * time.Millisecond, 64, 10
	l := openTest(t, t.TempDir(), &Options{CommitBudget: budget})
	defer l.Close()
	s, _ := l.CreateStream("readings", StreamConfig{Partitions: 1})
	start := time.Now()
	for r := range rounds {
		var wg sync.WaitGroup
		for i := range window {
			wg.Add(1)
			s.AppendAsync(reading("bridge", r*window+i), func(_ int, _ int64, err error) {
				if err != nil {
					t.Error(err)
				}
				wg.Done()
			})
		}
		wg.Wait()
	}
	elapsed := time.Since(start)
	t.Logf("%d rounds of %d records in %v under a %v budget", rounds, window, elapsed, budget)
	// Paced, the rounds would take rounds × budget/2 = 2 s.
	if elapsed > rounds*budget/4 {
		t.Fatalf("%d rounds of a %d-record window took %v: the committer paced a pipeline (want under %v)", rounds, window, elapsed, rounds*budget/4)
	}
}

// TestAdaptiveCommitDoesNotPaceWaitingWriters: writers that each wait for their append and
// append again at once (devices waiting for their PUBACK) get their group written once it stops
// growing, not at the budget's pace: all of them are waiting on that group, so nothing more comes.
func TestAdaptiveCommitDoesNotPaceWaitingWriters(t *testing.T) {
	const budget, writers, rounds = 400 * time.Millisecond, 32, 10
	l := openTest(t, t.TempDir(), &Options{CommitBudget: budget})
	defer l.Close()
	s, _ := l.CreateStream("readings", StreamConfig{Partitions: 1})
	before := l.Stats()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range rounds {
				if _, _, err := s.Append(context.Background(), reading(fmt.Sprintf("d%d", w), i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	fsyncs := l.Stats().Fsyncs - before.Fsyncs
	t.Logf("%d writers × %d appends in %v under a %v budget, %d fsyncs", writers, rounds, elapsed, budget, fsyncs)
	// Paced, the rounds would take rounds × budget/2 = 2 s.
	if elapsed > rounds*budget/4 {
		t.Fatalf("%d waiting writers took %v for %d appends each: the committer paced them (want under %v)", writers, elapsed, rounds, rounds*budget/4)
	}
	if fsyncs > 4*rounds {
		t.Fatalf("%d fsyncs for %d rounds of %d waiting writers: groups did not gather them", fsyncs, rounds, writers)
	}
}
