package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testprog"
	"github.com/tributary-iot/tributary/sync/consume"
)

// Re-running `edges add` for a registered id is refused (it would lock out the edge using the
// current token); --rotate is how to issue a new token.
func TestCentralEdgesAddRefusesExistingID(t *testing.T) {
	dir := t.TempDir()
	first, err := runCentralCLI(t, "central", "edges", "add", "gw-1", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	out, err := runCentralCLI(t, "central", "edges", "add", "gw-1", "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "already registered") || !strings.Contains(err.Error(), "edges add gw-1 --rotate") {
		t.Fatalf("second add: out %q, err %v; want a refusal naming --rotate", out, err)
	}
	if out != "" {
		t.Fatalf("a refused add printed a token: %q", out)
	}
	second, err := runCentralCLI(t, "central", "edges", "add", "gw-1", "--rotate", "--data-dir", dir)
	if err != nil || !strings.HasPrefix(second, "trb_") || second == first {
		t.Fatalf("rotate: %q %v (first token %q)", second, err, first)
	}
	list, err := runCentralCLI(t, "central", "edges", "list", "--data-dir", dir)
	if err != nil || !regexp.MustCompile(`(?m)^gw-1\s+active\s+\S+ \S+\s+\d{4}-`).MatchString(list) {
		t.Fatalf("list after a rotation shows no rotation time: %q %v", list, err)
	}
	if _, err := runCentralCLI(t, "central", "edges", "add", "gw-2", "--rotate", "--data-dir", dir); err == nil ||
		!strings.Contains(err.Error(), "unknown edge") {
		t.Fatalf("rotating an unknown edge: %v", err)
	}
}

// TestEdgeTokenRotationWithoutRestart runs the real central and edge binaries. A second
// `edges add` leaves the running edge alone; after `--rotate` central refuses the edge's old
// token, and both sides show it: the edge's metric and its log line (which says to write the
// new token to the token file), central's per-edge refusal counter and `tributary edges`.
// Writing the new token to the file resumes forwarding without restarting the edge.
func TestEdgeTokenRotationWithoutRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	pub := testprog.Find(t, "mosquitto_pub", "mosquitto-clients")
	tributary, _ := buildBinaries(t)
	dir := t.TempDir()
	centralDir := filepath.Join(dir, "central")
	centralAddr, mqttAddr, edgeHTTP := freePort(t), freePort(t), freePort(t)
	centralURL, edgeMetrics := "http://"+centralAddr, "http://"+edgeHTTP+"/metrics"
	startProc(t, tributary, "central", "--data-dir", centralDir, "--listen", centralAddr)
	waitHTTP(t, centralURL+"/healthz")
	edgesAdd := func(args ...string) (string, error) {
		cmd := exec.Command(tributary, append([]string{"central", "edges", "add", "gw-1", "--data-dir", centralDir}, args...)...)
		var stderr syncBuffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return stderr.String(), err
		}
		return strings.TrimSpace(string(out)), nil
	}
	token, err := edgesAdd()
	if err != nil {
		t.Fatalf("edges add: %v %s", err, token)
	}
	tokenFile := filepath.Join(dir, "edge.token")
	writeToken := func(tok string) {
		if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeToken(token)
	edgeLog := startProc(t, tributary, "edge", "--data-dir", filepath.Join(dir, "edge"), "--mqtt-listen", mqttAddr,
		"--http-listen", edgeHTTP, "--central", centralURL, "--edge-id", "gw-1", "--central-token-file", tokenFile)
	waitHTTP(t, "http://"+edgeHTTP+"/readyz")
	_, port, _ := net.SplitHostPort(mqttAddr)
	publish := func(seq string) {
		out, err := exec.Command(pub, "-h", "127.0.0.1", "-p", port, "-i", "d1", "-q", "1",
			"-t", "devices/d1/readings", "-m", `{"seq":`+seq+`}`).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub: %v %s", err, out)
		}
	}
	waitCentral := func(n int64, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			if got := centralReadings(t, centralURL); got >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("central holds %d readings after %v, want %d\nedge log:\n%s", centralReadings(t, centralURL), within, n, edgeLog)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	publish("1")
	waitCentral(1, 20*time.Second)

	// A second add is refused and changes nothing: the edge keeps forwarding.
	if msg, err := edgesAdd(); err == nil || !strings.Contains(msg, "--rotate") {
		t.Fatalf("second edges add of a live edge: err %v, output %q; want a refusal naming --rotate", err, msg)
	}
	publish("2")
	waitCentral(2, 20*time.Second)

	rotated, err := edgesAdd("--rotate")
	if err != nil || rotated == token {
		t.Fatalf("edges add --rotate: %v %q", err, rotated)
	}
	publish("3") // the edge calls central with its old token now
	waitMetric(t, edgeMetrics, `tributary_forwarder_token_refused{edge="gw-1"} 1`, edgeLog)
	waitMetric(t, centralURL+"/metrics", `tributary_central_edge_token_refused{edge="gw-1"} 1`, edgeLog)
	if m := scrape(t, centralURL+"/metrics"); !regexp.MustCompile(`(?m)^tributary_central_edge_refused_requests_total\{edge="gw-1",reason="wrong_token"\} [1-9]`).MatchString(m) {
		t.Errorf("central's metrics do not count gw-1's refused calls:\n%s", grepLines(m, "refused"))
	}
	view, err := exec.Command(tributary, "edges", "--central", centralURL).CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^gw-1\s+refused\s`).Match(view) || !strings.Contains(string(view), "REFUSED") {
		t.Errorf("tributary edges does not show gw-1 refused (err %v):\n%s", err, view)
	}
	t.Logf("tributary edges:\n%s", view)
	line := grepLines(edgeLog.String(), "central refuses this edge's token")
	t.Logf("edge: %s", line)
	for _, want := range []string{tokenFile, "edges add gw-1 --rotate", "no restart needed"} {
		if !strings.Contains(line, want) {
			t.Errorf("the edge's refusal line does not say %q:\n%s", want, line)
		}
	}
	if n := strings.Count(line, "\n"); n > 1 {
		t.Errorf("%d refusal lines in a few seconds, want one a minute:\n%s", n, line)
	}

	writeToken(rotated) // no restart
	waitCentral(3, 20*time.Second)
	waitMetric(t, edgeMetrics, `tributary_forwarder_token_refused{edge="gw-1"} 0`, edgeLog)
	view, _ = exec.Command(tributary, "edges", "--central", centralURL).CombinedOutput()
	if !regexp.MustCompile(`(?m)^gw-1\s+active\s`).Match(view) {
		t.Errorf("after the new token, tributary edges shows:\n%s", view)
	}
}

// centralReadings is how many readings central's readings stream holds.
func centralReadings(t *testing.T, url string) int64 {
	t.Helper()
	streams, err := (&consume.Client{BaseURL: url}).Streams(context.Background())
	if err != nil {
		t.Fatalf("ask central for its streams: %v", err)
	}
	var n int64
	for _, s := range streams {
		if s.Name == "readings" {
			for _, p := range s.Partitions {
				n += p.End
			}
		}
	}
	return n
}

// waitMetric waits up to 20 s for a /metrics line.
func waitMetric(t *testing.T, url, line string, log *syncBuffer) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		m := scrape(t, url)
		if strings.Contains(m, "\n"+line+"\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never showed %q:\n%s\nedge log:\n%s", url, line, grepLines(m, strings.SplitN(line, "{", 2)[0]), log)
		}
	}
}
