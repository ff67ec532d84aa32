//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The edge's documented footprint (deploy/README.md, "Memory" and "Flash wear"): what a connected
// device costs in RSS, and the fsyncs a second the adaptive group commit allows (2/budget per
// partition: 100 with the default 20ms, 2 partitions). TestEdgeFootprint fails at twice either.
const (
	documentedBytesPerDevice = 96 << 10
	documentedFsyncsPerSec   = 200
)

// TestEdgeFootprint runs the real edge binary under 200 QoS 1 devices from the real firmware-sim
// for 10 s (1,000 readings/s) and checks its RSS per connected device, from /proc, and its fsyncs
// per second, from its /metrics, against twice the documented bounds. It also checks that the
// memory comes back once the fleet has left.
func TestEdgeFootprint(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 10-second fleet against the edge binary")
	}
	const devices, rate, seconds = 200, 5, 10
	tributary, sim := buildBinaries(t)
	dir := t.TempDir()
	mqttAddr, httpAddr := freePort(t), freePort(t)
	edge := exec.Command(tributary, "edge", "--data-dir", filepath.Join(dir, "edge"), "--mqtt-listen", mqttAddr,
		"--http-listen", httpAddr, "--log-level", "warn")
	edge.Env = append(os.Environ(), "GOMEMLIMIT=") // the edge's own default limit, whatever the test's environment
	var out syncBuffer
	edge.Stdout, edge.Stderr = &out, &out
	if err := edge.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		edge.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- edge.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("edge exited with %v after SIGTERM\n%s", err, out.String())
			}
		case <-time.After(20 * time.Second):
			edge.Process.Kill()
			t.Errorf("edge did not stop within 20s of SIGTERM\n%s", out.String())
		}
	})
	waitHTTP(t, "http://"+httpAddr+"/readyz")
	pid := edge.Process.Pid
	idle := rssBytes(t, pid)
	fsyncs0 := metricValue(t, scrape(t, "http://"+httpAddr+"/metrics"), "tributary_edge_log_fsyncs_total")

	report := filepath.Join(dir, "report.json")
	fleet := exec.Command(sim, "--broker", "tcp://"+mqttAddr, "--devices", strconv.Itoa(devices), "--rate", strconv.Itoa(rate),
		"--qos", "1", "--duration", strconv.Itoa(seconds)+"s", "--format", "json", "--max-device-rows", "0")
	reportFile, err := os.Create(report)
	if err != nil {
		t.Fatal(err)
	}
	defer reportFile.Close()
	var simErr syncBuffer
	fleet.Stdout, fleet.Stderr = reportFile, &simErr
	start := time.Now()
	if err := fleet.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fleet.Wait() }()
	var peak int64
	var simDone error
	for sampling := true; sampling; {
		select {
		case simDone = <-done:
			sampling = false
		case <-time.After(500 * time.Millisecond):
			peak = max(peak, rssBytes(t, pid))
			if time.Since(start) > time.Duration(seconds)*time.Second+2*time.Minute {
				fleet.Process.Kill()
				t.Fatalf("firmware-sim still running 2 minutes after its %ds", seconds)
			}
		}
	}
	elapsed := time.Since(start)
	if simDone != nil {
		t.Fatalf("firmware-sim: %v\n%s", simDone, simErr.String())
	}
	fsyncs := metricValue(t, scrape(t, "http://"+httpAddr+"/metrics"), "tributary_edge_log_fsyncs_total") - fsyncs0
	var rep struct {
		Acked, Unacked uint64
		AckLatency     struct {
			P50 int64 `json:"p50_ns"`
			P99 int64 `json:"p99_ns"`
		} `json:"ack_latency"`
	}
	reportFile.Seek(0, 0)
	if err := json.NewDecoder(reportFile).Decode(&rep); err != nil {
		t.Fatalf("firmware-sim report: %v\n%s", err, simErr.String())
	}
	if rep.Acked == 0 || rep.Unacked != 0 {
		t.Fatalf("%d readings acked, %d unacked: the fleet did not run cleanly\n%s", rep.Acked, rep.Unacked, simErr.String())
	}
	perDevice := (peak - idle) / devices
	perSec := fsyncs / elapsed.Seconds()
	// The memory a departed fleet held is handed back within the watcher's period or two.
	var left int64
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		if left = rssBytes(t, pid); left-idle < (peak-idle)/2 {
			break
		}
	}
	t.Logf("%d devices x %d readings/s for %v: %d acked, ack p50 %.1f ms p99 %.1f ms; RSS idle %.1f MiB, peak %.1f MiB (%d bytes per device), %.1f MiB after the fleet left; %.0f fsyncs/s (%.1f readings per fsync)",
		devices, rate, elapsed.Round(time.Millisecond), rep.Acked, float64(rep.AckLatency.P50)/1e6, float64(rep.AckLatency.P99)/1e6,
		mib(idle), mib(peak), perDevice, mib(left), perSec, float64(rep.Acked)/fsyncs)
	if perDevice > 2*documentedBytesPerDevice {
		t.Errorf("RSS per connected device %d bytes, over twice the documented %d", perDevice, documentedBytesPerDevice)
	}
	if perSec > 2*documentedFsyncsPerSec {
		t.Errorf("%.0f fsyncs/s, over twice the documented %d", perSec, documentedFsyncsPerSec)
	}
	if left-idle >= (peak-idle)/2 {
		t.Errorf("RSS %.1f MiB 20 s after the fleet left (idle %.1f, peak %.1f): its memory was not given back", mib(left), mib(idle), mib(peak))
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// rssBytes reads a process's resident set from /proc.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// metricValue is the value of an unlabelled metric in a Prometheus text exposition.
func metricValue(t *testing.T, text, name string) float64 {
	t.Helper()
	for line := range strings.Lines(text) {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("%s %q: %v", name, rest, err)
			}
			return v
		}
	}
	t.Fatalf("no %s in the metrics", name)
	return 0
}
