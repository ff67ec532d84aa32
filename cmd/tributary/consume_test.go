package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// consumeLine is what the tests read back from a consume line.
type consumeLine struct {
	Partition int               `json:"partition"`
	Offset    int64             `json:"offset"`
	Key       string            `json:"key"`
	Headers   map[string]string `json:"headers"`
	Value     json.RawMessage   `json:"value"`
}

func readLines(t *testing.T, b []byte) []consumeLine {
	t.Helper()
	var out []consumeLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l consumeLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %d is not JSON: %v: %q", len(out)+1, err, sc.Text())
		}
		out = append(out, l)
	}
	return out
}

func countLines(path string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte("\n"))
}

// TestConsumeFollowAcrossCentralKill runs the real binaries: `tributary consume --follow` keeps
// printing while `tributary central` is SIGKILLed and restarted twice (once idle, once while
// readings flow); what it printed holds every reading exactly once with contiguous offsets, and
// firmware-sim's verifier passes on it. The same central then answers the kcat-style flags.
func TestConsumeFollowAcrossCentralKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	tributary, sim := buildBinaries(t)
	dir := t.TempDir()
	cdir := filepath.Join(dir, "central")
	out, err := exec.Command(tributary, "central", "edges", "add", "gw-1", "--data-dir", cdir).Output()
	if err != nil {
		t.Fatalf("edges add: %v", err)
	}
	addr := freePort(t)
	url := "http://" + addr
	var central *exec.Cmd
	var centralErr bytes.Buffer
	startCentral := func() {
		central = exec.Command(tributary, "central", "--data-dir", cdir, "--listen", addr)
		central.Stderr = &centralErr
		if err := central.Start(); err != nil {
			t.Fatal(err)
		}
		waitHTTP(t, url+"/healthz")
	}
	killCentral := func() {
		central.Process.Signal(syscall.SIGKILL)
		central.Wait()
	}
	startCentral()
	defer func() {
		central.Process.Signal(syscall.SIGTERM)
		central.Wait()
	}()
	f := startFeeder(t, dir, url, strings.TrimSpace(string(out)))
	defer f.stop()
	f.add(3000)
	f.waitCentral(3000, 30*time.Second)

	stream := filepath.Join(dir, "stream.jsonl")
	sf, err := os.Create(stream)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	var stderr bytes.Buffer
	cons := exec.Command(tributary, "consume", "--central", url, "--follow", "--from-beginning")
	cons.Stdout, cons.Stderr = sf, &stderr
	if err := cons.Start(); err != nil {
		t.Fatal(err)
	}
	defer cons.Process.Kill()
	waitLines := func(n int) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for countLines(stream) < n {
			if time.Now().After(deadline) {
				t.Fatalf("consume printed %d lines, want %d\nstderr: %s", countLines(stream), n, stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitLines(3000)
	killCentral() // the follower is idle at the end
	startCentral()
	f.add(2000)
	waitLines(5000)
	added := make(chan struct{})
	go func() { defer close(added); f.add(3000) }()
	time.Sleep(30 * time.Millisecond)
	killCentral() // readings are on their way
	startCentral()
	<-added
	waitLines(8000)
	time.Sleep(300 * time.Millisecond) // nothing more may come
	cons.Process.Signal(syscall.SIGTERM)
	if err := cons.Wait(); err != nil {
		t.Fatalf("consume exited with %v after SIGTERM\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "reconnecting") || !strings.Contains(stderr.String(), "consumed 8000 records") {
		t.Errorf("consume's stderr tells of no reconnection or a wrong count:\n%s", stderr.String())
	}
	b, _ := os.ReadFile(stream)
	lines := readLines(t, b)
	next := map[int]int64{}
	perKey := map[string]int{}
	for i, l := range lines {
		if l.Offset != next[l.Partition] {
			t.Fatalf("line %d: partition %d offset %d, want %d (a record repeated or skipped)", i+1, l.Partition, l.Offset, next[l.Partition])
		}
		next[l.Partition] = l.Offset + 1
		perKey[l.Key]++
	}
	verify := exec.Command(sim, "verify", "--input", stream)
	if out, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("firmware-sim verify fails on consume's output: %v\n%s", err, out)
	}
	t.Logf("8000 readings, contiguous, verified; consume's stderr:\n%s", stderr.String())

	// The kcat habits, against the same central.
	run := func(args ...string) ([]byte, string) {
		t.Helper()
		cmd := exec.Command(tributary, append([]string{"consume", "--central", url}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("consume %v: %v\n%s\ncentral's stderr:\n%s", args, err, stderr.String(), centralErr.String())
		}
		return out, stderr.String()
	}
	got, _ := run("--key", "sensor-0007", "--format", "value")
	vals := bytes.Split(bytes.TrimSuffix(got, []byte("\n")), []byte("\n"))
	if len(vals) != perKey["sensor-0007"] {
		t.Errorf("--key sensor-0007 printed %d values, the stream holds %d", len(vals), perKey["sensor-0007"])
	}
	for _, v := range vals {
		var r struct{ Device string }
		if json.Unmarshal(v, &r) != nil || r.Device != "sensor-0007" {
			t.Fatalf("--key sensor-0007 --format value printed %q", v)
		}
	}
	got, summary := run("--partition", "3", "--count", "5")
	ls := readLines(t, got)
	if len(ls) != 5 || ls[0].Partition != 3 || ls[0].Offset != 0 || ls[4].Offset != 4 {
		t.Errorf("--partition 3 --count 5 printed %+v", ls)
	}
	if !strings.Contains(summary, "consumed 5 records from 1 partitions") || !strings.Contains(summary, "last offsets 3:4") {
		t.Errorf("summary: %q", summary)
	}
	got, _ = run("--offsets", "2:10,5:20")
	ls = readLines(t, got)
	if want := int(next[2]-10) + int(next[5]-20); len(ls) != want {
		t.Errorf("--offsets 2:10,5:20 printed %d lines, want %d", len(ls), want)
	}
	first := map[int]int64{2: -1, 5: -1}
	for _, l := range ls {
		if _, ok := first[l.Partition]; !ok {
			t.Fatalf("--offsets 2:10,5:20 printed partition %d", l.Partition)
		}
		if first[l.Partition] < 0 {
			first[l.Partition] = l.Offset
		}
	}
	if first[2] != 10 || first[5] != 20 {
		t.Errorf("--offsets 2:10,5:20 started at %v", first)
	}
	got, _ = run("--format", "raw", "--count", "3", "--partition", "0")
	for _, v := range bytes.Split(bytes.TrimSuffix(got, []byte("\n")), []byte("\n")) {
		if !json.Valid(v) || !bytes.HasPrefix(v, []byte(`{"`)) {
			t.Errorf("--format raw printed %q, want the JSON payload", v)
		}
	}
	got, _ = run("--count", "1")
	if l := readLines(t, got); len(l) != 1 || l[0].Headers["topic"] == "" || l[0].Headers["device-time"] == "" ||
		l[0].Headers["payload-hash"] != "" || l[0].Headers["client-id"] != "" || len(l[0].Headers) > 3 {
		t.Errorf("default headers: %+v, want topic, device-time and at most edge-incarnation", l)
	}
	got, _ = run("--count", "1", "--headers", "all")
	if l := readLines(t, got); len(l) != 1 || l[0].Headers["payload-hash"] == "" || l[0].Headers["client-id"] == "" {
		t.Errorf("--headers all: %+v", l)
	}
}
