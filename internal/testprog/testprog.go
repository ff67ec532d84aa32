// Package testprog finds programs written elsewhere (Debian's mosquitto, kcat, chromium, node,
// python3 with a module) for interop tests. Absent, a test skips on a laptop; under CI=true, where
// .ci/run installs them, a missing program fails the test instead of hiding a regression.
package testprog

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Find returns the path of the program name, looked up first in dirs, then on PATH. pkg names the
// Debian package that provides it, for the message.
func Find(t testing.TB, name, pkg string, dirs ...string) string {
	t.Helper()
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	Missing(t, "%s not installed (apt-get install %s)", name, pkg)
	return ""
}

// Missing skips the test, or fails it under CI=true, with the formatted reason.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// Python returns a python3 that can import every module named, preferring Debian's /usr/bin/python3
// (where apt installs python3-paho-mqtt, python3-confluent-kafka, python3-protobuf) over one on PATH.
func Python(t testing.TB, pkg string, modules ...string) string {
	t.Helper()
	cands := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		cands = append(cands, p)
	}
	for _, py := range cands {
		ok := true
		for _, m := range modules {
			if exec.Command(py, "-c", "import "+m).Run() != nil {
				ok = false
				break
			}
		}
		if ok {
			return py
		}
	}
	Missing(t, "python3 with %v not installed (apt-get install %s)", modules, pkg)
	return ""
}

// Output runs prog with args, bounded by timeout, and returns its standard output; it fails the
// test with the program's standard error when it exits non-zero or runs out of time.
func Output(t testing.TB, timeout time.Duration, prog string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(prog), args, err, stderr.String())
	}
	return out
}
