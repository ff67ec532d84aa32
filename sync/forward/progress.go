package forward

import (
	"log/slog"
	"time"
)

// A catch-up is reported when a lane comes back from an outage with at least catchUpMin records
// behind, or when the backlog reaches catchUpStart records for any reason (an edge restarted with
// a backlog, a slow link); it ends when fewer than catchUpMin are behind. Live lanes on a busy
// gateway run a few thousand records behind, so the gap between the two keeps them quiet.
const (
	catchUpMin   = 1000
	catchUpStart = 10 * catchUpMin
)

// progress turns the lanes' counters into the log lines an operator watches after an outage: one
// when a catch-up starts, one per interval while it goes on (records behind, rate, time left),
// one when it is done. Only the forwarder's Run loop calls it, about once a second.
type progress struct {
	logger *slog.Logger
	every  time.Duration // how often a catch-up logs its progress

	prev      map[*lane]int64 // each lane's acked offset at the last tick
	lastTick  time.Time
	catching  bool
	since     time.Time // the catch-up's start
	sent      int64     // records central took since the catch-up started
	loggedAt  time.Time // the last progress line
	sentAtLog int64     // sent at loggedAt
}

// tick reads the lanes at now and logs what changed.
func (p *progress) tick(lanes []*lane, now time.Time) {
	if p.prev == nil {
		p.prev = map[*lane]int64{}
	}
	var behind, sent int64
	resumed := false
	for _, ln := range lanes {
		if ln.resumedBehind.Swap(false) {
			resumed = true
		}
		if !ln.known.Load() {
			continue
		}
		a := ln.acked.Load()
		if before, ok := p.prev[ln]; ok {
			sent += max(a-before, 0) // after its own restart central may resume a lane lower
		}
		p.prev[ln] = a
		// Lanes in an outage do not count: their failures are logged as they happen, and a
		// catch-up starts when central answers again.
		if ln.downSince.Load() == 0 {
			behind += max(ln.p.EndOffset()-a, 0)
		}
	}
	defer func() { p.lastTick = now }()
	switch {
	case !p.catching && (behind >= catchUpStart || resumed && behind >= catchUpMin):
		p.catching, p.since, p.sent, p.loggedAt, p.sentAtLog = true, now, 0, now, 0
		if resumed && !p.lastTick.IsZero() {
			// The lane came back since the last tick and has been draining: count that.
			p.since, p.sent = p.lastTick, sent
		}
		p.logger.Info("catching up a backlog", "records_behind", behind)
	case p.catching && behind < catchUpMin:
		p.catching = false
		p.sent += sent
		took := now.Sub(p.since)
		p.logger.Info("caught up", "records_sent", p.sent, "took", took.Round(100*time.Millisecond),
			"rate_per_sec", int64(float64(p.sent)/max(took.Seconds(), 1e-3)), "records_behind", behind)
	case p.catching:
		p.sent += sent
		if now.Sub(p.loggedAt) < p.every {
			return
		}
		rate := float64(p.sent-p.sentAtLog) / max(now.Sub(p.loggedAt).Seconds(), 1e-3)
		p.loggedAt, p.sentAtLog = now, p.sent
		// The time left comes from the average rate since the catch-up began: one interval's
		// rate jumps with chunk boundaries and retries.
		avg := float64(p.sent) / max(now.Sub(p.since).Seconds(), 1e-3)
		args := []any{"records_behind", behind, "rate_per_sec", int64(rate)}
		if avg > 0 {
			args = append(args, "eta", time.Duration(float64(behind)/avg*float64(time.Second)).Round(time.Second))
		} else {
			args = append(args, "eta", "unknown")
		}
		p.logger.Info("catching up", args...)
	}
}
