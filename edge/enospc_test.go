package edge

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testfs"
)

func getStatus(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

// TestFullDiskReadinessAndResume runs the agent on a real, size-limited tmpfs and fills it: the
// publish that cannot be stored is not acked, /readyz turns 503 and says the disk is full while
// /healthz stays 200, and once space is freed /readyz is green again and the device's readings
// are acked and stored, without a restart.
func TestFullDiskReadinessAndResume(t *testing.T) {
	dir := testfs.Tmpfs(t, 4<<20)
	a, _ := startAgent(t, Config{DataDir: dir, HTTPListen: "127.0.0.1:0"})
	base := "http://" + a.HTTPAddr()
	if code, body := getStatus(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz before: %d %s", code, body)
	}
	c, _ := dialRaw(t, a.MQTTAddr(), "dev-f", 4, "", "")
	payload := []byte(`{"fill":"` + strings.Repeat("x", 32<<10) + `"}`)
	acked := 0
	for id := uint16(1); id <= 5; id++ {
		c.publish("devices/dev-f/readings", payload, id, 1, false)
		c.expectAck(id)
		acked++
	}
	filler := testfs.Fill(t, dir)
	stored := true
	for id := uint16(6); id < 200 && stored; id++ {
		c.publish("devices/dev-f/readings", payload, id, 1, false)
		if pk, err := c.read(); err != nil || pk.PacketID != id {
			stored = false // not acked: the connection closes instead
		} else {
			acked++
		}
	}
	if stored {
		t.Fatal("every publish acked on a full disk")
	}
	code, body := getStatus(t, base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no space left") || !strings.Contains(body, "readings/") {
		t.Fatalf("/readyz on a full disk: %d %q, want 503 naming the partition and the full disk", code, body)
	}
	t.Logf("/readyz on a full disk: %s", strings.TrimSpace(body))
	if code, _ := getStatus(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz on a full disk: %d, want 200 (a restart would not free the disk)", code)
	}
	if got := metricSum(t, a.metrics.registry, "tributary_edge_log_partitions_stopped"); got < 1 {
		t.Errorf("partitions_stopped gauge %v on a full disk", got)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := getStatus(t, base+"/readyz")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz 15s after space was freed: %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c, _ = dialRaw(t, a.MQTTAddr(), "dev-f", 4, "", "")
	for id := uint16(300); id < 305; id++ {
		c.publish("devices/dev-f/readings", payload, id, 1, false)
		c.expectAck(id)
		acked++
	}
	if n := countStream(t, a.Log(), "readings"); n != acked {
		t.Errorf("readings holds %d records, %d were acked", n, acked)
	}
}
