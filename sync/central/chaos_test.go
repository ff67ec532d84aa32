package central_test

import (
	"context"
	"flag"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/sync/forward"
)

var chaosRounds = flag.Int("chaos-rounds", 5, "SIGKILL rounds of central in TestKillCentral (raise for a soak)")

// TestKillCentral forwards live readings to central running as a child process and SIGKILLs it
// at random moments, round after round, then checks that the merged stream holds every reading
// exactly once, in order per device.
func TestKillCentral(t *testing.T) {
	c, url, token := startChildCentral(t, childCentral{})

	edge, st := openEdge(t, 4)
	defer edge.Close()
	f := newFleet(300, 2)
	fwd, stopFwd := runForwarder(t, edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token,
		MaxChunkBytes: 32 << 10, BackoffMin: 20 * time.Millisecond})
	_ = fwd

	// Load: bounded in count and time, running through every kill.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var appended atomic.Int64
	loadDone := make(chan struct{})
	stopLoad := make(chan struct{})
	go func() {
		defer close(loadDone)
		for i := 0; i < 2000 && ctx.Err() == nil; i++ {
			select {
			case <-stopLoad:
				return
			default:
			}
			appendAll(t, st, f, 100)
			appended.Add(100)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	rng := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < *chaosRounds; round++ {
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		c.kill()
		time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
		c.start()
		t.Logf("round %d: killed and restarted central with %d readings appended", round+1, appended.Load())
	}
	close(stopLoad)
	<-loadDone
	waitCaughtUp(t, url, appended.Load(), 60*time.Second)
	stopFwd()
	got := drain(t, url)
	got.verify(t, f)
}
