//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	firmwaresim "github.com/tributary-iot/tributary/firmware-sim"
	"github.com/tributary-iot/tributary/internal/lossyfs"
	"github.com/tributary-iot/tributary/storage"
)

var (
	powercutRounds = flag.Int("powercut.rounds", 3, "power cuts TestPowerCut makes (of the edge, central or both)")
	powercutSeed   = flag.Uint64("powercut.seed", 0, "seed of TestPowerCut's choices; 0 picks one (logged)")
)

// A cut aims at one of these moments, or at none (a random moment).
type target struct {
	name string
	hit  func(ev lossyfs.Event) bool
}

func inStreams(p string) bool { return strings.HasPrefix(p, "streams/") }

var (
	targetRoll = target{"segment roll", func(ev lossyfs.Event) bool {
		return ev.Op == lossyfs.OpCreate && inStreams(ev.Path) && strings.HasSuffix(ev.Path, ".log")
	}}
	targetSeal = target{"seal rename", func(ev lossyfs.Event) bool {
		return ev.Op == lossyfs.OpRename && strings.HasSuffix(ev.To, ".zst")
	}}
	targetSealWrite = target{"seal write", func(ev lossyfs.Event) bool {
		return ev.Op == lossyfs.OpWrite && strings.HasSuffix(ev.Path, ".zst.tmp")
	}}
	targetDrop = target{"retention or quota drop", func(ev lossyfs.Event) bool {
		return ev.Op == lossyfs.OpRemove && inStreams(ev.Path) && !strings.HasSuffix(ev.Path, ".tmp")
	}}
	targetBolt = target{"bbolt commit", func(ev lossyfs.Event) bool {
		return ev.Op == lossyfs.OpFsync && ev.Path == "meta.db"
	}}
	targetBoltWrite = target{"bbolt page write", func(ev lossyfs.Event) bool {
		return ev.Op == lossyfs.OpWrite && ev.Path == "meta.db"
	}}
	targetGroupCommit = target{"group commit", func(ev lossyfs.Event) bool {
		return ev.Op == lossyfs.OpFsync && strings.HasSuffix(ev.Path, ".log")
	}}
	edgeTargets = []target{targetRoll, targetSeal, targetSealWrite, targetDrop, targetBolt, targetBoltWrite, targetGroupCommit}
	// Central keeps the storage default segment size (16 MiB), so it seals rarely; its bbolt
	// commits are its apply checkpoints.
	centralTargets = []target{targetBolt, targetBoltWrite, targetGroupCommit}
)

// powerNode is one node (edge or central) as a child process on its own lossy mount.
type powerNode struct {
	name  string
	bin   string
	args  []string
	fs    *lossyfs.FS
	log   *os.File
	ready func() error
	aim   atomic.Pointer[target] // armed target; the watcher freezes the mount when it is hit
	hits  atomic.Pointer[target] // the target that froze the mount
	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
}

func (n *powerNode) watch(ev lossyfs.Event) bool {
	tg := n.aim.Load()
	if tg == nil || !tg.hit(ev) {
		return false
	}
	if !n.aim.CompareAndSwap(tg, nil) {
		return false
	}
	n.hits.Store(tg)
	return true
}

func (n *powerNode) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(n.bin, n.args...)
	cmd.Stdout, cmd.Stderr = n.log, n.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", n.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := n.ready()
		if err == nil {
			return
		}
		select {
		case <-done:
			t.Fatalf("%s exited at start (%v):\n%s", n.name, cmd.ProcessState, n.tail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 60s: %v\n%s", n.name, err, n.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *powerNode) pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd.Process.Pid
}

// cut cuts the node's power and waits for the process to be reaped.
func (n *powerNode) cut(t *testing.T) lossyfs.CutReport {
	t.Helper()
	rep, err := n.fs.Cut(n.pid())
	if err != nil {
		t.Fatalf("cut %s: %v", n.name, err)
	}
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	<-done
	return rep
}

// stop ends the node with SIGTERM, as an operator would, and expects a clean exit.
func (n *powerNode) stop(t *testing.T) {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		if !cmd.ProcessState.Success() {
			t.Errorf("%s exited with %v after SIGTERM:\n%s", n.name, cmd.ProcessState, n.tail())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Errorf("%s did not stop within 30s of SIGTERM:\n%s", n.name, n.tail())
	}
}

// tail returns the end of the node's log.
func (n *powerNode) tail() string {
	b, _ := os.ReadFile(n.log.Name())
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// TestPowerCut runs the real edge and central, each on its own lossy mount, under a fleet of 100
// QoS 1 devices, and cuts the power of the edge, of central or of both, at random moments and
// right after the risky ones (a segment roll, a seal, a retention or quota drop, a bbolt commit,
// which on central is its apply checkpoint, a group commit). After each cut the node restarts.
// At the end every reading the edge acked must be at central exactly once and in order per
// device, except readings inside gaps the quota policy declared.
//
// go test ./cmd/tributary -run TestPowerCut -powercut.rounds=200 runs many rounds.
func TestPowerCut(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries and runs a fleet")
	}
	seed := *powercutSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -powercut.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	tributary, _ := buildBinaries(t)
	work := t.TempDir() // configs, tokens and logs: outside the mounts, as on a real machine

	central := &powerNode{name: "central", bin: tributary}
	edge := &powerNode{name: "edge", bin: tributary}
	central.fs = lossyfs.Mount(t, &lossyfs.Options{TearWrites: true, Seed: seed + 1, Watch: central.watch})
	edge.fs = lossyfs.Mount(t, &lossyfs.Options{TearWrites: true, Seed: seed + 2, Watch: edge.watch})
	for _, n := range []*powerNode{central, edge} {
		f, err := os.Create(filepath.Join(work, n.name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		n.log = f
	}

	centralAddr, mqttAddr, edgeHTTP := freePort(t), freePort(t), freePort(t)
	centralURL := "http://" + centralAddr
	centralDir, edgeDir := central.fs.Dir(), edge.fs.Dir()
	writeFile(t, filepath.Join(work, "central.yaml"), fmt.Sprintf(
		"data_dir: %s\nlisten: %s\npartitions: 2\n", centralDir, centralAddr))
	central.args = []string{"central", "--config", filepath.Join(work, "central.yaml")}
	central.ready = func() error { return httpOK(centralURL + "/healthz") }

	tokenFile := filepath.Join(work, "edge.token")
	addEdgeToken(t, tributary, centralDir, tokenFile)
	// Small segments and a small quota make rolls, seals and quota drops happen every second.
	writeFile(t, filepath.Join(work, "edge.yaml"), fmt.Sprintf(`data_dir: %s
edge_id: gw-1
central: %s
forward:
  token_file: %s
  backoff_max: 500ms
http_listen: %s
mqtt:
  listen: %s
segment_bytes: 32768
quota_bytes: 1048576
quota_policy: drop-oldest
default_partitions: 2
`, edgeDir, centralURL, tokenFile, edgeHTTP, mqttAddr))
	edge.args = []string{"edge", "--config", filepath.Join(work, "edge.yaml")}
	edge.ready = func() error { return httpOK("http://" + edgeHTTP + "/readyz") }

	// Cleanups run in reverse: the nodes stop before their mounts go.
	t.Cleanup(func() {
		for _, n := range []*powerNode{edge, central} {
			n.mu.Lock()
			if n.cmd != nil {
				n.cmd.Process.Kill()
				<-n.done
			}
			n.mu.Unlock()
		}
	})
	central.start(t)
	edge.start(t)

	fleet, err := firmwaresim.NewFleet(firmwaresim.Config{
		Broker: "tcp://" + mqttAddr, Devices: 100, Rate: 5, QoS: 1, Duration: 24 * time.Hour, Seed: int64(seed),
		// Devices keep retrying through a restart of the edge.
		ConnectTimeout: 2 * time.Second, AckTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	fleetCtx, stopFleet := context.WithCancel(context.Background())
	defer stopFleet()
	type fleetResult struct {
		rep *firmwaresim.Report
		err error
	}
	fleetDone := make(chan fleetResult, 1)
	go func() {
		rep, err := fleet.Run(fleetCtx)
		fleetDone <- fleetResult{rep, err}
	}()

	const edgeMinUptime = 6 * time.Second
	edgeUp := time.Now()
	cuts := map[string]int{}
	aimed := map[string]int{}
	missed := 0
	var lost lossyfs.CutReport
	for round := range *powercutRounds {
		var victims []*powerNode
		switch kind := rng.IntN(3); kind {
		case 0:
			victims = []*powerNode{edge}
		case 1:
			victims = []*powerNode{central}
		default:
			victims = []*powerNode{edge, central}
		}
		time.Sleep(time.Duration(300+rng.IntN(1700)) * time.Millisecond)
		if victims[0] == edge {
			// A device backs off up to 5s between connection attempts and gives up after 10
			// failures in a row: let the fleet back in before the edge goes down again.
			time.Sleep(time.Until(edgeUp.Add(edgeMinUptime)))
		}
		what := "random moment"
		if rng.IntN(3) > 0 { // two cuts in three aim at a risky moment
			v := victims[rng.IntN(len(victims))]
			targets := edgeTargets
			if v == central {
				targets = centralTargets
			}
			tg := targets[rng.IntN(len(targets))]
			v.hits.Store(nil)
			v.aim.Store(&tg)
			deadline := time.Now().Add(5 * time.Second)
			for !v.fs.Frozen() && time.Now().Before(deadline) {
				time.Sleep(2 * time.Millisecond)
			}
			v.aim.Store(nil)
			if h := v.hits.Load(); h != nil && v.fs.Frozen() {
				what = v.name + " " + h.name
				aimed[what]++
			} else {
				what = "random moment (" + v.name + " " + tg.name + " not seen in 5s)"
				missed++
			}
		}
		names := make([]string, len(victims))
		var wg sync.WaitGroup
		reps := make([]lossyfs.CutReport, len(victims))
		for i, v := range victims {
			names[i] = v.name
			wg.Go(func() { reps[i] = v.cut(t) })
		}
		wg.Wait()
		for _, r := range reps {
			lost.FilesReverted += r.FilesReverted
			lost.DirsReverted += r.DirsReverted
			lost.TornWrites += r.TornWrites
		}
		kind := strings.Join(names, "+")
		cuts[kind]++
		t.Logf("round %d: cut %s at %s; thrown away %+v", round+1, kind, what, reps)
		for _, v := range victims {
			if t.Failed() {
				return
			}
			v.start(t)
			if v == edge {
				edgeUp = time.Now()
			}
		}
	}

	stopFleet()
	res := <-fleetDone
	if res.rep == nil {
		t.Fatalf("fleet: %v", res.err)
	}
	if res.err != nil {
		t.Logf("devices that gave up reconnecting: %d (%v)", strings.Count(res.err.Error(), "give up"), strings.SplitN(res.err.Error(), "\n", 2)[0])
	}
	manifest := res.rep.Manifest
	var acked uint64
	for _, d := range manifest.Devices {
		for _, r := range d.Acked {
			acked += r.Last - r.First + 1
		}
	}

	// Forwarding catches up after the last cut; verify until central holds every acked reading.
	var v *firmwaresim.Verification
	deadline := time.Now().Add(90 * time.Second)
	for {
		// Reading back a long run takes a while on a loaded machine: bound it generously.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		v, err = firmwaresim.VerifySource(ctx, firmwaresim.CentralSource{URL: centralURL}, &firmwaresim.VerifyOptions{Manifest: manifest})
		cancel()
		if err == nil && v.OK() || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	edge.stop(t)
	central.stop(t)
	gaps := map[string]int64{}
	quotaGapRecords := int64(0)
	for _, n := range []*powerNode{edge, central} {
		rep := inspectReport(t, tributary, n.fs.Dir())
		var records int64
		for _, s := range rep.Streams {
			for _, p := range s.Partitions {
				records += p.EndOffset
			}
		}
		t.Logf("%s log: %d records stored", n.name, records)
		for _, g := range gapsOf(rep) {
			gaps[n.name+" "+g.Reason] += g.Records
			if n == edge && g.Reason == storage.GapQuotaDropped {
				quotaGapRecords += g.Records
			}
		}
	}

	stats := []lossyfs.Stats{edge.fs.Stats(), central.fs.Stats()}
	t.Logf("power cuts: %d rounds; cuts %v; aimed %v; aims not reached in time %d", *powercutRounds, cuts, aimed, missed)
	t.Logf("thrown away at cuts: %d files with unsynced data, %d folders with unsynced entries, %d torn writes kept",
		lost.FilesReverted, lost.DirsReverted, lost.TornWrites)
	t.Logf("edge mount: %d writes, %d file syncs, %d folder syncs; central mount: %d writes, %d file syncs, %d folder syncs",
		stats[0].Writes, stats[0].FileSyncs, stats[0].DirSyncs, stats[1].Writes, stats[1].FileSyncs, stats[1].DirSyncs)
	t.Logf("readings: %d acked, %d received at central, %d lost, %d duplicated, %d out of order, %d unacked and missing; gaps (records) %v",
		acked, v.Received, v.Lost, v.Duplicated, v.OutOfOrder, v.UnackedMissing, gaps)
	if v.Duplicated > 0 || v.OutOfOrder > 0 || v.BadLines > 0 {
		t.Errorf("central's stream broke a promise: %v", v.Err())
	}
	if int64(v.Lost) > quotaGapRecords {
		var ranges []string
		for _, d := range v.Devices {
			if d.Lost > 0 && len(ranges) < 10 {
				ranges = append(ranges, fmt.Sprintf("%s %v", d.Device, d.LostRanges))
			}
		}
		t.Errorf("%d acked readings lost, only %d records in quota gaps: %s", v.Lost, quotaGapRecords, strings.Join(ranges, "; "))
	}
	if acked == 0 {
		t.Error("no reading was acked: the fleet never ran")
	}
	if t.Failed() {
		t.Logf("edge log:\n%s", edge.tail())
		t.Logf("central log:\n%s", central.tail())
	}
}

func httpOK(url string) error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// inspectReport returns what `tributary inspect` reports for a stopped node's data dir.
func inspectReport(t *testing.T, bin, dir string) *storage.Report {
	t.Helper()
	var rep storage.Report
	out, err := exec.Command(bin, "inspect", "--format", "json", dir).Output()
	if err != nil {
		t.Errorf("inspect %s: %v", dir, err)
		return &rep
	}
	if err := json.NewDecoder(bytes.NewReader(out)).Decode(&rep); err != nil {
		t.Errorf("inspect %s: %v\n%s", dir, err, out)
	}
	return &rep
}

func gapsOf(rep *storage.Report) []storage.Gap {
	var gaps []storage.Gap
	for _, s := range rep.Streams {
		for _, p := range s.Partitions {
			gaps = append(gaps, p.Gaps...)
		}
	}
	return gaps
}
