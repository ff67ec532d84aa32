package central_test

import (
	"context"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/forward"
)

func openEdge(t testing.TB, partitions int) (*storage.Log, *storage.Stream) {
	log, err := storage.Open(t.TempDir(), &storage.Options{SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	st, err := log.CreateStream("readings", storage.StreamConfig{Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	return log, st
}

func runForwarder(t testing.TB, log *storage.Log, cfg forward.Config) (*forward.Forwarder, func()) {
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin, cfg.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
	}
	cfg.CursorInterval = 100 * time.Millisecond
	fwd, err := forward.New(log, cfg)
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fwd.Run(ctx) }()
	return fwd, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("forwarder: %v", err)
		}
	}
}

// TestEndToEnd appends readings to a real edge log, forwards them over real HTTP to a central in
// this process and reads them back through the consume API: every reading exactly once, in order
// per device, with provenance.
func TestEndToEnd(t *testing.T) {
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	url, stopCentral := startCentral(t, cdir)
	defer stopCentral()

	edge, st := openEdge(t, 4)
	defer edge.Close()
	f := newFleet(300, 1)
	appendAll(t, st, f, 20000) // a backlog before the forwarder starts: sealed and open segments
	_, stopFwd := runForwarder(t, edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token})
	defer stopFwd()
	for i := 0; i < 20; i++ { // then live traffic
		appendAll(t, st, f, 500)
		time.Sleep(10 * time.Millisecond)
	}
	waitCaughtUp(t, url, 30000, 30*time.Second)
	c := drain(t, url)
	c.verify(t, f)

	// The forwarder cursor follows central's committed offsets, so retention can free segments.
	deadline := time.Now().Add(5 * time.Second)
	for p := 0; p < 4; p++ {
		for {
			off, ok := edge.Cursor(forward.CursorName, "readings", p)
			if ok && off == st.Partition(p).EndOffset() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("partition %d: forwarder cursor %d (set %v), want %d", p, off, ok, st.Partition(p).EndOffset())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
