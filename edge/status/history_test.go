package status

import (
	"runtime"
	"testing"
	"time"
)

// TestHistoryBound: the history keeps its newest Capacity samples in a ring allocated once;
// its stated bound (Bytes) is what it holds after a year's worth of samples, and adding one
// never allocates.
func TestHistoryBound(t *testing.T) {
	const capacity = int(DefaultWindow / DefaultResolution) // one hour at 10 s
	if capacity != 360 || SampleBytes != 24 {
		t.Fatalf("capacity %d, sample %d bytes: update the bound stated in README.md and Config's doc (360 samples of 24 bytes)", capacity, SampleBytes)
	}
	var base, before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)
	runtime.GC()
	runtime.ReadMemStats(&before)
	// What measuring itself allocates (a GC cycle and ReadMemStats), subtracted below.
	noise := int64(before.TotalAlloc) - int64(base.TotalAlloc)
	h := NewHistory(capacity)
	// One year at 10 s.
	const year = 365 * 24 * 360
	for i := range year {
		h.Add(Sample{Time: int64(i), Readings: float32(i)})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	// TotalAlloc only grows: what New and a year of Adds allocated, whatever else the GC freed.
	grown := int64(after.TotalAlloc) - int64(before.TotalAlloc) - noise
	// 256 bytes of slack: the noise estimate varies by a few size classes between runs.
	if bound := h.Bytes(); bound != 9528 || grown > int64(bound)+256 {
		t.Errorf("history of %d samples: allocated %d bytes, stated bound %d bytes", capacity, grown, bound)
	}
	t.Logf("history of %d samples after %d adds: allocated %d bytes, stated bound %d bytes", capacity, year, grown, h.Bytes())
	got := h.Samples(nil)
	if len(got) != capacity || got[0].Time != year-int64(capacity) || got[capacity-1].Time != year-1 {
		t.Fatalf("kept %d samples from %d to %d, want the newest %d", len(got), got[0].Time, got[len(got)-1].Time, capacity)
	}
	if allocs := testing.AllocsPerRun(1000, func() { h.Add(Sample{Time: 1}) }); allocs != 0 {
		t.Errorf("Add allocates %v times, want 0", allocs)
	}
	runtime.KeepAlive(h)
}

func TestHistoryOrderBeforeFull(t *testing.T) {
	h := NewHistory(4)
	for i := 1; i <= 3; i++ {
		h.Add(Sample{Time: int64(i)})
	}
	got := h.Samples(nil)
	if len(got) != 3 || got[0].Time != 1 || got[2].Time != 3 {
		t.Fatalf("samples %+v, want times 1, 2, 3", got)
	}
	if s := h.Since(time.Unix(1, 0)); len(s) != 2 || s[0].Time != 2 {
		t.Fatalf("since 1: %+v, want times 2, 3", s)
	}
}
