package main

import (
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testprog"
)

// TestCentralStopsPromptlyAndSaysSo: the real central, with an edge forwarding to it and a consumer
// long-polling at the end of the stream, stops within a second of SIGTERM (it used to wait out the
// HTTP shutdown's 5 s bound) and says what it is doing while it stops.
func TestCentralStopsPromptlyAndSaysSo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	pub := testprog.Find(t, "mosquitto_pub", "mosquitto-clients", "/usr/bin")
	tributary, _ := buildBinaries(t)
	dir := t.TempDir()
	centralDir := filepath.Join(dir, "c")
	centralAddr, mqttAddr := freePort(t), freePort(t)
	url := "http://" + centralAddr
	central := exec.Command(tributary, "central", "--data-dir", centralDir, "--listen", centralAddr)
	var logs syncBuffer
	central.Stdout, central.Stderr = &logs, &logs
	if err := central.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if central.ProcessState == nil {
			central.Process.Kill()
			central.Wait()
		}
	}()
	waitHTTP(t, url+"/healthz")
	tokenFile := filepath.Join(dir, "token")
	addEdgeToken(t, tributary, centralDir, tokenFile)
	startProc(t, tributary, "edge", "--data-dir", filepath.Join(dir, "e"), "--mqtt-listen", mqttAddr, "--http-listen", "off",
		"--central", url, "--edge-id", "gw-1", "--central-token-file", tokenFile)
	waitTCP(t, mqttAddr)
	host, port, _ := net.SplitHostPort(mqttAddr)
	if out, err := exec.Command(pub, "-h", host, "-p", port, "-q", "1", "-i", "d-1", "-t", "devices/d-1/readings", "-m", `{"v":1}`).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(url + "/v1/consume/readings?from=beginning")
		if err == nil {
			ok := resp.StatusCode == 200
			resp.Body.Close()
			if ok {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the reading never reached central")
		}
	}
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		if resp, err := http.Get(url + "/v1/consume/readings?from=end&wait=30s"); err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(300 * time.Millisecond)

	start := time.Now()
	central.Process.Signal(syscall.SIGTERM)
	if err := central.Wait(); err != nil {
		t.Errorf("central exit: %v\n%s", err, logs.String())
	}
	took := time.Since(start)
	<-polled
	if took > 2*time.Second {
		t.Errorf("central took %v to stop with a long poll open; before the fix it took 5s", took)
	}
	for _, want := range []string{`msg="central stopping`, "requests_in_flight=", `msg="central stopped"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("central's log lacks %q:\n%s", want, logs.String())
		}
	}
	t.Logf("central stopped in %v", took.Round(time.Millisecond))
}
