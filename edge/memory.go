package edge

import (
	"context"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// Memory a fleet used is given back when it leaves. Each connection holds goroutine stacks and
// buffers (deploy/README.md, "Memory", has the bytes per device); once devices disconnect, Go
// frees them to its heap, but hands the pages back to the system only slowly (its scavenger
// keeps a margin over the heap goal), so a gateway's RSS stayed at the fleet's peak long after
// the fleet was gone. The agent watches the connection count and, when it has fallen to half of
// its recent peak or less, returns the freed memory at once.
//
// With Config.AutoMemoryLimit the same watcher sets Go's soft memory limit from the connection
// count: memoryLimitBase plus memoryLimitPerClient per connection, at least memoryLimitFloor.
// Without a limit the GC lets the heap grow to twice what is live and the scavenger keeps most of
// what it freed, which more than doubled a 1,000-device gateway's RSS. A fixed limit would make a
// larger fleet than it was sized for collect without pause; one that follows the fleet does not.

const (
	// releaseEvery is how often the connection count is looked at.
	releaseEvery = 5 * time.Second
	// releaseMinDrop is the fewest departed connections worth a release (a forced GC).
	releaseMinDrop = 32

	// Measured per connection (deploy/README.md, "Memory"): mochi's read goroutine's stack is
	// 32 KiB once a PUBLISH went through its hooks, its write goroutine's a few KiB, and the
	// heap (queues, buffers, session, dedupe ring) about 10 KiB.
	// The limit leaves the GC about 16 MiB of headroom over that at 1,000 devices (63 MiB), and
	// never goes below 48 MiB, so a small fleet does not collect often for no gain.
	memoryLimitBase      = 16 << 20
	memoryLimitPerClient = 48 << 10
	memoryLimitFloor     = 48 << 20
)

// memoryLimit is the soft limit for n connected clients.
func memoryLimit(n int64) int64 {
	return max(memoryLimitFloor, memoryLimitBase+memoryLimitPerClient*n)
}

// watchMemory runs until ctx ends.
func watchMemory(ctx context.Context, connected *int64, autoLimit bool) {
	t := time.NewTicker(releaseEvery)
	defer t.Stop()
	var peak, limit int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := atomic.LoadInt64(connected)
		if autoLimit {
			if l := memoryLimit(n); l != limit {
				debug.SetMemoryLimit(l)
				limit = l
			}
		}
		peak = max(peak, n)
		if peak-n >= releaseMinDrop && n <= peak/2 {
			debug.FreeOSMemory()
			peak = n
		}
	}
}
