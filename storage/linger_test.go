package storage

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestGroupLingerSharesFsyncs: writers that each wait for their ack (like devices) put more records
// in each fsync when the committer lingers.
func TestGroupLingerSharesFsyncs(t *testing.T) {
	const writers = 50
	perFsync := func(linger time.Duration) float64 {
		l := openTest(t, t.TempDir(), &Options{GroupLinger: linger})
		defer l.Close()
		s, _ := l.CreateStream("readings", StreamConfig{Partitions: 1})
		var wg sync.WaitGroup
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 1; i <= 10; i++ {
					if _, _, err := s.Append(context.Background(), reading(fmt.Sprintf("d%d", w), i)); err != nil {
						t.Error(err)
						return
					}
				}
			}(w)
		}
		wg.Wait()
		st := l.Stats()
		return float64(st.RecordsAppended) / float64(st.Fsyncs)
	}
	without, with := perFsync(0), perFsync(20*time.Millisecond)
	t.Logf("records per fsync: %.1f without linger, %.1f with 20ms", without, with)
	// Within 20ms every writer has its next record queued, whatever the disk: nearly all of them
	// share each fsync (a few fsyncs more come from segment rolls and the last, partial round).
	if with < 0.6*writers {
		t.Fatalf("records per fsync %.1f with a 20ms linger and %d writers: the linger does not group", with, writers)
	}
}
