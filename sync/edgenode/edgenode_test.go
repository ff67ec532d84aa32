package edgenode

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The agent's keys and the node's (central, forward) share one file at the top level, as
// deploy/edge.yaml has them.
func TestLoadConfigSharesOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(path, []byte(`data_dir: /data
edge_id: gw-1
central: https://central.example:7443
mqtt:
  listen: 127.0.0.1:0
forward:
  token_file: /etc/token
  backoff_max: 10s
`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/data" || c.EdgeID != "gw-1" || c.MQTT.Listen != "127.0.0.1:0" ||
		c.Central != "https://central.example:7443" || c.Forward.TokenFile != "/etc/token" || c.Forward.BackoffMax != 10*time.Second {
		t.Errorf("config read as %+v", c)
	}
	if err := os.WriteFile(path, []byte("forward:\n  tokn: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), "tokn") {
		t.Errorf("misspelt key: %v, want an error naming it", err)
	}
}

// New refuses what cannot forward before it opens anything.
func TestNewRefusesIncompleteForwarding(t *testing.T) {
	t.Setenv(TokenEnv, "")
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"central without edge id", Config{Central: "http://127.0.0.1:1"}, "edge_id"},
		{"negative backoff", Config{Forward: ForwardConfig{BackoffMax: -time.Second}}, "backoff_max"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.DataDir = t.TempDir()
			if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error about %s", err, tc.want)
			}
		})
	}
	cfg := Config{Central: "http://127.0.0.1:1"}
	cfg.DataDir, cfg.EdgeID = t.TempDir(), "gw-1"
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("New without a token: %v, want an error saying how to get one", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "meta.db")); err == nil {
		t.Error("New opened the log although the token is missing")
	}
}
