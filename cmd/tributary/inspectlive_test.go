package main

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testprog"
)

// TestInspectRunningNodes: tributary inspect on the data dir of a running edge and a running
// central reads their live view through the admin socket (the log's metadata file admits one
// process, so opening it would fail), and shows a consumer group with its lag.
func TestInspectRunningNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	pub := testprog.Find(t, "mosquitto_pub", "mosquitto-clients", "/usr/bin")
	tributary, _ := buildBinaries(t)
	dir := t.TempDir()
	centralDir, edgeDir := filepath.Join(dir, "c"), filepath.Join(dir, "e")
	centralAddr, mqttAddr := freePort(t), freePort(t)
	centralURL := "http://" + centralAddr
	startProc(t, tributary, "central", "--data-dir", centralDir, "--listen", centralAddr)
	waitHTTP(t, centralURL+"/healthz")
	tokenFile := filepath.Join(dir, "token")
	addEdgeToken(t, tributary, centralDir, tokenFile)
	startProc(t, tributary, "edge", "--data-dir", edgeDir, "--mqtt-listen", mqttAddr, "--http-listen", freePort(t),
		"--central", centralURL, "--edge-id", "gw-1", "--central-token-file", tokenFile)
	waitTCP(t, mqttAddr)
	host, port, _ := net.SplitHostPort(mqttAddr)
	for i := 0; i < 5; i++ {
		if out, err := exec.Command(pub, "-h", host, "-p", port, "-q", "1", "-i", "dev-1", "-t", "devices/dev-1/readings", "-m", fmt.Sprintf(`{"v":1,"seq":%d}`, i)).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v %s", err, out)
		}
	}

	inspect := func(d string, want ...*regexp.Regexp) string {
		t.Helper()
		var out []byte
		var err error
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			out, err = exec.Command(tributary, "inspect", "--verify", d).CombinedOutput()
			ok := err == nil
			for _, w := range want {
				ok = ok && w.Match(out)
			}
			if ok {
				return string(out)
			}
			if time.Now().After(deadline) {
				t.Fatalf("inspect %s: %v\n%s\nwant %v", d, err, out, want)
			}
		}
	}
	out := inspect(edgeDir, regexp.MustCompile(`stream readings: 2 partitions, 5 records`),
		regexp.MustCompile(`(?m)^forwarder\s+readings\s+\d\s+\d\s+0\s+true`)) // central confirmed all: lag 0
	if !strings.Contains(out, "the edge is running") || !strings.Contains(out, "verify: every checksum") {
		t.Errorf("edge inspect does not say it is the live view or lacks the verify result:\n%s", out)
	}

	// A group that read the five readings, then two more arrive: its lag is two, on the one
	// partition dev-1's readings go to.
	inspect(centralDir, regexp.MustCompile(`stream readings: \d+ partitions, 5 records`))
	if out, err := exec.Command(tributary, "consume", "--central", centralURL, "--group", "dash").CombinedOutput(); err != nil {
		t.Fatalf("consume --group: %v\n%s", err, out)
	}
	for i := 0; i < 2; i++ {
		if out, err := exec.Command(pub, "-h", host, "-p", port, "-q", "1", "-i", "dev-1", "-t", "devices/dev-1/readings", "-m", fmt.Sprintf(`{"v":2,"seq":%d}`, i)).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v %s", err, out)
		}
	}
	out = inspect(centralDir, regexp.MustCompile(`stream readings: \d+ partitions, 7 records`),
		regexp.MustCompile(`(?m)^group\.dash\s+readings\s+\d+\s+\d+\s+2\s+false`))
	if !strings.Contains(out, "the central is running") {
		t.Errorf("central inspect does not say it is the live view:\n%s", out)
	}
}
