package forward

import (
	"log/slog"
	"time"
)

// catchUpMin is the backlog, in records, above which the forwarder reports catch-up progress. Live
// lanes hold a few chunks in flight; a backlog this size is an outage's, not live traffic's.
const catchUpMin = 1000

// progress turns the lanes' counters into the log lines an operator watches after an outage: one
// when a catch-up starts, one per interval while it goes on (records behind, rate, time left),
// one when it is done. Only the forwarder's Run loop calls it.
type progress struct {
	logger *slog.Logger

	catching    bool
	since       time.Time // the catch-up's start
	startBehind int64
	lastAt      time.Time
	lastAcked   int64 // sum of the lanes' acked offsets at lastAt
	sentTotal   int64 // records central took since the catch-up started
}

// tick reads the lanes at now and logs what changed.
func (p *progress) tick(lanes []*lane, now time.Time) {
	var behind, acked int64
	for _, ln := range lanes {
		// Lanes in an outage do not count: their failures are logged as they happen, and a
		// catch-up starts when central answers again.
		if !ln.known.Load() || ln.downSince.Load() != 0 {
			continue
		}
		a := ln.acked.Load()
		acked += a
		behind += max(ln.p.EndOffset()-a, 0)
	}
	sent := acked - p.lastAcked
	dt := now.Sub(p.lastAt)
	first := p.lastAt.IsZero()
	p.lastAt, p.lastAcked = now, acked
	if first {
		sent = 0
	}
	switch {
	case !p.catching && behind >= catchUpMin:
		p.catching, p.since, p.startBehind, p.sentTotal = true, now, behind, 0
		p.logger.Info("catching up a backlog", "records_behind", behind)
	case p.catching && behind < catchUpMin:
		p.catching = false
		p.sentTotal += sent
		took := now.Sub(p.since)
		p.logger.Info("caught up", "records_sent", p.sentTotal, "took", took.Round(100*time.Millisecond),
			"rate_per_sec", int64(float64(p.sentTotal)/max(took.Seconds(), 1e-3)), "records_behind", behind)
	case p.catching:
		p.sentTotal += sent
		// The time left comes from the average rate since the catch-up began: one interval's
		// rate jumps with chunk boundaries and retries.
		rate := float64(sent) / max(dt.Seconds(), 1e-3)
		avg := float64(p.sentTotal) / max(now.Sub(p.since).Seconds(), 1e-3)
		args := []any{"records_behind", behind, "rate_per_sec", int64(rate)}
		if avg > 0 {
			args = append(args, "eta", time.Duration(float64(behind)/avg*float64(time.Second)).Round(time.Second))
		} else {
			args = append(args, "eta", "unknown")
		}
		p.logger.Info("catching up", args...)
	}
}
