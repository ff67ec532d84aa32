package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/edge"
	"github.com/tributary-iot/tributary/internal/testcpu"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/forward"
)

var (
	consumeReadings = flag.Int("consume-readings", 1_000_000, "readings BenchmarkConsumeCLI puts at central")
	consumeArgs     = flag.String("consume-args", "", "extra arguments for the consume command in BenchmarkConsumeCLI, space separated")
	consumeProfile  = flag.String("consume-cpuprofile", "", "BenchmarkConsumeCLI: write the consume command's CPU profile (of its last run) to this file")
	consumePeer     = flag.String("consume-peer", "", "BenchmarkConsumeCLI: a second tributary binary (e.g. an older build) whose consume runs against the same central in each round, alternating order")
)

// BenchmarkConsumeCLI fills a real `tributary central` child process with readings forwarded from
// an edge log (200 devices, the edge agent's headers, 2 edge partitions, central's 8), then runs
// the real `tributary consume --central URL --from-beginning` with its output on /dev/null. It
// reports end-to-end records/s and CPU per record in the consume command and in central, next to
// storage's own scan of the same records on the same machine in the same run (the ceiling).
// -consume-peer runs a second binary's consume in the same rounds, for before/after figures on a
// shared machine; -consume-cpuprofile profiles the command.
func BenchmarkConsumeCLI(b *testing.B) {
	n := *consumeReadings
	bin := filepath.Join(b.TempDir(), "tributary")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("build tributary: %v\n%s", err, out)
	}
	dir := b.TempDir()
	cdir := filepath.Join(dir, "central")
	out, err := exec.Command(bin, "central", "edges", "add", "gw-1", "--data-dir", cdir).Output()
	if err != nil {
		b.Fatalf("edges add: %v", err)
	}
	token := strings.TrimSpace(string(out))
	addr := freePort(b)
	url := "http://" + addr
	central := exec.Command(bin, "central", "--data-dir", cdir, "--listen", addr)
	var centralOut bytes.Buffer
	central.Stdout, central.Stderr = &centralOut, &centralOut
	if err := central.Start(); err != nil {
		b.Fatal(err)
	}
	stopped := false
	stopCentral := func() {
		if stopped {
			return
		}
		stopped = true
		central.Process.Signal(syscall.SIGTERM)
		if err := central.Wait(); err != nil {
			b.Errorf("central exited with %v\n%s", err, centralOut.String())
		}
	}
	defer stopCentral()
	waitHTTP(b, url+"/healthz")

	fillCentral(b, dir, url, token, n)

	// run runs one consume with binary bin to its end and returns its wall and CPU time.
	run := func(bin string, first bool, profile string) (wall, cpu time.Duration) {
		args := []string{"consume", "--central", url, "--from-beginning"}
		if *consumeArgs != "" {
			args = append(args, strings.Fields(*consumeArgs)...)
		}
		if profile != "" {
			args = append(args, "--cpuprofile", profile)
		}
		cmd := exec.Command(bin, args...)
		devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer devnull.Close()
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = devnull, &stderr
		start := time.Now()
		err = cmd.Run()
		wall = time.Since(start)
		if err != nil {
			b.Fatalf("consume (%s): %v\n%s", bin, err, stderr.String())
		}
		if first {
			b.Logf("consume's stderr (%s): %s", bin, strings.TrimSpace(stderr.String()))
			if got, ok := summaryRecords(stderr.String()); ok && got != n {
				b.Fatalf("consume (%s) printed %d records, want %d", bin, got, n)
			}
		}
		return wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}

	b.ResetTimer()
	var wall, cliCPU, centralCPU, peerCPU time.Duration
	for i := 0; i < b.N; i++ {
		// With a peer binary the two alternate which goes first, so a load swing on a shared
		// machine does not always fall on the same one.
		if *consumePeer != "" && i%2 == 1 {
			_, cpu := run(*consumePeer, i == 1, "")
			peerCPU += cpu
		}
		c0 := procCPU(b, central.Process.Pid)
		w, cpu := run(bin, i == 0, *consumeProfile)
		centralCPU += procCPU(b, central.Process.Pid) - c0
		wall += w
		cliCPU += cpu
		if *consumePeer != "" && i%2 == 0 {
			_, cpu := run(*consumePeer, i == 0, "")
			peerCPU += cpu
		}
	}
	b.StopTimer()
	stopCentral()
	scanWall, scanCPU, scanned := scanCentral(b, cdir)
	if scanned != n {
		b.Fatalf("storage scan found %d records at central, want %d", scanned, n)
	}
	records := float64(n) * float64(b.N)
	e2e := records / wall.Seconds()
	scan := float64(n) / scanWall.Seconds()
	b.ReportMetric(e2e, "records/s")
	b.ReportMetric(float64(cliCPU.Microseconds())/records, "cli-CPU-µs/record")
	b.ReportMetric(float64(centralCPU.Microseconds())/records, "central-CPU-µs/record")
	b.ReportMetric(scan, "scan-records/s")
	b.ReportMetric(float64(scanCPU.Microseconds())/float64(n), "scan-CPU-µs/record")
	b.ReportMetric(e2e/scan, "e2e/scan")
	if *consumePeer != "" {
		b.ReportMetric(float64(peerCPU.Microseconds())/records, "peer-cli-CPU-µs/record")
		b.ReportMetric(float64(cliCPU)/float64(peerCPU), "cli/peer-CPU")
	}
	b.ReportMetric(0, "ns/op")
}

// summaryRecords reads the record count from consume's closing summary line, when it prints one.
func summaryRecords(stderr string) (int, bool) {
	for _, line := range strings.Split(stderr, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "consumed" {
			n, err := strconv.Atoi(f[1])
			return n, err == nil
		}
	}
	return 0, false
}

// procCPU is the user plus system CPU time a running process has used so far.
func procCPU(tb testing.TB, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatalf("read central's CPU time: %v", err)
	}
	// Fields after the command name (which may hold spaces) start at field 3; utime and stime
	// are fields 14 and 15, in clock ticks of 1/100 s on Linux.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// scanCentral reads every record of central's readings stream with a storage Reader: the ceiling
// the consume path is measured against.
func scanCentral(tb testing.TB, dir string) (wall, cpu time.Duration, records int) {
	log, err := storage.Open(dir, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer log.Close()
	st, err := log.Stream("readings")
	if err != nil {
		tb.Fatal(err)
	}
	c0 := testcpu.Self()
	start := time.Now()
	for i := 0; i < st.Partitions(); i++ {
		r := st.Partition(i).NewReader(0, nil)
		for {
			e, err := r.Next(context.Background())
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				tb.Fatal(err)
			}
			if e.Gap == nil {
				records++
			}
		}
	}
	return time.Since(start), testcpu.Self() - c0, records
}

// fillCentral appends n readings with the headers the edge agent writes to an edge log and
// forwards them to central until central holds them all.
func fillCentral(tb testing.TB, dir, url, token string, n int) {
	f := startFeeder(tb, dir, url, token)
	defer f.stop()
	f.add(n)
	f.waitCentral(int64(n), 10*time.Minute)
}

// feeder is an edge log of 2 partitions whose readings a forwarder sends to central.
type feeder struct {
	tb     testing.TB
	url    string
	log    *storage.Log
	st     *storage.Stream
	gen    *readingGen
	cancel context.CancelFunc
	done   chan error
}

func startFeeder(tb testing.TB, dir, url, token string) *feeder {
	log, err := storage.Open(filepath.Join(dir, "edge"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	st, err := log.CreateStream("readings", storage.StreamConfig{Partitions: 2})
	if err != nil {
		tb.Fatal(err)
	}
	fwd, err := forward.New(log, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &feeder{tb: tb, url: url, log: log, st: st, gen: newReadingGen(200, 7), cancel: cancel, done: make(chan error, 1)}
	go func() { f.done <- fwd.Run(ctx) }()
	return f
}

func (f *feeder) stop() {
	f.cancel()
	if err := <-f.done; err != nil {
		f.tb.Errorf("forwarder: %v", err)
	}
	f.log.Close()
}

// add appends n readings durably to the edge log.
func (f *feeder) add(n int) {
	for done := 0; done < n; done += 10000 {
		var wg sync.WaitGroup
		now := time.Now()
		for j := 0; j < min(10000, n-done); j++ {
			wg.Add(1)
			f.st.AppendAsync(f.gen.next(now), func(_ int, _ int64, err error) {
				if err != nil {
					f.tb.Error(err)
				}
				wg.Done()
			})
		}
		wg.Wait()
	}
}

// waitCentral waits until central's streams hold want records.
func (f *feeder) waitCentral(want int64, timeout time.Duration) {
	cl := &consume.Client{BaseURL: f.url}
	deadline := time.Now().Add(timeout)
	var got int64
	for time.Now().Before(deadline) {
		got = 0
		if streams, err := cl.Streams(context.Background()); err == nil {
			for _, s := range streams {
				for _, p := range s.Partitions {
					got += p.End
				}
			}
		}
		if got >= want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.tb.Fatalf("central holds %d readings after %v, want %d", got, timeout, want)
}

// readingGen makes the readings of a fleet: ~120-byte JSON with slowly varying values, and the
// record headers the edge agent writes for a QoS 1 publish.
type readingGen struct {
	devices []string
	seq     []int64
	rng     *rand.Rand
}

func newReadingGen(devices int, seed uint64) *readingGen {
	g := &readingGen{rng: rand.New(rand.NewPCG(seed, seed+1))}
	for i := 0; i < devices; i++ {
		g.devices = append(g.devices, fmt.Sprintf("sensor-%04d", i))
		g.seq = append(g.seq, 0)
	}
	return g
}

func (g *readingGen) next(now time.Time) storage.Record {
	i := g.rng.IntN(len(g.devices))
	g.seq[i]++
	t := float64(g.seq[i]) / 600
	dev := g.devices[i]
	v, _ := json.Marshal(map[string]any{"device": dev, "seq": g.seq[i], "ts": now.UnixMilli(),
		"temp_c": math.Round((21+3*math.Sin(t+float64(i)))*10) / 10, "humidity": math.Round((45+5*math.Cos(t/2))*10) / 10,
		"battery_v": math.Round((3.7-float64(g.seq[i])/1e6)*100) / 100})
	ms := []byte(strconv.FormatInt(now.UnixMilli(), 10))
	return storage.Record{Key: []byte(dev), Value: v, Timestamp: now, Headers: []storage.Header{
		{Key: edge.HeaderTopic, Value: []byte("devices/" + dev + "/readings")},
		{Key: edge.HeaderContentType, Value: []byte("application/json")},
		{Key: edge.HeaderDeviceTime, Value: ms},
		{Key: edge.HeaderReceiveTime, Value: ms},
		{Key: edge.HeaderClientID, Value: []byte(dev)},
		{Key: edge.HeaderPacketID, Value: []byte(strconv.Itoa(int(g.seq[i]%65535) + 1))},
		{Key: edge.HeaderPayloadHash, Value: []byte(fmt.Sprintf("%016x", g.rng.Uint64()))},
	}}
}
