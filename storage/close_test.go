package storage

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestCloseDuringAppends: Close returns while writers keep appending, every append either succeeds
// or fails with ErrClosed, and none is left waiting.
func TestCloseDuringAppends(t *testing.T) {
	for round := 0; round < 20; round++ {
		l := openTest(t, t.TempDir(), nil)
		s, _ := l.CreateStream("readings", StreamConfig{Partitions: 4})
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 1; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					var err error
					if w%2 == 0 {
						_, _, err = s.Append(context.Background(), reading("d", i))
					} else {
						done := make(chan error, 1)
						s.AppendAsync(reading("d", i), func(_ int, _ int64, err error) { done <- err })
						err = <-done
					}
					if err != nil {
						if !errors.Is(err, ErrClosed) {
							t.Errorf("append during close: %v", err)
						}
						return
					}
				}
			}(w)
		}
		time.Sleep(time.Duration(round%5) * 5 * time.Millisecond)
		closed := make(chan error, 1)
		go func() { closed <- l.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("close: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Close hung while appends were running")
		}
		close(stop)
		wg.Wait()
	}
}
