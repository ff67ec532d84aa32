package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// metricNames returns every full metric name (tributary_..._x) that a document names.
func metricNames(t *testing.T, files ...string) []string {
	t.Helper()
	// Whole names only: a prefix such as tributary_edge_* names a family of metrics, not one.
	re := regexp.MustCompile(`tributary_(edge|central|forwarder|kafka_sink)_[a-z0-9_]*[a-z0-9]([^a-z0-9_*]|$)`)
	seen := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			seen[strings.TrimRight(m[0], m[2])] = true
		}
	}
	var names []string
	for m := range seen {
		names = append(names, m)
	}
	sort.Strings(names)
	return names
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// TestFreshNodesExportEveryDocumentedMetric starts a fresh central (with a Kafka sink whose broker
// is down) and a fresh edge forwarding to it, before any device has published, and checks that every
// metric the operator's guide and the alert rules name is already exported, so a new dashboard or
// alert shows 0 rather than "no data".
func TestFreshNodesExportEveryDocumentedMetric(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	tributary, _ := buildBinaries(t)
	dir := t.TempDir()
	centralAddr, mqttAddr, edgeHTTP := freePort(t), freePort(t), freePort(t)
	centralURL := "http://" + centralAddr
	conf := filepath.Join(dir, "central.yaml")
	// Nothing listens on the sink's broker address: the sink's metrics must exist while it is down.
	sinkConf := "sinks:\n  kafka:\n    brokers: [\"" + freePort(t) + "\"]\n    topic: readings\n"
	if err := os.WriteFile(conf, []byte(sinkConf), 0o600); err != nil {
		t.Fatal(err)
	}
	startProc(t, tributary, "central", "--config", conf, "--data-dir", filepath.Join(dir, "central"), "--listen", centralAddr)
	waitHTTP(t, centralURL+"/healthz")
	tokenFile := filepath.Join(dir, "edge.token")
	addEdgeToken(t, tributary, filepath.Join(dir, "central"), tokenFile)
	startProc(t, tributary, "edge", "--data-dir", filepath.Join(dir, "edge"), "--mqtt-listen", mqttAddr,
		"--http-listen", edgeHTTP, "--central", centralURL, "--edge-id", "gw-1", "--central-token-file", tokenFile)
	waitHTTP(t, "http://"+edgeHTTP+"/readyz")

	names := metricNames(t, "../../deploy/README.md", "../../deploy/prometheus/alerts.yml")
	if len(names) < 10 {
		t.Fatalf("found only %d metric names in the docs: %v", len(names), names)
	}
	var missing []string
	for try := 0; ; try++ {
		// The forwarder's lanes appear with its first request to central; give it a moment.
		exported := scrape(t, "http://"+edgeHTTP+"/metrics") + scrape(t, centralURL+"/metrics")
		missing = missing[:0]
		for _, n := range names {
			if !regexp.MustCompile(`(?m)^` + n + `(_bucket|_sum|_count)?[{ ]`).MatchString(exported) {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 || try == 50 {
			break
		}
		waitABit()
	}
	if len(missing) > 0 {
		t.Errorf("documented metrics not exported by a fresh edge and central: %s", strings.Join(missing, ", "))
	}
}

func waitABit() { <-time.After(100 * time.Millisecond) }

// TestEdgeHTTPDefaultPortBusy: a second edge on a machine whose default metrics port is taken starts
// anyway and says why it serves no /metrics; an address given explicitly that is busy stops the start
// with the reason; "off" binds nothing.
func TestEdgeHTTPDefaultPortBusy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	tributary, _ := buildBinaries(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	// An explicit busy address is an error that names it.
	out, err := exec.Command(tributary, "edge", "--data-dir", t.TempDir(), "--mqtt-listen", freePort(t),
		"--http-listen", busy.Addr().String()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), busy.Addr().String()) {
		t.Errorf("edge with a busy --http-listen: err %v, output:\n%s", err, out)
	}

	// The default address: take it if nobody has; the edge must still start and warn.
	if ln, err := net.Listen("tcp", "127.0.0.1:9464"); err == nil {
		defer ln.Close()
	}
	for _, args := range [][]string{nil, {"--http-listen", "off"}} {
		mqtt := freePort(t)
		cmd := exec.Command(tributary, append([]string{"edge", "--data-dir", t.TempDir(), "--mqtt-listen", mqtt}, args...)...)
		var buf syncBuffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitTCP(t, mqtt)
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("edge %v: %v\n%s", args, err, buf.String())
		}
		warned := strings.Contains(buf.String(), "default HTTP address is in use")
		if (args == nil) != warned {
			t.Errorf("edge %v: warned about the default address: %v, output:\n%s", args, warned, buf.String())
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a child's stdout and stderr copiers and the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
