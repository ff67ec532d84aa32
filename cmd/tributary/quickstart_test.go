package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildBinaries builds the real tributary and firmware-sim commands once per test run; every test
// of the package shares them (TestMain removes them).
func buildBinaries(t *testing.T) (tributary, sim string) {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tributary-bin-")
		if err != nil {
			binErr = err
			return
		}
		binDir = dir
		for bin, pkg := range map[string]string{"tributary": ".", "firmware-sim": "../firmware-sim"} {
			if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, bin), pkg).CombinedOutput(); err != nil {
				binErr = fmt.Errorf("build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, "tributary"), filepath.Join(binDir, "firmware-sim")
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// addEdgeToken registers edge gw-1 with the stopped or running central of centralDir and writes
// its token to tokenFile, as the Quickstart's "edges add gw-1 > gw-1.token" does.
func addEdgeToken(t *testing.T, tributary, centralDir, tokenFile string) {
	t.Helper()
	out, err := exec.Command(tributary, "central", "edges", "add", "gw-1", "--data-dir", centralDir).Output()
	if err != nil {
		t.Fatalf("edges add: %v", err)
	}
	if err := os.WriteFile(tokenFile, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startProc starts a long-running command and stops it with SIGTERM at the end of the test,
// expecting a clean exit. It returns the command's output so far, stdout and stderr together.
func startProc(t *testing.T, name string, args ...string) *syncBuffer {
	t.Helper()
	cmd := exec.Command(name, args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s %s exited with %v after SIGTERM\n%s", filepath.Base(name), args[0], err, out.String())
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Errorf("%s %s did not stop within 20s of SIGTERM\n%s", filepath.Base(name), args[0], out.String())
		}
	})
	return out
}

func waitHTTP(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not answer within 20s", url)
}

func waitTCP(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not accept connections within 20s", addr)
}

// TestQuickstart runs the README's quickstart with the real binaries in separate processes:
// central, an edge registered at central, a simulated fleet, and verification of central's stream.
func TestQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	tributary, sim := buildBinaries(t)
	dir := t.TempDir()
	centralAddr, mqttAddr := freePort(t), freePort(t)
	centralURL := "http://" + centralAddr

	startProc(t, tributary, "central", "--data-dir", filepath.Join(dir, "central"), "--listen", centralAddr)
	waitHTTP(t, centralURL+"/healthz")

	tokenFile := filepath.Join(dir, "edge.token")
	addEdgeToken(t, tributary, filepath.Join(dir, "central"), tokenFile)
	startProc(t, tributary, "edge", "--data-dir", filepath.Join(dir, "edge"), "--mqtt-listen", mqttAddr,
		"--central", centralURL, "--edge-id", "gw-1", "--central-token-file", tokenFile)
	waitTCP(t, mqttAddr)
	// The Quickstart's edge gives no --http-listen: it serves /metrics on the documented default.
	waitHTTP(t, "http://127.0.0.1:9464/readyz")
	if m := scrape(t, "http://127.0.0.1:9464/metrics"); !strings.Contains(m, "tributary_edge_readings_acked_total") {
		t.Errorf("edge /metrics on the default address lacks tributary_edge_readings_acked_total")
	}

	manifest := filepath.Join(dir, "run.manifest.json")
	run := exec.Command(sim, "--broker", "tcp://"+mqttAddr, "--devices", "20", "--rate", "50", "--qos", "1",
		"--duration", "3s", "--manifest", manifest)
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("firmware-sim: %v\n%s", err, out)
	}
	// Forwarding is asynchronous: verify until central holds every acked reading.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last []byte
	var err error
	for ctx.Err() == nil {
		last, err = exec.CommandContext(ctx, sim, "verify", "--central", centralURL, "--manifest", manifest).CombinedOutput()
		if err == nil {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("firmware-sim verify never passed: %v\n%s", err, last)
	}
	if !strings.Contains(string(last), "lost") {
		t.Fatalf("verify output has no report:\n%s", last)
	}
	// The consume command prints DESIGN's JSON lines.
	lines, err := exec.Command(tributary, "consume", "--central", centralURL, "--from-beginning").Output()
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	first := strings.SplitN(string(lines), "\n", 2)[0]
	for _, field := range []string{`"stream":"readings"`, `"edge":"gw-1"`, `"edge_partition"`, `"edge_offset"`, `"value":{`} {
		if !strings.Contains(first, field) {
			t.Errorf("consume line lacks %s: %s", field, first)
		}
	}
	t.Logf("verify:\n%s", last)
}
