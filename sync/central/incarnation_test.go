package central_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/protocol"
	"github.com/tributary-iot/tributary/sync/receive"
)

// lockedBuffer collects central's log lines for a test to read.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startCentralLogged runs central in this process with its log lines kept.
func startCentralLogged(t *testing.T, dir string) (url string, logs *lockedBuffer, stop func()) {
	t.Helper()
	logs = &lockedBuffer{}
	addr, stop := runCentral(t, central.Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	return "http://" + addr, logs, stop
}

func edgesView(t *testing.T, url string) central.EdgesView {
	t.Helper()
	resp, err := http.Get(url + "/v1/edges")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v central.EdgesView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func lanesByPartition(v central.EdgesView) map[int]receive.LaneInfo {
	out := map[int]receive.LaneInfo{}
	for _, l := range v.Lanes {
		out[l.Partition] = l
	}
	return out
}

// centralReadings reads central's whole stream keyed by (incarnation, edge partition, edge
// offset), central's dedupe key; a key seen twice is a duplicate.
func centralReadings(t *testing.T, url string) (map[string]reading, int) {
	t.Helper()
	got := map[string]reading{}
	dups := 0
	cl := &consume.Client{BaseURL: url}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := cl.Consume(ctx, consume.Options{Stream: "readings", FromBeginning: true, Headers: protocol.ProvEdgeIncarnation}, func(m consume.Message) error {
		var r reading
		if err := json.Unmarshal(m.Payload(), &r); err != nil {
			return err
		}
		k := fmt.Sprintf("%s/%d/%d", m.Headers[protocol.ProvEdgeIncarnation], m.EdgePartition, m.EdgeOffset)
		if _, ok := got[k]; ok {
			dups++
		}
		got[k] = r
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, dups
}

func totalNext(lanes map[int]receive.LaneInfo) int64 {
	var n int64
	for _, l := range lanes {
		n += l.Next
	}
	return n
}

// checkAt asserts that every reading in rs is at central under the lane's incarnation.
func checkAt(t *testing.T, what string, got map[string]reading, rs []durableReading, inc func(p int) string) {
	t.Helper()
	missing, wrong := 0, 0
	for _, d := range rs {
		r, ok := got[fmt.Sprintf("%s/%d/%d", inc(d.partition), d.partition, d.offset)]
		switch {
		case !ok:
			missing++
		case r.Device != d.device || r.Seq != d.seq:
			wrong++
		}
	}
	if missing > 0 || wrong > 0 || len(rs) == 0 {
		t.Fatalf("%s: %d readings acked, %d missing at central, %d hold another reading", what, len(rs), missing, wrong)
	}
	t.Logf("%s: all %d acked readings at central", what, len(rs))
}

// TestWipedEdgeDataDir wipes an edge's data dir while it keeps its id and token, as an SD card
// swap or a reinstall does, and restarts it (a child process) on the empty dir. Every reading
// the new log acks must reach central, exactly once; central starts a new epoch on each lane,
// says so in its log, and records what the old log had past central's position as a gap.
func TestWipedEdgeDataDir(t *testing.T) {
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	url, logs, stopCentral := startCentralLogged(t, cdir)
	defer stopCentral()
	// The old log's forwarder is capped below the load, so it is behind when the disk goes.
	e := &childEdge{t: t, dir: t.TempDir(), url: url, token: token, bandwidth: 20 << 10}
	defer e.kill()

	e.start(2000)
	time.Sleep(1200 * time.Millisecond)
	e.kill() // acked readings the forwarder had not sent yet go with the disk
	e.bandwidth = 0
	first := e.reports()
	time.Sleep(200 * time.Millisecond)
	before := lanesByPartition(edgesView(t, url))
	if len(before) != edgeChildPartitions || totalNext(before) == 0 {
		t.Fatalf("before the wipe: lanes %+v", before)
	}
	old := before[0].Incarnation
	if old == "" {
		t.Fatal("the edge sent no incarnation")
	}

	if err := os.RemoveAll(e.dir); err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	e.reported = nil
	e.mu.Unlock()
	e.start(2000)
	time.Sleep(time.Second)
	e.stop()
	second := e.reports()
	e.start(0)
	waitCaughtUp(t, url, totalNext(before)+e.lastEnd, 60*time.Second)
	e.stop()

	after := lanesByPartition(edgesView(t, url))
	got, dups := centralReadings(t, url)
	if dups > 0 {
		t.Fatalf("%d duplicates at central", dups)
	}
	for p, l := range after {
		if l.Epoch != 2 || l.Incarnation == old || l.Incarnation == "" {
			t.Fatalf("lane %d after the wipe: epoch %d incarnation %q (was %q), want epoch 2 and a new incarnation", p, l.Epoch, l.Incarnation, old)
		}
	}
	checkAt(t, "new log", got, second, func(p int) string { return after[p].Incarnation })
	forwarded, lost := []durableReading{}, 0
	for _, d := range first {
		if d.offset < before[d.partition].Next {
			forwarded = append(forwarded, d)
		} else {
			lost++
		}
	}
	checkAt(t, "old log, below central's position at the wipe", got, forwarded, func(int) string { return old })
	var gapped int64
	for _, g := range edgesView(t, url).Gaps {
		if g.Reason != receive.GapLogReplaced || g.Incarnation != old || g.From != before[g.Partition].Next {
			t.Fatalf("unexpected gap %+v", g)
		}
		gapped += g.To - g.From
	}
	t.Logf("old log: %d acked readings central never got (gone with the disk); %d of them recorded as gaps (central knows the old log's end only as last reported)", lost, gapped)
	if lost == 0 || gapped == 0 {
		t.Fatalf("the old log was not behind (%d lost, %d gapped): the test did not exercise the gap", lost, gapped)
	}
	if !strings.Contains(logs.String(), "lane starts a new epoch") {
		t.Fatalf("central did not log the epoch change:\n%s", logs.String())
	}
}

// TestEdgeRestoredFromOlderCopy puts an older copy of an edge's data dir back (a restored
// backup: same incarnation, fewer records than central holds). The edge must notice that central
// is past its log's end, continue that partition as a new incarnation that keeps the common
// prefix, and every reading acked before and after reaches central exactly once.
func TestEdgeRestoredFromOlderCopy(t *testing.T) {
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	url, logs, stopCentral := startCentralLogged(t, cdir)
	defer stopCentral()
	e := &childEdge{t: t, dir: t.TempDir(), url: url, token: token}
	defer e.kill()

	e.start(2000)
	time.Sleep(600 * time.Millisecond)
	e.stop()
	copyDir := t.TempDir()
	if out, err := exec.Command("cp", "-a", e.dir+"/.", copyDir).CombinedOutput(); err != nil {
		t.Fatalf("copy data dir: %v %s", err, out)
	}
	e.start(2000)
	time.Sleep(600 * time.Millisecond)
	e.stop()
	e.start(0)
	waitCaughtUp(t, url, e.lastEnd, 60*time.Second)
	e.stop()
	older := e.reports()
	before := lanesByPartition(edgesView(t, url))
	inc := before[0].Incarnation

	if err := os.RemoveAll(e.dir); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", copyDir+"/.", e.dir).CombinedOutput(); err != nil {
		t.Fatalf("restore data dir: %v %s", err, out)
	}
	e.mu.Lock()
	e.reported = nil
	e.mu.Unlock()
	e.start(2000)
	restoredEnd := e.lastEnd
	time.Sleep(time.Second)
	e.stop()
	restored := e.reports()
	e.start(0)
	waitCaughtUp(t, url, totalNext(before)+e.lastEnd-restoredEnd, 60*time.Second)
	e.stop()

	after := lanesByPartition(edgesView(t, url))
	got, dups := centralReadings(t, url)
	if dups > 0 {
		t.Fatalf("%d duplicates at central", dups)
	}
	checkAt(t, "before the restore", got, older, func(int) string { return inc })
	checkAt(t, "after the restore", got, restored, func(p int) string { return after[p].Incarnation })
	for p, l := range after {
		if l.Epoch != 2 || l.Incarnation == inc {
			t.Fatalf("lane %d after the restore: epoch %d incarnation %q, want epoch 2 and a new incarnation", p, l.Epoch, l.Incarnation)
		}
	}
	if n := int64(len(got)); n != totalNext(before)+e.lastEnd-restoredEnd {
		t.Fatalf("central holds %d readings, want %d", n, totalNext(before)+e.lastEnd-restoredEnd)
	}
	if !strings.Contains(logs.String(), "reason=edge-log-went-back") {
		t.Fatalf("central did not log the epoch change:\n%s", logs.String())
	}
}
