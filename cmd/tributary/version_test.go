package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// embeddedVCS is what the Go toolchain embeds in a build from a modified git checkout.
func embeddedVCS() *debug.BuildInfo {
	return &debug.BuildInfo{
		GoVersion: "go1.99.1",
		Main:      debug.Module{Version: "(devel)"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc123"},
			{Key: "vcs.time", Value: "2024-01-02T03:04:05Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
}

func TestBuildInfoPrefersLinkTimeValues(t *testing.T) {
	embedded := embeddedVCS()
	got := buildInfo("v1.2.3", "deadbeef", "2025-06-07T08:09:10Z", embedded, true)
	if got.Version != "v1.2.3" || got.Commit != "deadbeef" || got.BuildDate != "2025-06-07T08:09:10Z" || got.Modified {
		t.Errorf("link-time values should win and hide vcs.modified: %+v", got)
	}
	if got.GoVersion != "go1.99.1" {
		t.Errorf("GoVersion = %q, want the embedded one", got.GoVersion)
	}
}

func TestBuildInfoFallsBackToEmbeddedVCS(t *testing.T) {
	embedded := embeddedVCS()
	got := buildInfo("", "", "", embedded, true)
	want := BuildInfo{Version: "devel", Commit: "abc123", BuildDate: "2024-01-02T03:04:05Z", Modified: true,
		GoVersion: "go1.99.1", Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}

	// go install module@version reports the module version.
	embedded.Main.Version = "v0.4.0"
	if got := buildInfo("", "", "", embedded, true); got.Version != "v0.4.0" {
		t.Errorf("Version = %q, want the module version", got.Version)
	}

	// No build info at all (e.g. a stripped test binary): nothing is left empty.
	got = buildInfo("", "", "", nil, false)
	if got.Version != "devel" || got.Commit != "unknown" || got.BuildDate != "unknown" || got.GoVersion != runtime.Version() {
		t.Errorf("without build info: %+v", got)
	}
}

func TestVersionCommandOutput(t *testing.T) {
	out, err := runCLI(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"tributary ", "commit:", "built:", "go:         go", "platform:   " + runtime.GOOS + "/" + runtime.GOARCH} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "version", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var bi BuildInfo
	if err := json.Unmarshal([]byte(out), &bi); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	if bi.GoVersion == "" || bi.Platform == "" {
		t.Errorf("--json: %+v", bi)
	}
}

// TestVersionLdflags builds the real binary with the release flags .ci/build uses and runs it, so a
// renamed variable (which -X ignores silently) fails here rather than in a release.
func TestVersionLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "tributary")
	ldflags := "-X main.version=v9.8.7 -X main.commit=0123456789abcdef -X main.buildDate=2030-01-02T03:04:05Z"
	build := exec.Command("go", "build", "-ldflags", ldflags, "-o", bin, ".")
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatalf("tributary version: %v", err)
	}
	var bi BuildInfo
	if err := json.Unmarshal(out, &bi); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if bi.Version != "v9.8.7" || bi.Commit != "0123456789abcdef" || bi.BuildDate != "2030-01-02T03:04:05Z" {
		t.Errorf("ldflags not applied: %+v", bi)
	}
	if bi.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("Platform = %q", bi.Platform)
	}
}
