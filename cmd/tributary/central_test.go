package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func runCentralCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestCentralRefusesPlainNonLoopback(t *testing.T) {
	_, err := runCentralCLI(t, "central", "--data-dir", t.TempDir(), "--listen", "0.0.0.0:0")
	if err == nil || !strings.Contains(err.Error(), "--insecure") || !strings.Contains(err.Error(), "--tls-cert") {
		t.Fatalf("want a refusal naming --tls-cert and --insecure, got %v", err)
	}
}

func TestCentralEdgesOffline(t *testing.T) {
	dir := t.TempDir()
	token, err := runCentralCLI(t, "central", "edges", "add", "gw-1", "--data-dir", dir)
	if err != nil || !strings.HasPrefix(token, "trb_") {
		t.Fatalf("add: %q %v", token, err)
	}
	if _, err := runCentralCLI(t, "central", "edges", "revoke", "gw-1", "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	list, err := runCentralCLI(t, "central", "edges", "list", "--data-dir", dir)
	if err != nil || !strings.Contains(list, "gw-1") || !strings.Contains(list, "revoked") {
		t.Fatalf("list: %q %v", list, err)
	}
	if _, err := runCentralCLI(t, "central", "edges", "revoke", "nope", "--data-dir", dir); err == nil {
		t.Fatal("revoking an unknown edge succeeded")
	}
}

// TestEdgesAddSaysWhereTheTokenWent: with standard output redirected (as in the README's
// "edges add gw-1 > gw-1.token"), the message on stderr says the token went to standard output, not
// "above", where the operator sees nothing.
func TestEdgesAddSaysWhereTheTokenWent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	tributary, _ := buildBinaries(t)
	dir := t.TempDir()
	tokenFile, err := os.Create(filepath.Join(dir, "gw-1.token"))
	if err != nil {
		t.Fatal(err)
	}
	defer tokenFile.Close()
	var stderr bytes.Buffer
	cmd := exec.Command(tributary, "central", "edges", "add", "gw-1", "--data-dir", filepath.Join(dir, "c"))
	cmd.Stdout, cmd.Stderr = tokenFile, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("edges add: %v\n%s", err, stderr.String())
	}
	if msg := stderr.String(); !strings.Contains(msg, "written to standard output") || strings.Contains(msg, "above") {
		t.Errorf("with stdout redirected, the message says: %q", msg)
	}
	if b, _ := os.ReadFile(tokenFile.Name()); len(strings.TrimSpace(string(b))) < 20 {
		t.Errorf("token file holds %q", b)
	}
}
