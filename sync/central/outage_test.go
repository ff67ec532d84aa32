package central_test

import (
	"context"
	"flag"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/forward"
)

var centralDown = flag.Duration("central-down", 3*time.Second, "how long TestCentralOutage keeps central killed (minutes for a soak)")

// TestCentralOutage kills central (a child process) for a stretch while the edge keeps
// appending live readings, restarts it, and measures how fast the backlog drains against the
// live rate. Afterwards every reading is at central exactly once, per-device order intact.
func TestCentralOutage(t *testing.T) {
	const rate = 5000 // readings per second, in 10 ms ticks
	c, url, token := startChildCentral(t, childCentral{})

	edge, st := openEdge(t, 4)
	defer edge.Close()
	f := newFleet(300, 21)
	// The shipped backoff defaults, spelled out because runForwarder shortens unset ones, so the
	// resume figure is what an installed edge does: the cap is the longest a lane waits before
	// noticing central is back.
	_, stopFwd := runForwarder(t, edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token,
		BackoffMin: forward.DefaultBackoffMin, BackoffMax: forward.DefaultBackoffMax})
	defer stopFwd()

	ctx, cancel := context.WithTimeout(context.Background(), *centralDown+5*time.Minute)
	defer cancel()
	var appended atomic.Int64
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for ctx.Err() == nil && appended.Load() < 20_000_000 {
			select {
			case <-stopLoad:
				return
			case <-tick.C:
			}
			appendAll(t, st, f, rate/100)
			appended.Add(rate / 100)
		}
	}()

	time.Sleep(time.Second)
	waitCaughtUp(t, url, appended.Load()-rate/2, 10*time.Second) // live before the outage
	c.kill()
	downAt, downCount := time.Now(), appended.Load()
	time.Sleep(*centralDown)
	c.start()
	upAt, atRestart := time.Now(), appended.Load()
	liveRate := float64(atRestart-downCount) / upAt.Sub(downAt).Seconds()
	before := centralCount(t, url)
	// Drained when central holds everything appended by the restart; live readings keep coming.
	// The first rise separates reconnecting (backoff) from draining.
	type sample struct {
		at time.Time
		n  int64
	}
	var samples []sample
	var firstAt time.Time
	for deadline := upAt.Add(5 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
		n := centralCount(t, url)
		samples = append(samples, sample{time.Now(), n})
		if firstAt.IsZero() && n > before {
			firstAt = time.Now()
		}
		if n >= atRestart {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("central holds %d of %d readings 5 minutes after its restart", n, atRestart)
		}
	}
	drained := time.Since(firstAt)
	drainRate := float64(atRestart-before) / max(drained.Seconds(), 0.01)
	// Lanes resume one by one, each after its own jittered backoff (up to the cap), so the time
	// from the first rise to the last record includes the slowest lane's wait. The catch-up speed
	// is the fastest half second of the drain, when lanes are moving.
	peakRate := drainRate
	for i, j := 0, 0; j < len(samples); j++ {
		for samples[j].at.Sub(samples[i].at) > 500*time.Millisecond {
			i++
		}
		if w := samples[j].at.Sub(samples[i].at); w >= 400*time.Millisecond && !samples[i].at.Before(firstAt.Add(-10*time.Millisecond)) {
			peakRate = max(peakRate, float64(samples[j].n-samples[i].n)/w.Seconds())
		}
	}
	t.Logf("central down %v: backlog %d readings at restart; forwarding resumed after %v and drained it in %v: %.0f readings/s, the slowest lane's backoff included; fastest half second %.0f readings/s, %.1fx the live rate of %.0f/s (live kept coming)",
		upAt.Sub(downAt).Round(time.Millisecond), atRestart-before, firstAt.Sub(upAt).Round(time.Millisecond),
		drained.Round(time.Millisecond), drainRate, peakRate, peakRate/liveRate, liveRate)

	// Generous for a loaded machine: the cap plus ten seconds, where a 30 s cap would show.
	if resumed := firstAt.Sub(upAt); resumed > forward.DefaultBackoffMax+10*time.Second {
		t.Errorf("forwarding resumed %v after central returned; the backoff cap is %v", resumed, forward.DefaultBackoffMax)
	}
	time.Sleep(500 * time.Millisecond)
	close(stopLoad)
	<-loadDone
	waitCaughtUp(t, url, appended.Load(), 60*time.Second)
	if peakRate < 2*liveRate {
		t.Errorf("backlog drained at %.0f readings/s at best, under twice the live rate %.0f/s: an outage's backlog would take long to clear", peakRate, liveRate)
	}
	got := drain(t, url)
	got.verify(t, f)
}

// centralCount is how many readings central holds, waiting for it to answer.
func centralCount(t *testing.T, url string) int64 {
	t.Helper()
	cl := &consume.Client{BaseURL: url}
	deadline := time.Now().Add(10 * time.Second)
	for {
		streams, err := cl.Streams(context.Background())
		if err == nil {
			return readingsEnd(streams)
		}
		if time.Now().After(deadline) {
			t.Fatalf("central does not answer: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
