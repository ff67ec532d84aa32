package central_test

import (
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/forward"
)

// TestSingleRecordLive forwards one lone reading appended while the forwarder idles: the
// smallest chunk there is (its zstd frame has no content size unless re-encoded).
func TestSingleRecordLive(t *testing.T) {
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	url, stop := startCentral(t, cdir)
	defer stop()
	edge, st := openEdge(t, 4)
	defer edge.Close()
	f := newFleet(3, 1)
	_, stopFwd := runForwarder(t, edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token})
	defer stopFwd()
	time.Sleep(100 * time.Millisecond)
	appendRecords(t, st, []storage.Record{f.next(time.Now())})
	waitCaughtUp(t, url, 1, 5*time.Second)
}
