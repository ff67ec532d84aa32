//go:build linux

package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/tributary-iot/tributary/internal/lossyfs"
)

// TestPowerCutKeepsRegistries adds a device at an edge and an edge at central with the real
// commands, cuts the power of both data dirs once the commands have exited, and expects both
// registrations to be there: a command that reports success must have made it durable, file and
// folder entry both.
func TestPowerCutKeepsRegistries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	tributary, _ := buildBinaries(t)
	edgeFS, centralFS := lossyfs.Mount(t, nil), lossyfs.Mount(t, nil)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(tributary, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("tributary %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("devices", "add", "thermo-7", "--password", "s3cret-pass", "--data-dir", edgeFS.Dir())
	run("central", "edges", "add", "gw-9", "--data-dir", centralFS.Dir())
	for _, fs := range []*lossyfs.FS{edgeFS, centralFS} {
		if _, err := fs.Cut(); err != nil {
			t.Fatal(err)
		}
	}
	if out := run("devices", "list", "--data-dir", edgeFS.Dir()); !strings.Contains(out, "thermo-7") {
		t.Errorf("device registered before the power cut is gone:\n%s", out)
	}
	if out := run("central", "edges", "list", "--data-dir", centralFS.Dir()); !strings.Contains(out, "gw-9") {
		t.Errorf("edge registered before the power cut is gone:\n%s", out)
	}
}
