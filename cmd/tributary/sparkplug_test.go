package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSparkplugEndToEnd runs real binaries: firmware-sim in Sparkplug mode (births with aliases,
// DDATA with aliases and seq, some seqs skipped) against an edge forwarding to central; firmware-sim
// verify finds every acked reading at central under <group>/<node>/<device> with every alias
// resolved and the skipped seqs as gap markers; tributary consume prints the values as JSON with
// the metric names, types, values and timestamps.
func TestSparkplugEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	tributary, sim := buildBinaries(t)
	dir := t.TempDir()
	centralAddr, mqttAddr, edgeHTTP := freePort(t), freePort(t), freePort(t)
	centralURL := "http://" + centralAddr
	startProc(t, tributary, "central", "--data-dir", filepath.Join(dir, "central"), "--listen", centralAddr)
	waitHTTP(t, centralURL+"/healthz")
	tokenFile := filepath.Join(dir, "edge.token")
	addEdgeToken(t, tributary, filepath.Join(dir, "central"), tokenFile)
	startProc(t, tributary, "edge", "--data-dir", filepath.Join(dir, "edge"), "--mqtt-listen", mqttAddr,
		"--http-listen", edgeHTTP, "--central", centralURL, "--edge-id", "gw-1", "--central-token-file", tokenFile)
	waitHTTP(t, "http://"+edgeHTTP+"/readyz")

	manifest := filepath.Join(dir, "run.manifest.json")
	run := exec.Command(sim, "--broker", "tcp://"+mqttAddr, "--sparkplug", "--sparkplug-group", "plant1",
		"--sparkplug-skip-fraction", "0.05", "--devices", "3", "--rate", "50", "--count", "100", "--duration", "20s",
		"--qos", "1", "--manifest", manifest)
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("firmware-sim --sparkplug: %v\n%s", err, out)
	}
	// Forwarding is asynchronous: verify until central holds every acked reading and each
	// node's final NDEATH.
	type verification struct {
		Received  uint64 `json:"received"`
		Devices   []struct{ Device string }
		Sparkplug struct {
			Births, Deaths, Data uint64
			SeqGaps              uint64 `json:"seq_gaps"`
			UnresolvedAliases    uint64 `json:"unresolved_aliases"`
		} `json:"sparkplug"`
	}
	var v verification
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last []byte
	var err error
	for ctx.Err() == nil {
		last, err = exec.CommandContext(ctx, sim, "verify", "--central", centralURL, "--stream", "sparkplug",
			"--manifest", manifest, "--format", "json").Output()
		v = verification{}
		if err == nil && json.Unmarshal(last, &v) == nil && v.Sparkplug.Deaths == 3 {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("firmware-sim verify never passed: %v\n%s", err, last)
	}
	if v.Received != 300 || len(v.Devices) != 3 || v.Devices[0].Device != "plant1/dev-0001/sensor" {
		t.Errorf("verify: %d readings from %v, want 300 from plant1/dev-000[1-3]/sensor", v.Received, v.Devices)
	}
	if v.Sparkplug.Births != 6 || v.Sparkplug.Deaths != 3 || v.Sparkplug.SeqGaps == 0 || v.Sparkplug.UnresolvedAliases != 0 {
		t.Errorf("sparkplug at central: %+v, want 6 births, 3 deaths, some seq gaps, no unresolved alias", v.Sparkplug)
	}

	out, err := exec.Command(tributary, "consume", "--central", centralURL, "--stream", "sparkplug", "--from-beginning").Output()
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	var shown bool
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, `"type":"DDATA"`) {
			continue
		}
		var rec struct {
			Key   string
			Value struct {
				Metrics []struct {
					Name, Type string
					Value      any
					Timestamp  int64
				}
			}
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("consume line %s: %v", line, err)
		}
		m := rec.Value.Metrics
		if !strings.HasPrefix(rec.Key, "plant1/dev-") || len(m) != 6 || m[0].Name != "seq" || m[0].Type != "UInt64" ||
			m[1].Name != "temperature" || m[1].Type != "Double" || m[1].Timestamp == 0 {
			t.Fatalf("consume shows %s", line)
		}
		if _, ok := m[1].Value.(float64); !ok {
			t.Fatalf("temperature value %v is not a JSON number: %s", m[1].Value, line)
		}
		shown = true
		t.Logf("consume: %s", line)
		break
	}
	if !shown {
		t.Fatalf("consume printed no DDATA:\n%.2000s", out)
	}
}
