package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tributary-iot/tributary/devices"
)

// runDevicesCLI runs the real root command in-process, as a user would, with bcrypt at its minimum cost
// where a hash is made so the tests stay fast.
func runDevicesCLI(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	if len(args) >= 2 && (args[1] == "add" || args[1] == "passwd") {
		args = append(args, "--bcrypt-cost", "4")
	}
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err = root.ExecuteContext(t.Context())
	return out.String(), errOut.String(), err
}

func TestDevicesAddListRemove(t *testing.T) {
	dir := t.TempDir()
	pw, _, err := runDevicesCLI(t, "", "devices", "add", "boiler-7", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	pw = strings.TrimSpace(pw)
	if len(pw) < 20 || strings.ContainsAny(pw, " \n") {
		t.Fatalf("generated password %q: stdout should hold the password alone", pw)
	}
	if _, _, err := runDevicesCLI(t, "from-stdin\n", "devices", "add", "cam-1", "--cert-identity", "--password-stdin", "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	if out, _, err := runDevicesCLI(t, "", "devices", "add", "cam-2", "--cert-identity", "--no-password", "--allow-topic", "devices/+/t", "--data-dir", dir); err != nil || out != "" {
		t.Fatalf("cert-only add: stdout %q, err %v", out, err)
	}

	c, err := devices.NewCache(filepath.Join(dir, "devices.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Authenticate("boiler-7", pw); err != nil {
		t.Fatalf("generated password does not authenticate: %v", err)
	}
	if err := c.Authenticate("cam-1", "from-stdin"); err != nil {
		t.Fatalf("stdin password does not authenticate: %v", err)
	}
	if err := c.AuthenticateCert("cam-2"); err != nil {
		t.Fatal(err)
	}

	table, _, err := runDevicesCLI(t, "", "devices", "list", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "DEVICE") ||
		!strings.HasPrefix(lines[1], "boiler-7 ") || !strings.Contains(lines[2], "password+cert") ||
		!strings.Contains(lines[3], "devices/+/t") {
		t.Fatalf("list table:\n%s", table)
	}
	if strings.Contains(table, "$2") {
		t.Fatal("list shows a password hash")
	}

	out, _, err := runDevicesCLI(t, "", "devices", "list", "--registry", filepath.Join(dir, "devices.db"), "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []devicesListRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("list --format json: %v\n%s", err, out)
	}
	if len(rows) != 3 || rows[0].ID != "boiler-7" || !rows[0].Password || rows[2].Password || !rows[2].CertIdentity {
		t.Fatalf("json rows = %+v", rows)
	}

	if _, _, err := runDevicesCLI(t, "", "devices", "remove", "cam-1", "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	mustDevices(t, c.Reload())
	if err := c.Authenticate("cam-1", "from-stdin"); !errors.Is(err, devices.ErrUnknownDevice) {
		t.Fatalf("removed device: %v", err)
	}
}

func TestDevicesErrorsSayWhatToDo(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := runDevicesCLI(t, "", "devices", "add", "boiler-7", "--password", "pw", "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  []string
	}{
		{"duplicate", "", []string{"devices", "add", "boiler-7", "--data-dir", dir}, []string{`"boiler-7" already exists`, "tributary devices passwd boiler-7"}},
		{"unknown remove", "", []string{"devices", "remove", "ghost", "--data-dir", dir}, []string{`"ghost" is not in`, "tributary devices list"}},
		{"unknown passwd", "", []string{"devices", "passwd", "ghost", "--data-dir", dir}, []string{`"ghost" is not in`}},
		{"no registry", "", []string{"devices", "list"}, []string{"--data-dir DIR", "--registry FILE"}},
		{"bad id", "", []string{"devices", "add", "bad id", "--data-dir", dir}, []string{"invalid device id", "letters, digits"}},
		{"no credentials", "", []string{"devices", "add", "x", "--no-password", "--data-dir", dir}, []string{"--cert-identity"}},
		{"empty stdin", "", []string{"devices", "add", "x", "--password-stdin", "--data-dir", dir}, []string{"empty password"}},
		{"two sources", "", []string{"devices", "add", "x", "--password", "a", "--password-stdin", "--data-dir", dir}, []string{"password"}},
		{"missing id", "", []string{"devices", "add", "--data-dir", dir}, []string{"exactly one ID"}},
		{"bad format", "", []string{"devices", "list", "--format", "xml", "--data-dir", dir}, []string{"table or json"}},
		{"bad filter", "", []string{"devices", "add", "x", "--allow-topic", "a/#/b", "--data-dir", dir}, []string{"--allow-topic", "last level"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runDevicesCLI(t, tt.stdin, tt.args...)
			if err == nil {
				t.Fatal("command succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestDevicesLockedRegistry(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "devices.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	_, _, err = runDevicesCLI(t, "", "devices", "add", "x", "--password", "pw", "--data-dir", dir, "--lock-timeout", "150ms")
	if !errors.Is(err, devices.ErrRegistryLocked) || !strings.Contains(err.Error(), "retry") {
		t.Fatalf("add on locked registry: %v", err)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Fatalf("waited %v for a 150ms lock timeout", waited)
	}
}

// TestWatchSeesCLIChanges is the operational contract: the edge agent keeps a Watch running for
// months, and the operator's CLI changes become effective within seconds without a restart.
func TestWatchSeesCLIChanges(t *testing.T) {
	dir := t.TempDir()
	c, err := devices.NewCache(filepath.Join(dir, "devices.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Watch(ctx, 100*time.Millisecond) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second) // bounds a failure only; pickups take ~2s
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("running watch did not pick up %s within 10s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	if _, _, err := runDevicesCLI(t, "", "devices", "add", "boiler-7", "--password", "pw1", "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	// Polled with Get: a login for a device not yet known costs a dummy bcrypt at the default cost.
	waitFor("the added device", func() bool { _, ok := c.Get("boiler-7"); return ok })
	if err := c.Authenticate("boiler-7", "pw1"); err != nil {
		t.Fatalf("added device's password: %v", err)
	}
	if _, err := c.Authorize("boiler-7", "devices/boiler-7/temperature"); err != nil {
		t.Fatal(err)
	}

	pw2, _, err := runDevicesCLI(t, "", "devices", "passwd", "boiler-7", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	pw2 = strings.TrimSpace(pw2)
	waitFor("the new password", func() bool { return c.Authenticate("boiler-7", pw2) == nil })
	if err := c.Authenticate("boiler-7", "pw1"); !errors.Is(err, devices.ErrBadPassword) {
		t.Fatalf("old password still accepted: %v", err)
	}

	if _, _, err := runDevicesCLI(t, "", "devices", "disable", "boiler-7", "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	waitFor("the disable", func() bool { return errors.Is(c.Authenticate("boiler-7", pw2), devices.ErrDeviceDisabled) })

	if _, _, err := runDevicesCLI(t, "", "devices", "remove", "boiler-7", "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	waitFor("the removal", func() bool { _, ok := c.Get("boiler-7"); return !ok })
}

func mustDevices(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDevicesPasswordOver72Bytes: bcrypt reads only 72 bytes of a password, so add and passwd
// refuse longer ones (counted in bytes, not characters) with advice, before touching the registry.
func TestDevicesPasswordOver72Bytes(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("é", 37) // 37 characters, 74 bytes
	for _, args := range [][]string{
		{"devices", "add", "d1", "--data-dir", dir, "--password", long},
		{"devices", "add", "d1", "--data-dir", dir, "--password-stdin"},
	} {
		_, _, err := runDevicesCLI(t, long+"\n", args...)
		if err == nil || !strings.Contains(err.Error(), "74 bytes") || !strings.Contains(err.Error(), "generated") {
			t.Errorf("%v: %v, want a refusal that gives the length and the way out", args[3:], err)
		}
	}
	if _, _, err := runDevicesCLI(t, "", "devices", "add", "d1", "--data-dir", dir, "--password", strings.Repeat("p", 72)); err != nil {
		t.Fatalf("72-byte password refused: %v", err)
	}
	_, _, err := runDevicesCLI(t, long+"\n", "devices", "passwd", "d1", "--data-dir", dir, "--password-stdin")
	if err == nil || !strings.Contains(err.Error(), "74 bytes") {
		t.Errorf("passwd: %v, want the length refusal", err)
	}
}
