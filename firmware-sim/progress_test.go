package firmwaresim

import (
	"strings"
	"testing"
	"time"
)

func TestLatencyFormatting(t *testing.T) {
	var none LatencySummary
	if got := none.fmt(0); got != "-" {
		t.Errorf("nothing measured: %q, want -", got)
	}
	// Latencies from millisecond device timestamps are often 0: that is "under a millisecond".
	var h histogram
	h.record(0)
	h.record(0)
	s := h.summary()
	if got := s.fmt(s.P50); got != "<1ms" {
		t.Errorf("measured zeros: %q, want <1ms", got)
	}
	if got := s.fmt(1500 * time.Microsecond); got != "1.5ms" {
		t.Errorf("1.5ms: %q", got)
	}
}

func TestProgressLine(t *testing.T) {
	prev := Progress{Elapsed: time.Second, Devices: 10, Offered: 100, Acked: 90}
	p := Progress{Elapsed: 3 * time.Second, Devices: 10, Offered: 300, Acked: 290, Unacked: 2}
	got := p.Line(prev, time.Minute)
	for _, want := range []string{"3s of 1m0s", "10 devices", "offered 300 (100/s)", "acked 290 (100/s)", "unacked 2"} {
		if !strings.Contains(got, want) {
			t.Errorf("line %q lacks %q", got, want)
		}
	}
}
