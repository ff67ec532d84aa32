package forward

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// A lane that keeps failing logs the first failure and then one line a minute, not one per
// retry: with a backoff of seconds an outage would otherwise fill the gateway's log.
func TestRetryLinesPerLaneAreBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: every attempt is refused at once
	log, _ := openLog(t, t.TempDir(), 1)
	defer log.Close()
	var out lockedBuffer
	f, err := New(log, Config{CentralURL: "http://" + addr, EdgeID: "gw-1", Token: "trb_x",
		BackoffMin: 2 * time.Millisecond, BackoffMax: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&out, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if err := f.Run(ctx); err != nil {
		t.Fatal(err)
	}
	retries := int64(0)
	for _, s := range f.Status() {
		retries += s.Retries
	}
	lines := strings.Count(out.String(), "forward partition; retrying")
	t.Logf("%d retries, %d retry lines", retries, lines)
	if retries < 20 {
		t.Fatalf("only %d retries in 1.5 s with a 10 ms backoff cap", retries)
	}
	if lines < 1 || lines > 2 { // one lane, one line for the outage's first failure
		t.Errorf("%d retry lines for %d retries, want 1:\n%s", lines, retries, out.String())
	}
}
