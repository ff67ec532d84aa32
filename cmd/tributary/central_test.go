package main

import (
	"bytes"
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
