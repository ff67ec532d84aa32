package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Flags given on the command line override the config file; unset flags leave it alone.
func TestEdgeFlagsOverrideConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(path, []byte("data_dir: from-file\nedge_id: file-id\nmqtt:\n  listen: 127.0.0.1:1999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := newEdgeCmd()
	if err := cmd.ParseFlags([]string{"--config", path, "--data-dir", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	fl := cmd.Flags()
	cfgPath, _ := fl.GetString("config")
	dataDir, _ := fl.GetString("data-dir")
	ef := &edgeFlags{config: cfgPath, dataDir: dataDir}
	cfg, err := ef.load(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "from-flag" || cfg.EdgeID != "file-id" || cfg.MQTT.Listen != "127.0.0.1:1999" {
		t.Fatalf("got data_dir %q edge_id %q listen %q", cfg.DataDir, cfg.EdgeID, cfg.MQTT.Listen)
	}
	if cfg.Central != "" {
		t.Fatalf("central %q: empty means log only", cfg.Central)
	}
}

func TestEdgeCentralNeedsEdgeID(t *testing.T) {
	cmd := newEdgeCmd()
	if err := cmd.ParseFlags([]string{"--central", "http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	central, _ := cmd.Flags().GetString("central")
	_, err := (&edgeFlags{central: central}).load(cmd)
	if err == nil || !strings.Contains(err.Error(), "--edge-id") {
		t.Fatalf("err %v, want a hint about --edge-id", err)
	}
}

// forward.backoff_max comes from the file, and --forward-backoff-max overrides it.
func TestEdgeForwardBackoffMax(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(path, []byte("data_dir: d\nforward:\n  backoff_max: 10s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want time.Duration
	}{
		{[]string{"--config", path}, 10 * time.Second},
		{[]string{"--config", path, "--forward-backoff-max", "2s"}, 2 * time.Second},
	} {
		cmd := newEdgeCmd()
		if err := cmd.ParseFlags(c.args); err != nil {
			t.Fatal(err)
		}
		d, _ := cmd.Flags().GetDuration("forward-backoff-max")
		cfg, err := (&edgeFlags{config: path, backoffMax: d}).load(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Forward.BackoffMax != c.want {
			t.Errorf("%v: backoff_max %v, want %v", c.args, cfg.Forward.BackoffMax, c.want)
		}
	}
	if _, err := runCLI(t, "edge", "--data-dir", t.TempDir(), "--forward-backoff-max", "-1s", "--check-config"); err == nil ||
		!strings.Contains(err.Error(), "forward.backoff_max") {
		t.Errorf("a negative backoff: err %v, want it named", err)
	}
}
