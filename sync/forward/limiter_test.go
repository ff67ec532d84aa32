package forward

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/protocol"
	"github.com/tributary-iot/tributary/sync/receive"
)

// limiterRate is the cap of the limiter unit tests: 100 kB/s, so the bucket holds 5000 bytes.
const limiterRate = 100_000

// TestLimiterLiveBeforeQueuedBacklog puts the bucket a second into debt, queues backlog waiters,
// then adds one live waiter. Nothing can be served before the debt is repaid, so when tokens
// return the live waiter and every backlog waiter want them, and the live one must go first.
//
// The first case is the one only the priority decides: each backlog send needs a fifth of the
// tokens the live one needs, so without it the backlog waiters, which fit earlier, take every
// token as it comes and the live send goes last. In the second case all sends need the same
// tokens; without the priority the live waiter wins only when it happens to wake first.
func TestLimiterLiveBeforeQueuedBacklog(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		backlogBytes, liveBytes int
	}{
		{"live needs more than each backlog send", 1000, 5000},
		{"live and backlog need the same", 5000, 5000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const backlogWaiters = 6
			l := newLimiter(limiterRate)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// One send larger than the bucket goes at once and leaves a second of debt.
			if err := l.wait(ctx, limiterRate+int(l.burst), false); err != nil {
				t.Fatal(err)
			}
			served := make(chan string, backlogWaiters+1)
			var wg sync.WaitGroup
			defer wg.Wait()
			waiter := func(name string, n int, live bool) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := l.wait(ctx, n, live); err != nil {
						served <- name + ": " + err.Error()
						return
					}
					served <- name
				}()
			}
			for i := 0; i < backlogWaiters; i++ {
				waiter("backlog-"+strconv.Itoa(i), tc.backlogBytes, false)
			}
			waiter("live", tc.liveBytes, true)
			waitLiveWaiting(t, l, 1)
			if len(served) != 0 {
				t.Fatalf("%q was served while the bucket was in debt; the machine is too slow for this setup", <-served)
			}

			var order []string
			for len(order) < backlogWaiters+1 {
				select {
				case name := <-served:
					order = append(order, name)
				case <-ctx.Done():
					t.Fatalf("served only %v", order)
				}
			}
			if order[0] != "live" {
				t.Errorf("served %v: the live send waited behind queued backlog sends", order)
			}
		})
	}
}

// TestLimiterCancelledLiveReleasesBacklog checks that a live waiter that gives up stops holding
// back the backlog: the priority is a count of live waiters, and a count left behind would stall
// every backlog send for good.
func TestLimiterCancelledLiveReleasesBacklog(t *testing.T) {
	l := newLimiter(limiterRate)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Half a second of debt keeps both sends waiting until the live one is cancelled.
	if err := l.wait(ctx, limiterRate/2+int(l.burst), false); err != nil {
		t.Fatal(err)
	}
	liveCtx, cancelLive := context.WithCancel(ctx)
	liveDone := make(chan error, 1)
	go func() { liveDone <- l.wait(liveCtx, 1000, true) }()
	waitLiveWaiting(t, l, 1)
	backlogDone := make(chan error, 1)
	go func() { backlogDone <- l.wait(ctx, 1000, false) }()
	cancelLive()
	if err := <-liveDone; err == nil {
		t.Fatal("the live send was served before it was cancelled; the machine is too slow for this setup")
	} else if err != context.Canceled {
		t.Fatalf("cancelled live wait returned %v, want %v", err, context.Canceled)
	}
	select {
	case err := <-backlogDone:
		if err != nil {
			t.Fatalf("backlog wait: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("backlog send still held back 5s after the only live waiter gave up")
	}
}

// waitLiveWaiting returns once want live sends wait in l. The limiter has no hook to signal it,
// so this polls its count, for at most 5s.
func waitLiveWaiting(t *testing.T, l *limiter, want int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		l.mu.Lock()
		n := l.liveWaiting
		l.mu.Unlock()
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d live sends waiting after 5s, want %d", n, want)
		}
	}
}

// TestForwarderLiveOvertakesBacklog forwards a backlog on one partition through a 100 kB/s cap
// and, while it drains, one live reading on another partition, against a receiver on loopback
// that records the order in which it stores chunks. The live reading must be stored before the
// backlog has covered half of what it still had to send when the reading was appended.
//
// The live chunk (one 16 kB reading, say a vibration waveform) needs the whole bucket, while each
// backlog chunk needs about two thirds of it: without the priority the backlog lane's queued
// sends take the tokens as soon as they suffice, the bucket never fills, and the live reading
// waits for the whole backlog. That is the case TestBandwidthCapLiveFirst cannot tell apart.
func TestForwarderLiveOvertakesBacklog(t *testing.T) {
	const (
		capBytes       = 100_000 // the bucket holds 5000 bytes
		backlogRecords = 300     // about 2s at the cap
		backlogValue   = 500
		liveValue      = 16 << 10
	)
	rcv, _, token := testReceiver(t, receive.Config{Partitions: 2})

	type arrival struct {
		partition int
		next      int64 // central's next offset for the partition once the chunk is stored
		at        time.Time
	}
	var (
		mu            sync.Mutex
		stored        []arrival // in the order central answered them
		backlogChunks = make(chan struct{}, 1024)
		liveStored    = make(chan struct{})
		backlogDone   = make(chan struct{})
	)
	backlogPath, livePath := protocol.SyncPath("readings", 0), protocol.SyncPath("readings", 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		rcv.ServeHTTP(sw, r)
		if r.Method != http.MethodPost || sw.code != http.StatusOK {
			return
		}
		a := arrival{at: time.Now()}
		a.next, _ = strconv.ParseInt(r.Header.Get(protocol.HeaderNext), 10, 64)
		mu.Lock()
		defer mu.Unlock()
		switch r.URL.Path {
		case backlogPath:
			select {
			case backlogChunks <- struct{}{}:
			default:
			}
			if a.next == backlogRecords && !isClosed(backlogDone) {
				close(backlogDone)
			}
		case livePath:
			a.partition = 1
			if !isClosed(liveStored) {
				close(liveStored)
			}
		}
		stored = append(stored, a)
	}))
	defer srv.Close()

	log, st := openLog(t, t.TempDir(), 2)
	defer log.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < backlogRecords; i++ {
		if _, _, err := st.Append(context.Background(), storage.Record{Key: keyFor(0, 2), Value: random(rng, backlogValue), Timestamp: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	f, err := New(log, Config{CentralURL: srv.URL, EdgeID: "gw-1", Token: token, BandwidthBytesPerSec: capBytes,
		MaxChunkBytes: 3 << 10, InFlight: 8, BackoffMin: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stop := run(t, f)
	defer stop()

	// Append the live reading once the backlog drains under the cap with sends queued.
	timeout := time.After(15 * time.Second)
	for i := 0; i < 5; i++ {
		select {
		case <-backlogChunks:
		case <-timeout:
			t.Fatalf("%d backlog chunks stored in 15s", i)
		}
	}
	mu.Lock()
	storedBefore := len(stored)
	mu.Unlock()
	liveAt := time.Now()
	if _, _, err := st.Append(context.Background(), storage.Record{Key: keyFor(1, 2), Value: random(rng, liveValue), Timestamp: liveAt}); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []chan struct{}{liveStored, backlogDone} {
		select {
		case <-ch:
		case <-timeout:
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("central stored only %d chunks in 15s", len(stored))
		}
	}
	drained := time.Since(start)
	mu.Lock()
	defer mu.Unlock()

	// backlogAt is where the backlog stood at central after the first i stored chunks.
	backlogAt := func(i int) int64 {
		var next int64
		for _, a := range stored[:i] {
			if a.partition == 0 {
				next = max(next, a.next)
			}
		}
		return next
	}
	live := slices.IndexFunc(stored, func(a arrival) bool { return a.partition == 1 })
	from, at := backlogAt(storedBefore), backlogAt(live)
	half := from + (backlogRecords-from)/2
	t.Logf("live reading appended with the backlog at %d of %d records, stored with the backlog at %d (%d backlog chunks answered in between) %v later; backlog drained in %v",
		from, backlogRecords, at, live-storedBefore, stored[live].at.Sub(liveAt).Round(time.Millisecond), drained.Round(time.Millisecond))
	if at >= half {
		t.Errorf("live reading stored with the backlog at %d of %d records (appended at %d): it waited behind backlog sends, want it before %d",
			at, backlogRecords, from, half)
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
