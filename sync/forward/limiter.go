package forward

import (
	"context"
	"sync"
	"time"
)

// limiter is a token bucket shared by all lanes, with live sends served before backlog sends:
// a backlog waiter takes tokens only when no live send is waiting.
type limiter struct {
	rate  float64 // bytes per second
	burst float64

	mu          sync.Mutex
	tokens      float64
	last        time.Time
	liveWaiting int
}

func newLimiter(bytesPerSec int64) *limiter {
	r := float64(bytesPerSec)
	// A burst of 50 ms keeps the cap honest at small rates while letting one request start at once.
	return &limiter{rate: r, burst: max(r/20, 1500), tokens: max(r/20, 1500), last: time.Now()}
}

// wait takes n bytes of tokens. A send larger than the bucket goes once the bucket is full and
// leaves a debt, so the average rate holds for any chunk size.
func (l *limiter) wait(ctx context.Context, n int, live bool) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	if live {
		l.liveWaiting++
		defer func() { l.mu.Lock(); l.liveWaiting--; l.mu.Unlock() }()
	}
	for {
		now := time.Now()
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
		l.last = now
		need := min(float64(n), l.burst)
		if l.tokens >= need && (live || l.liveWaiting == 0) {
			l.tokens -= float64(n)
			l.mu.Unlock()
			return nil
		}
		wait := time.Duration((need - l.tokens) / l.rate * float64(time.Second))
		wait = min(max(wait, time.Millisecond), 50*time.Millisecond)
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		l.mu.Lock()
	}
}
