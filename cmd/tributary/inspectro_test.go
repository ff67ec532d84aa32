package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tributary-iot/tributary/internal/testfs"
)

// activeSegment returns the path of a partition's plain (active) segment.
func activeSegment(t *testing.T, dir string) string {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(dir, "streams", "readings", "0", "*.log"))
	if len(logs) == 0 {
		t.Fatal("no active segment")
	}
	return logs[len(logs)-1]
}

// TestInspectReadOnlyCopy: inspect reads a data dir on a read-only mount (a copy pulled off a
// gateway's card), reports what the node would repair instead of repairing it, and never writes
// to a writable one either.
func TestInspectReadOnlyCopy(t *testing.T) {
	t.Run("intact", func(t *testing.T) {
		ro := testfs.ReadOnly(t, makeLog(t, 400))
		out, err := runCLI(t, "inspect", "--segments", "--verify", ro)
		if err != nil {
			t.Fatalf("inspect on a read-only mount: %v\n%s", err, out)
		}
		for _, want := range []string{"stream readings: 2 partitions, 400 records", "sealed, ", "forwarder", "verify: every checksum and offset is intact"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("torn tail left in place", func(t *testing.T) {
		dir := makeLog(t, 400)
		seg := activeSegment(t, dir)
		f, err := os.OpenFile(seg, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte("half a batch from a power cut"))
		f.Close()
		before, _ := os.Stat(seg)
		for _, d := range []string{testfs.ReadOnly(t, dir), dir} {
			out, err := runCLI(t, "inspect", "--verify", d)
			var ee exitError
			if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(out, "torn") || !strings.Contains(out, "400 records") {
				t.Errorf("inspect %s: %v, want exit 2 with the torn tail reported and every record listed\n%s", d, err, out)
			}
		}
		if after, _ := os.Stat(seg); after.Size() != before.Size() {
			t.Errorf("inspect changed the segment: %d bytes, was %d", after.Size(), before.Size())
		}
	})
	t.Run("damaged meta.db", func(t *testing.T) {
		dir := makeLog(t, 400)
		f, err := os.OpenFile(filepath.Join(dir, "meta.db"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte(strings.Repeat("\xab", 8192)), 0)
		f.Close()
		out, err := runCLI(t, "inspect", testfs.ReadOnly(t, dir))
		if err != nil {
			t.Fatalf("inspect with a damaged meta.db: %v\n%s", err, out)
		}
		t.Logf("inspect output:\n%s", out)
		for _, want := range []string{"stream readings: 2 partitions, 400 records", "DAMAGE", "meta.db", "invalid database"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		if q, _ := filepath.Glob(filepath.Join(dir, "quarantine", "*")); len(q) != 0 {
			t.Errorf("inspect quarantined %v", q)
		}
	})
}
