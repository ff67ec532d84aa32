package firmwaresim

import (
	"fmt"
	"time"
)

// Progress is a running fleet's counts so far, for a live progress line.
type Progress struct {
	Elapsed       time.Duration
	Devices       int
	Offered       uint64
	Acked         uint64 // QoS 1 PUBACKs received
	Written       uint64 // QoS 0 readings written
	Unacked       uint64
	ConnectErrors uint64
}

// Progress reads the fleet's counters; it is safe to call while [Fleet.Run] runs, and returns the
// zero Progress before Run has started.
func (f *Fleet) Progress() Progress {
	f.mu.Lock()
	devices, start := f.devices, f.start
	f.mu.Unlock()
	if devices == nil {
		return Progress{}
	}
	p := Progress{Elapsed: time.Since(start), Devices: len(devices)}
	for _, d := range devices {
		d.statsMu.Lock()
		p.Offered += d.stats.Offered
		p.Acked += d.stats.Acked
		p.Written += d.stats.Written
		p.Unacked += d.stats.Unacked
		p.ConnectErrors += d.stats.ConnectErrors
		d.statsMu.Unlock()
	}
	return p
}

// Line formats p as one progress line, with rates over the time since prev (the previous line's
// Progress; the zero Progress for the first line) and the run's planned duration (0: by count).
func (p Progress) Line(prev Progress, duration time.Duration) string {
	dt := (p.Elapsed - prev.Elapsed).Seconds()
	rate := func(now, before uint64) float64 {
		if dt <= 0 {
			return 0
		}
		return float64(now-before) / dt
	}
	at := p.Elapsed.Round(time.Second).String()
	if duration > 0 {
		at += " of " + duration.String()
	}
	return fmt.Sprintf("%s: %d devices, offered %d (%.0f/s), acked %d (%.0f/s), unacked %d, connect errors %d",
		at, p.Devices, p.Offered, rate(p.Offered, prev.Offered), p.Acked+p.Written,
		rate(p.Acked+p.Written, prev.Acked+prev.Written), p.Unacked, p.ConnectErrors)
}
