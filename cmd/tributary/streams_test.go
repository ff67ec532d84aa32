package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/tributary-iot/tributary/internal/testprog"
)

// TestUndeclaredStreamRefused runs the real edge with one extra declared stream and publishes with
// Debian's mosquitto_pub: a topic whose stream is a typo is refused (MQTT 5: PUBACK 0x90 with a
// reason string naming the stream; MQTT 3.1.1: the connection closes, as for other refusals),
// counted on /metrics, logged once however often it is retried, and never becomes a stream; the
// default and the declared streams take readings.
func TestUndeclaredStreamRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	pub := testprog.Find(t, "mosquitto_pub", "mosquitto-clients", "/usr/bin")
	tributary, _ := buildBinaries(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(conf, []byte("streams:\n  status: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mqtt, httpAddr := freePort(t), freePort(t)
	data := filepath.Join(dir, "edge")
	cmd := exec.Command(tributary, "edge", "--config", conf, "--data-dir", data, "--mqtt-listen", mqtt, "--http-listen", httpAddr)
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	waitHTTP(t, "http://"+httpAddr+"/readyz")
	host, port, _ := net.SplitHostPort(mqtt)
	publish := func(args ...string) (string, error) {
		out, err := exec.Command(pub, append([]string{"-h", host, "-p", port, "-q", "1", "-i", "dev-1", "-m", `{"v":1}`}, args...)...).CombinedOutput()
		return string(out), err
	}

	for i := 0; i < 3; i++ {
		out, _ := publish("-V", "mqttv5", "-t", "devices/dev-1/readngs")
		if !strings.Contains(out, "Topic Name invalid") || !strings.Contains(out, `stream "readngs" is not declared`) {
			t.Fatalf("MQTT 5 publish to an undeclared stream: mosquitto_pub said %q, want Topic Name invalid with the stream named", out)
		}
	}
	if out, err := publish("-t", "devices/dev-1/readngs"); err == nil {
		t.Errorf("MQTT 3.1.1 publish to an undeclared stream succeeded: %s", out)
	}
	for _, topic := range []string{"devices/dev-1/readings", "devices/dev-1/status"} {
		if out, err := publish("-V", "mqttv5", "-t", topic); err != nil || out != "" {
			t.Errorf("publish to declared %s: %v %q", topic, err, out)
		}
	}

	m := scrape(t, "http://"+httpAddr+"/metrics")
	if !regexp.MustCompile(`tributary_edge_readings_rejected_total\{reason="undeclared_stream"\} 4\b`).MatchString(m) {
		t.Errorf("metrics do not count 4 undeclared-stream refusals:\n%s", grepLines(m, "rejected"))
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("edge exit: %v\n%s", err, logs.String())
	}
	if n := strings.Count(logs.String(), "topic=devices/dev-1/readngs reason=undeclared_stream"); n != 1 {
		t.Errorf("the refused topic is logged %d times, want once:\n%s", n, logs.String())
	}
	for _, s := range []string{"readings", "status"} {
		if _, err := os.Stat(filepath.Join(data, "streams", s)); err != nil {
			t.Errorf("declared stream %s: %v", s, err)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "streams", "readngs")); err == nil {
		t.Error("the typo became a stream on disk")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
