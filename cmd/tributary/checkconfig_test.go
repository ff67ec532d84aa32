package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEdgeCheckConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	token := write("edge.token", "secret\n")
	good := write("good.yaml", "data_dir: "+filepath.Join(dir, "data")+"\ncentral: http://127.0.0.1:1\nedge_id: gw-1\nforward:\n  token_file: "+token+"\n")
	out, err := runCLI(t, "edge", "--config", good, "--check-config")
	if err != nil || !strings.Contains(out, "config OK") {
		t.Fatalf("good config: err %v, out %q", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Fatal("--check-config created the data directory; it must not touch anything")
	}
	// The HTTP listener's TLS flags reach the config: a certificate without its key is refused.
	if _, err := runCLI(t, "edge", "--config", good, "--http-tls-cert", token, "--check-config"); err == nil || !strings.Contains(err.Error(), "http_tls_key") {
		t.Errorf("--http-tls-cert without --http-tls-key: %v, want an error naming http_tls_key", err)
	}
	cases := map[string]struct{ body, want string }{
		"bad fsync":     {"data_dir: x\nfsync: sometimes\n", "unknown fsync policy"},
		"unknown key":   {"data_dir: x\nfsyncc: group\n", "field fsyncc not found"},
		"no edge id":    {"data_dir: x\ncentral: http://127.0.0.1:1\n", "--edge-id"},
		"missing token": {"data_dir: x\ncentral: http://127.0.0.1:1\nedge_id: g\nforward:\n  token_file: " + filepath.Join(dir, "nope") + "\n", "forward.token_file"},
		"bad mapping":   {"data_dir: x\nmapping:\n  - pattern: \"plant/+/x\"\n", "mapping"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := runCLI(t, "edge", "--config", write(strings.ReplaceAll(name, " ", "_")+".yaml", c.body), "--check-config")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
		})
	}
}
