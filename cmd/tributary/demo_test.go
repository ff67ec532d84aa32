package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDemoEndToEnd runs the demo for a few seconds and checks that readings went from simulated
// devices through the edge and central to the consumer, every acked one exactly once.
func TestDemoEndToEnd(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := runDemo(ctx, &out, demoOptions{duration: 3 * time.Second, devices: 10, rate: 20, dataDir: dir, refresh: time.Second, plain: true})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	s := out.String()
	if !strings.Contains(s, "every acked reading arrived exactly once, in order per device") {
		t.Fatalf("demo summary lacks the end-to-end check:\n%s", s)
	}
	acked := regexp.MustCompile(`(\d+) acked by the edge`).FindStringSubmatch(s)
	consumed := regexp.MustCompile(`consumed at central\s+(\d+) readings from (\d+) devices`).FindStringSubmatch(s)
	if acked == nil || consumed == nil {
		t.Fatalf("summary lacks counts:\n%s", s)
	}
	a, _ := strconv.Atoi(acked[1])
	c, _ := strconv.Atoi(consumed[1])
	if a < 100 || c < a || consumed[2] != "10" {
		t.Fatalf("acked %d, consumed %d from %s devices; want >= 100 acked, all consumed, 10 devices:\n%s", a, c, consumed[2], s)
	}
	if _, err := os.Stat(filepath.Join(dir, "edge", "meta.db")); err != nil {
		t.Fatalf("edge log not in the data dir: %v", err)
	}
}
