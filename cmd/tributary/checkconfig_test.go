package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tributary-iot/tributary/internal/testpki"
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
	// The HTTP listener's TLS flags reach the config: a good pair and client CA pass, a
	// certificate without its key or with another's, and a client CA that is no PEM, are refused.
	ca := testpki.New(t, "edge http CA")
	cert, key := ca.ServerCert(t, "edge")
	otherCert, _ := ca.ServerCert(t, "other")
	if out, err := runCLI(t, "edge", "--config", good, "--http-tls-cert", cert, "--http-tls-key", key, "--http-client-ca", ca.File, "--check-config"); err != nil || !strings.Contains(out, "config OK") {
		t.Errorf("--http-tls-cert, --http-tls-key, --http-client-ca of one CA: err %v, out %q", err, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--http-tls-cert", cert}, "http_tls_key"},
		{[]string{"--http-tls-cert", otherCert, "--http-tls-key", key}, "private key does not match"},
		{[]string{"--http-tls-cert", cert, "--http-tls-key", key, "--http-client-ca", token}, "holds no PEM certificate"},
	} {
		args := append([]string{"edge", "--config", good, "--check-config"}, tc.args...)
		if _, err := runCLI(t, args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.want)
		}
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
