package deploy_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/tributary-iot/tributary/internal/testpki"
	"github.com/tributary-iot/tributary/sync/central"
)

// TestShippedCentralConfigStarts runs central with deploy/central.yaml as shipped, only its
// files moved to test ones (data dir, TLS pair, API token file). It listens off loopback, so it
// must pass the security checks (TLS, credentials for the API) and get as far as the bind;
// 192.0.2.1 (TEST-NET-1) stands in for 0.0.0.0 and is on no interface, so nothing is exposed.
func TestShippedCentralConfigStarts(t *testing.T) {
	b, err := os.ReadFile("central.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg central.Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if central.IsLoopback(cfg.Listen) || cfg.APITokenFile == "" {
		t.Fatalf("the shipped config changed: listen %q api_token_file %q", cfg.Listen, cfg.APITokenFile)
	}
	ca := testpki.New(t, "deploy test CA")
	cfg.TLSCert, cfg.TLSKey = ca.ServerCert(t, "central")
	cfg.DataDir = t.TempDir()
	cfg.APITokenFile = filepath.Join(t.TempDir(), "central-api.token")
	if err := os.WriteFile(cfg.APITokenFile, []byte("0123456789abcdef\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	cfg.Listen = "192.0.2.1:7443"
	err = central.Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "listen on 192.0.2.1:7443") {
		t.Fatalf("shipped config: %v, want only the bind to fail", err)
	}
	cfg.APITokenFile = ""
	if err := central.Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "without credentials") {
		t.Fatalf("shipped config without its token file: %v, want a refusal", err)
	}
}
