package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
)

// makeLog writes n readings into a small-segment log and waits until at least one segment is sealed.
func makeLog(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	l, err := storage.Open(dir, &storage.Options{SegmentBytes: 4096, FrameBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.CreateStream("readings", storage.StreamConfig{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		dev := fmt.Sprintf("dev-%d", i%10)
		if _, _, err := s.Append(context.Background(), storage.Record{Key: []byte(dev),
			Value: fmt.Appendf(nil, `{"device":%q,"seq":%d,"temperature":%.1f}`, dev, i, 20+float64(i%7)/10)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.SetCursor("forwarder", "readings", 0, 3); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for l.Stats().SealedSegments < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestInspectReportsLog(t *testing.T) {
	dir := makeLog(t, 400)
	out, err := runCLI(t, "inspect", "--segments", "--verify", dir)
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	for _, want := range []string{"stream readings: 2 partitions, 400 records", "sealed, ", "forwarder", "verify: every checksum and offset is intact"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "inspect", "--format", "json", dir)
	if err != nil {
		t.Fatal(err)
	}
	var rep storage.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("json output: %v\n%s", err, out)
	}
	total := int64(0)
	for _, p := range rep.Streams[0].Partitions {
		total += p.EndOffset - p.StartOffset
	}
	if total != 400 {
		t.Fatalf("json reports %d records, want 400", total)
	}
}

func TestInspectVerifyFindsDamage(t *testing.T) {
	dir := makeLog(t, 400)
	sealed, _ := filepath.Glob(filepath.Join(dir, "streams", "readings", "*", "*.zst"))
	if len(sealed) == 0 {
		t.Fatal("no sealed segment to damage")
	}
	b, err := os.ReadFile(sealed[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(sealed[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "inspect", "--verify", dir)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("inspect --verify on damage: err %v, want exit 2\n%s", err, out)
	}
	if !strings.Contains(out, "DAMAGE") {
		t.Fatalf("no DAMAGE line:\n%s", out)
	}
}

func TestInspectRefusesNonLogDir(t *testing.T) {
	_, err := runCLI(t, "inspect", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "not a Tributary data directory") {
		t.Fatalf("err = %v", err)
	}
}
