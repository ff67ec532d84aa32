package central_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/sync/forward"
)

// TestStopDoesNotWaitForLongPolls: a consumer long-polling at the end of a stream (wait=30s) must not
// hold central's stop for the shutdown's 5 s bound; central ends the poll and stops at once.
func TestStopDoesNotWaitForLongPolls(t *testing.T) {
	dir := t.TempDir()
	token := addEdge(t, dir, "gw-1")
	url, stop := startCentral(t, dir)
	edge, st := openEdge(t, 2)
	defer edge.Close()
	f := newFleet(10, 3)
	appendAll(t, st, f, 20)
	_, stopFwd := runForwarder(t, edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token})
	waitCaughtUp(t, url, 20, 10*time.Second)
	stopFwd()

	polled := make(chan error, 1)
	go func() {
		resp, err := http.Get(url + "/v1/consume/readings?from=end&wait=30s")
		if err == nil {
			resp.Body.Close()
		}
		polled <- err
	}()
	time.Sleep(300 * time.Millisecond) // the poll is waiting at the end of both partitions
	start := time.Now()
	stop()
	took := time.Since(start)
	select {
	case <-polled:
	case <-time.After(5 * time.Second):
		t.Fatal("the long poll was still open 5s after central stopped")
	}
	// Before the fix the stop took the full 5 s bound of the HTTP shutdown.
	if took > 2*time.Second {
		t.Errorf("central took %v to stop with a long poll open, want well under the 5s shutdown bound", took)
	}
	t.Logf("stopped in %v with a long poll open", took.Round(time.Millisecond))
}
