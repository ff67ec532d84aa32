package central_test

import (
	"context"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/sync/forward"
	"github.com/tributary-iot/tributary/sync/internal/faultproxy"
)

// TestFaultyLink forwards live readings through a TCP proxy that resets, drops, stalls, refuses
// and throttles the link to 64 kbit/s, and checks that every reading arrives exactly once.
func TestFaultyLink(t *testing.T) {
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	url, stopCentral := startCentral(t, cdir)
	defer stopCentral()
	proxy, err := faultproxy.Start(url[len("http://"):])
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()

	edge, st := openEdge(t, 4)
	defer edge.Close()
	f := newFleet(200, 5)
	fwd, stopFwd := runForwarder(t, edge, forward.Config{CentralURL: "http://" + proxy.Addr(), EdgeID: "gw-1", Token: token,
		MaxChunkBytes: 16 << 10, RequestTimeout: 2 * time.Second, BackoffMin: 20 * time.Millisecond})
	defer stopFwd()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	total := 0
	// live load for a while: 20 readings every 10 ms (2k/s), bounded by count
	load := func(d time.Duration) {
		end := time.Now().Add(d)
		for time.Now().Before(end) && ctx.Err() == nil && total < 200000 {
			appendAll(t, st, f, 20)
			total += 20
			time.Sleep(10 * time.Millisecond)
		}
	}
	faults := []struct {
		name       string
		start, end func()
	}{
		{"reset", proxy.ResetAll, func() {}},
		{"drop", proxy.DropAll, func() {}},
		{"stall 1.5s", func() { proxy.Stall(true) }, func() { proxy.Stall(false) }},
		{"refuse", func() { proxy.Refuse(true); proxy.ResetAll() }, func() { proxy.Refuse(false) }},
		{"throttle 64 kbit/s", func() { proxy.Throttle(64000 / 8) }, func() { proxy.Throttle(0) }},
		{"reset under throttle", func() { proxy.Throttle(64000 / 8); proxy.ResetAll() }, func() { proxy.Throttle(0) }},
	}
	for _, fault := range faults {
		load(300 * time.Millisecond)
		fault.start()
		load(1500 * time.Millisecond)
		fault.end()
		t.Logf("%s: %d readings appended so far", fault.name, total)
	}
	load(300 * time.Millisecond)
	waitCaughtUp(t, url, int64(total), 60*time.Second)
	var retries int64
	for _, s := range fwd.Status() {
		retries += s.Retries
	}
	t.Logf("forwarder retried %d times", retries)
	if retries == 0 {
		t.Errorf("no retries: the faults did not reach the forwarder")
	}
	got := drain(t, url)
	got.verify(t, f)
}
