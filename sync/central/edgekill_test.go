package central_test

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/forward"
)

var edgeKillRounds = flag.Int("edge-kill-rounds", 5, "SIGKILL rounds of the edge child in TestKillEdge (raise for a soak)")

// edgeChildEnv makes the test binary run as an edge (see runEdgeChild).
const edgeChildEnv = "TRIBUTARY_TEST_EDGE_CHILD"

const edgeChildPartitions = 4

// runEdgeChild is an edge as a child process, so a test can SIGKILL it: it opens the edge log in
// EDGE_DIR, appends readings of a simulated fleet at EDGE_RATE per second with AppendAsync, prints
// "D partition offset device seq" once each is durable, and forwards the log to CENTRAL_URL.
// Device sequence numbers resume after the highest one in the log, so a restart on the same
// directory continues each device where its durable readings end.
func runEdgeChild() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := edgeChild(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "edge child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func edgeChild(ctx context.Context) error {
	log, err := storage.Open(os.Getenv("EDGE_DIR"), &storage.Options{SegmentBytes: 256 << 10})
	if err != nil {
		return err
	}
	defer log.Close()
	st, err := log.CreateStream("readings", storage.StreamConfig{Partitions: edgeChildPartitions})
	if err != nil {
		return err
	}
	seed, _ := strconv.ParseUint(os.Getenv("EDGE_SEED"), 10, 64)
	f := newFleet(100, 100) // the same devices in every run; seq and rng below differ
	f.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	if err := resumeFleet(ctx, st, f); err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	var outMu sync.Mutex
	var end int64
	for p := 0; p < st.Partitions(); p++ {
		end += st.Partition(p).EndOffset()
	}
	fmt.Fprintf(out, "READY %d\n", end)
	out.Flush()

	bandwidth, _ := strconv.ParseInt(os.Getenv("EDGE_BANDWIDTH"), 10, 64)
	fwd, err := forward.New(log, forward.Config{CentralURL: os.Getenv("CENTRAL_URL"), EdgeID: "gw-1", Token: os.Getenv("EDGE_TOKEN"),
		MaxChunkBytes: 32 << 10, BackoffMin: 20 * time.Millisecond, BackoffMax: 500 * time.Millisecond, CursorInterval: 100 * time.Millisecond,
		BandwidthBytesPerSec: bandwidth})
	if err != nil {
		panic(err)
	}
	fwdDone := make(chan error, 1)
	go func() { fwdDone <- fwd.Run(ctx) }()

	rate, _ := strconv.Atoi(os.Getenv("EDGE_RATE"))
	var pending sync.WaitGroup
	if rate > 0 {
		// A steady rate in 10 ms ticks, bounded in time (the parent kills or stops us long before).
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		sent := 0
	load:
		for time.Since(start) < 2*time.Minute {
			select {
			case <-ctx.Done():
				break load
			case <-tick.C:
			}
			due := int(time.Since(start).Seconds()*float64(rate)) - sent
			for i := 0; i < due; i++ {
				rec := f.next(time.Now())
				var r reading
				json.Unmarshal(rec.Value, &r)
				pending.Add(1)
				st.AppendAsync(rec, func(p int, off int64, err error) {
					defer pending.Done()
					if err != nil {
						return // never reported: the parent does not count on it
					}
					outMu.Lock()
					fmt.Fprintf(out, "D %d %d %s %d\n", p, off, r.Device, r.Seq)
					outMu.Unlock()
				})
			}
			sent += due
			outMu.Lock()
			out.Flush()
			outMu.Unlock()
		}
	} else {
		<-ctx.Done()
	}
	pending.Wait()
	outMu.Lock()
	out.Flush()
	outMu.Unlock()
	return <-fwdDone
}

// resumeFleet sets each device's sequence number to the highest one stored in the log.
func resumeFleet(ctx context.Context, st *storage.Stream, f *fleet) error {
	index := map[string]int{}
	for i, d := range f.devices {
		index[d] = i
	}
	for p := 0; p < st.Partitions(); p++ {
		part := st.Partition(p)
		rd := part.NewReader(part.StartOffset(), nil)
		for {
			e, err := rd.Next(ctx)
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("scan partition %d: %w", p, err)
			}
			if e.Gap != nil {
				continue
			}
			var r reading
			if err := json.Unmarshal(e.Value, &r); err != nil {
				return fmt.Errorf("partition %d offset %d: %w", p, e.Offset, err)
			}
			if i, ok := index[r.Device]; ok && r.Seq > f.seq[i] {
				f.seq[i] = r.Seq
			}
		}
	}
	return nil
}

// durableReading is what the edge child reported durable.
type durableReading struct {
	partition int
	offset    int64
	device    string
	seq       int64
}

// childEdge runs runEdgeChild on one data directory and collects its durable reports.
type childEdge struct {
	t                 *testing.T
	dir, url, token   string
	cmd               *exec.Cmd
	mu                sync.Mutex
	reported          []durableReading
	readers           sync.WaitGroup
	lastEnd, restarts int64
	bandwidth         int64 // forwarder cap in bytes/s; 0 none
}

func (e *childEdge) start(rate int) {
	e.t.Helper()
	e.restarts++
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), edgeChildEnv+"=1", "EDGE_DIR="+e.dir, "CENTRAL_URL="+e.url, "EDGE_TOKEN="+e.token,
		fmt.Sprintf("EDGE_RATE=%d", rate), fmt.Sprintf("EDGE_SEED=%d", e.restarts), fmt.Sprintf("EDGE_BANDWIDTH=%d", e.bandwidth))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	ready := make(chan int64, 1)
	e.readers.Add(1)
	go func() {
		defer e.readers.Done()
		defer close(ready)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if end, ok := strings.CutPrefix(line, "READY "); ok {
				n, _ := strconv.ParseInt(end, 10, 64)
				ready <- n
				continue
			}
			var d durableReading
			if _, err := fmt.Sscanf(line, "D %d %d %s %d", &d.partition, &d.offset, &d.device, &d.seq); err != nil {
				continue // a line cut by SIGKILL
			}
			e.mu.Lock()
			e.reported = append(e.reported, d)
			e.mu.Unlock()
		}
	}()
	select {
	case end, ok := <-ready:
		if !ok {
			cmd.Wait()
			e.t.Fatal("edge child exited before it was ready")
		}
		e.lastEnd = end
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		e.t.Fatal("edge child not ready in 30s")
	}
	e.cmd = cmd
}

func (e *childEdge) kill() {
	if e.cmd == nil {
		return
	}
	e.cmd.Process.Signal(syscall.SIGKILL)
	e.cmd.Wait()
	e.readers.Wait()
	e.cmd = nil
}

func (e *childEdge) stop() {
	if e.cmd == nil {
		return
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { e.cmd.Wait(); close(done) }()
	select {
	case <-done:
		e.readers.Wait()
		e.cmd = nil
	case <-time.After(15 * time.Second):
		e.kill()
	}
}

func (e *childEdge) reports() []durableReading {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]durableReading(nil), e.reported...)
}

// TestKillEdge runs the edge as a child process that appends readings at a steady rate and
// forwards them to central, and SIGKILLs it at random moments, restarting it on the same data
// directory each time. Every reading the edge reported durable must reach central exactly once,
// with the edge partition and offset it was reported at, in per-device order; and central holds
// exactly what the edge log holds, nothing more.
func TestKillEdge(t *testing.T) {
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	url, stopCentral := startCentral(t, cdir)
	defer stopCentral()
	e := &childEdge{t: t, dir: t.TempDir(), url: url, token: token}
	defer e.kill()

	rng := rand.New(rand.NewPCG(7, 8))
	for round := 0; round < *edgeKillRounds; round++ {
		e.start(2000)
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		e.kill()
		t.Logf("round %d: killed the edge with %d readings reported durable", round+1, len(e.reports()))
	}
	// A last run without load forwards what the log holds; its READY line says how much that is.
	e.start(0)
	end := e.lastEnd
	waitCaughtUp(t, url, end, 60*time.Second)
	e.stop()

	got := map[[2]int64]consume.Message{}
	byDevice := map[string]int64{}
	var count int64
	var problems []string
	cl := &consume.Client{BaseURL: url}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := cl.Consume(ctx, consume.Options{Stream: "readings", FromBeginning: true}, func(m consume.Message) error {
		count++
		var r reading
		if err := json.Unmarshal(m.Payload(), &r); err != nil {
			return err
		}
		k := [2]int64{int64(m.EdgePartition), m.EdgeOffset}
		if _, dup := got[k]; dup {
			problems = append(problems, fmt.Sprintf("edge %d/%d twice", k[0], k[1]))
		}
		got[k] = m
		if r.Seq <= byDevice[r.Device] {
			problems = append(problems, fmt.Sprintf("%s seq %d after %d", r.Device, r.Seq, byDevice[r.Device]))
		}
		byDevice[r.Device] = r.Seq
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if count != end {
		problems = append(problems, fmt.Sprintf("central holds %d readings, the edge log %d", count, end))
	}
	reported := e.reports()
	missing := 0
	for _, d := range reported {
		m, ok := got[[2]int64{int64(d.partition), d.offset}]
		if !ok {
			missing++
			continue
		}
		var r reading
		json.Unmarshal(m.Payload(), &r)
		if r.Device != d.device || r.Seq != d.seq {
			problems = append(problems, fmt.Sprintf("edge %d/%d holds %s/%d at central, reported %s/%d", d.partition, d.offset, r.Device, r.Seq, d.device, d.seq))
		}
	}
	if missing > 0 {
		problems = append(problems, fmt.Sprintf("%d readings reported durable are missing at central", missing))
	}
	if len(problems) > 0 {
		t.Fatalf("%d problems, first: %v", len(problems), problems[:min(len(problems), 10)])
	}
	if len(reported) == 0 {
		t.Fatal("the edge reported nothing durable")
	}
	t.Logf("%d readings reported durable over %d kills, all at central exactly once (%d in the edge log), per-device order intact",
		len(reported), *edgeKillRounds, count)
}
