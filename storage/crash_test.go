//go:build unix

package storage

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash test re-executes the test binary as a child that appends with group commit and
// prints every acknowledged record; the parent kills it with SIGKILL at a random moment and
// checks that everything acknowledged survived. TestMain runs the child before goleak.
const (
	crashChildEnv  = "TRIBUTARY_CRASH_CHILD"
	crashRoundEnv  = "TRIBUTARY_CRASH_ROUND"
	crashRoundsEnv = "TRIBUTARY_CRASH_ROUNDS"
	crashStream    = "crash"
	crashParts     = 4
	crashWriters   = 64
)

var crashRounds = flag.Int("crash.rounds", 0, "crash test rounds (default 20, or $"+crashRoundsEnv+")")

// crashOptions makes segments small so rolls and seals (and kills in the middle of them) happen
// in every round.
func crashOptions() *Options {
	return &Options{Fsync: FsyncGroup, SegmentBytes: 24 << 10, FrameBytes: 4 << 10, MaintenanceInterval: 20 * time.Millisecond}
}

func crashValue(round, writer, seq int) []byte {
	pad := strings.Repeat("x", (seq*7+writer)%90)
	return fmt.Appendf(nil, `{"round":%d,"writer":%d,"seq":%d,"pad":%q}`, round, writer, seq, pad)
}

func crashKey(round, writer int) []byte { return fmt.Appendf(nil, "r%d-w%d", round, writer) }

// crashChild is the child's main: it never returns normally, the parent kills it.
func crashChild(dir string) int {
	round, _ := strconv.Atoi(os.Getenv(crashRoundEnv))
	opts := crashOptions()
	if round%2 == 1 {
		// Odd rounds commit adaptively, as the edge does: groups gathered over several
		// milliseconds are cut too, and an ack still means durable.
		opts.CommitBudget = 20 * time.Millisecond
	}
	l, err := Open(dir, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 2
	}
	s, err := l.CreateStream(crashStream, StreamConfig{Partitions: crashParts})
	if err != nil {
		fmt.Fprintln(os.Stderr, "create stream:", err)
		return 2
	}
	lines := make(chan string, 4096)
	go func() {
		w := bufio.NewWriter(os.Stdout)
		for line := range lines {
			w.WriteString(line)
			if len(lines) == 0 {
				w.Flush()
			}
		}
	}()
	lines <- "READY\n"
	ack := func(p int, off int64, w, seq int, v []byte) {
		lines <- fmt.Sprintf("A %d %d %d %d %d\n", p, off, w, seq, crc32.ChecksumIEEE(v))
	}
	for w := 0; w < crashWriters; w++ {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(round), uint64(w)))
			key := crashKey(round, w)
			if w%2 == 0 {
				// Waits for each durable ack, like an MQTT QoS 1 device.
				for seq := 0; ; seq++ {
					v := crashValue(round, w, seq)
					p, off, err := s.Append(context.Background(), Record{Key: key, Value: v, Timestamp: time.Now()})
					if err != nil {
						fmt.Fprintln(os.Stderr, "append:", err)
						os.Exit(3)
					}
					ack(p, off, w, seq, v)
					if rng.IntN(4) == 0 {
						time.Sleep(time.Millisecond)
					}
				}
			}
			// Pipelines up to 8 appends, like a gateway bridge acking asynchronously.
			sem := make(chan struct{}, 8)
			for seq := 0; ; seq++ {
				sem <- struct{}{}
				v := crashValue(round, w, seq)
				s.AppendAsync(Record{Key: key, Value: v, Timestamp: time.Now()}, func(p int, off int64, err error) {
					if err != nil {
						fmt.Fprintln(os.Stderr, "append async:", err)
						os.Exit(3)
					}
					ack(p, off, w, seq, v)
					<-sem
				})
				if rng.IntN(8) == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	select {}
}

type crashAck struct {
	key string
	seq int
	crc uint32
}

// runCrashChild starts a child, kills it after killAfter (counted from its READY line, or from
// the start when beforeReady), and returns the acknowledgements it fully printed.
func runCrashChild(t *testing.T, dir string, round int, killAfter time.Duration, beforeReady bool) map[[2]int64]crashAck {
	t.Helper()
	return runCrashChildCut(t, dir, round, killAfter, beforeReady, func(pid int) error {
		return syscall.Kill(pid, syscall.SIGKILL)
	})
}

// runCrashChildCut is runCrashChild with the kill left to kill (SIGKILL, or a power cut).
func runCrashChildCut(t *testing.T, dir string, round int, killAfter time.Duration, beforeReady bool, kill func(pid int) error) map[[2]int64]crashAck {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	acks := map[[2]int64]crashAck{}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		br := bufio.NewReader(out)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return // a line cut by the kill does not count
			}
			if line == "READY\n" {
				close(ready)
				continue
			}
			var p, off int64
			var w, seq int
			var crc uint32
			if _, err := fmt.Sscanf(line, "A %d %d %d %d %d\n", &p, &off, &w, &seq, &crc); err != nil {
				t.Errorf("child printed %q", line)
				continue
			}
			acks[[2]int64{p, off}] = crashAck{string(crashKey(round, w)), seq, crc}
		}
	}()
	if !beforeReady {
		select {
		case <-ready:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: child not ready after 20s; stderr: %s", round, stderr.String())
		}
	}
	time.Sleep(killAfter)
	// SIGKILL our own child by PID: no chance to flush or close anything.
	if err := kill(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	<-readDone
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("round %d: child exited by itself (%v); stderr: %s", round, err, stderr.String())
	}
	return acks
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test starts child processes")
	}
	rounds := 20
	if n, err := strconv.Atoi(os.Getenv(crashRoundsEnv)); err == nil && n > 0 {
		rounds = n
	}
	if *crashRounds > 0 {
		rounds = *crashRounds
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("crash test: %d rounds, seed %d", rounds, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	acked := map[[2]int64]crashAck{}
	from := [crashParts]int64{} // first offset acked in the latest round, for incremental checks
	totalAcks := 0
	for round := 0; round < rounds; round++ {
		beforeReady := rng.IntN(10) == 0 // sometimes kill during Open and recovery
		kill := time.Duration(rng.IntN(120)) * time.Millisecond
		got := runCrashChild(t, dir, round, kill, beforeReady)
		totalAcks += len(got)
		for p := range from {
			from[p] = 1<<63 - 1
		}
		for k, v := range got {
			acked[k] = v
			from[k[0]] = min(from[k[0]], k[1])
		}
		// Check everything in the normal run; a long run checks the newest round each time and
		// everything every 25 rounds, to keep the cost linear.
		full := rounds <= 50 || round%25 == 24 || round == rounds-1
		checkCrashLog(t, dir, round, acked, from, full)
		if t.Failed() {
			t.Fatalf("round %d (seed %d, kill after %v, before ready %v) failed", round, seed, kill, beforeReady)
		}
	}
	t.Logf("crash test: %d acknowledged records checked over %d rounds", totalAcks, rounds)
	if totalAcks == 0 {
		t.Fatal("no child acknowledged anything")
	}
}

// checkCrashLog reopens the log and checks that every acknowledged record is present and
// intact, that offsets are dense, that each writer's records are in order, and that appends
// continue.
func checkCrashLog(t *testing.T, dir string, round int, acked map[[2]int64]crashAck, from [crashParts]int64, full bool) {
	t.Helper()
	l, err := Open(dir, crashOptions())
	if err != nil {
		t.Fatalf("round %d: reopen: %v", round, err)
	}
	defer l.Close()
	if d := l.Damage(); len(d) > 0 {
		t.Errorf("round %d: damage after a process crash: %v", round, d[0])
	}
	s, err := l.CreateStream(crashStream, StreamConfig{Partitions: crashParts})
	if err != nil {
		t.Fatal(err)
	}
	for p := 0; p < crashParts; p++ {
		part := s.Partition(p)
		start := int64(0)
		if !full && from[p] < part.EndOffset() {
			start = from[p]
		}
		lastSeq := map[string]int{}
		seen := map[[2]int64]bool{}
		r := part.NewReader(start, nil)
		want := start
		for {
			e, err := r.Next(context.Background())
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("round %d partition %d: read at %d: %v", round, p, want, err)
			}
			if e.Gap != nil {
				t.Fatalf("round %d partition %d: gap %+v after a process crash", round, p, *e.Gap)
			}
			if e.Offset != want {
				t.Fatalf("round %d partition %d: offset %d, want %d (offsets must be dense)", round, p, e.Offset, want)
			}
			want++
			k := [2]int64{int64(p), e.Offset}
			seen[k] = true
			var rr, w, seq int
			if _, err := fmt.Sscanf(string(e.Value), `{"round":%d,"writer":%d,"seq":%d`, &rr, &w, &seq); err != nil {
				if strings.HasPrefix(string(e.Key), "parent-") {
					continue
				}
				t.Fatalf("round %d partition %d offset %d: bad value %q", round, p, e.Offset, e.Value)
			}
			key := string(e.Key)
			if key != string(crashKey(rr, w)) || PartitionFor(e.Key, crashParts) != p {
				t.Fatalf("round %d partition %d offset %d: key %q does not match value %q", round, p, e.Offset, key, e.Value)
			}
			if last, ok := lastSeq[key]; ok && seq <= last {
				t.Fatalf("round %d partition %d offset %d: %s seq %d after %d (out of order or duplicate)", round, p, e.Offset, key, seq, last)
			}
			lastSeq[key] = seq
			if a, ok := acked[k]; ok {
				if a.key != key || a.seq != seq || a.crc != crc32.ChecksumIEEE(e.Value) {
					t.Fatalf("round %d partition %d offset %d: acked %+v, stored %s seq %d crc %d", round, p, e.Offset, a, key, seq, crc32.ChecksumIEEE(e.Value))
				}
			}
		}
		for k, a := range acked {
			if k[0] == int64(p) && k[1] >= start && !seen[k] {
				t.Fatalf("round %d: acknowledged record lost: partition %d offset %d %+v (end %d)", round, p, k[1], a, part.EndOffset())
			}
		}
	}
	if round == 0 || full && round%10 == 9 {
		sealed, plain := 0, 0
		for p := 0; p < crashParts; p++ {
			for _, si := range s.Partition(p).Segments() {
				if si.Sealed {
					sealed++
				} else {
					plain++
				}
			}
		}
		t.Logf("round %d: %d sealed and %d plain segments", round, sealed, plain)
	}
	// Appends continue after recovery, at the end of what is there.
	var wg sync.WaitGroup
	for p := 0; p < crashParts; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			part := s.Partition(p)
			end := part.EndOffset()
			off, err := part.Append(context.Background(), Record{Key: []byte("parent-" + strconv.Itoa(round)), Value: []byte("after recovery")})
			if err != nil || off != end {
				t.Errorf("round %d partition %d: append after reopen: offset %d (end was %d), %v", round, p, off, end, err)
			}
		}()
	}
	wg.Wait()
}
