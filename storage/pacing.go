package storage

import "time"

// Adaptive group commit (Options.CommitBudget): how long a partition's committer gathers appends
// before it writes and fsyncs them as one group.
//
// A device that waits for each ack puts one reading in flight at a time, so a committer that writes
// at once syncs about once per reading at low rates: hundreds of fsyncs a second for a gateway's
// slow fleet, each a flash page rewritten. Waiting lets the readings of other devices join the
// group. The wait is bounded twice by the budget: a group starts no sooner than half the budget
// after the previous one started (the fsync rate is capped), and its oldest append waits at most
// half the budget less the measured fsync latency (the ack latency is capped). Two cases commit
// at once: a group of pendingFlushBytes or more, and a group of stallRecords or more that stopped
// growing: its writers are waiting for their acks (a bridge keeping a window of readings in
// flight), so waiting longer would only slow them.

const (
	// stallRecords is the smallest group that is written as soon as it stops growing.
	stallRecords = 16
	// A group of stallRecords or more has stopped growing once no append came for quietGaps
	// times its mean gap between arrivals, and at least quietMin. Shorter (4 times, 200µs) took
	// pauses among devices sending on their own clock for stalls: under load, over 300 fsyncs/s
	// at 20k records/s instead of about 200.
	quietGaps = 8
	quietMin  = 500 * time.Microsecond
)

// noteFsync folds one fdatasync's duration into the moving average the pacing reads (1/8 weight:
// a disk that slows down is followed within a few dozen commits).
func (l *Log) noteFsync(d time.Duration) {
	for {
		old := l.fsyncNanos.Load()
		avg := int64(d)
		if old != 0 {
			avg = old + (int64(d)-old)/8
		}
		if l.fsyncNanos.CompareAndSwap(old, avg) {
			return
		}
	}
}

// gather waits, when the budget says so, for more appends to join the pending group. lastStart is
// when the previous commit began.
//
// It sleeps until the next moment something can change its mind, not in fixed steps: the
// deadline; an append that brings the group to stallRecords or pendingFlushBytes (enqueue
// signals grown); or the moment the group counts as stalled if nothing more arrives. A group of
// stallRecords or more has stalled when no append came for quietGaps times its mean gap between
// arrivals, and at least quietMin: writers that keep a window in flight, or devices that wait for
// their acks, all wait on this group then, and nothing more comes until it is written. Sleeping
// in 1 ms steps and comparing counts took two or more steps to see a stall, on a loaded machine
// several milliseconds per commit that a waiting device adds to every reading's round trip.

func (p *Partition) gather(budget time.Duration, lastStart time.Time) {
	half := budget / 2
	hold := half - time.Duration(p.log.fsyncNanos.Load())
	if hold <= 0 {
		return // the disk alone takes the budget: gathering would only add latency
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		p.mu.Lock()
		p.gathering = false
		p.mu.Unlock()
	}()
	for {
		p.mu.Lock()
		n := p.queued
		first, last := p.groups[0].queuedAt, p.lastAppend
		big := p.closing || p.failed != nil || p.pending >= pendingFlushBytes
		p.gathering, p.wakeAtStall = !big, n < stallRecords
		p.mu.Unlock()
		if n == 0 || big {
			return
		}
		now := time.Now()
		wake := lastStart.Add(half)
		if t := first.Add(hold); t.After(wake) {
			wake = t
		}
		if !now.Before(wake) {
			return
		}
		if n >= stallRecords {
			quiet := max(quietMin, quietGaps*last.Sub(first)/time.Duration(n-1))
			stall := last.Add(quiet)
			if !now.Before(stall) {
				return
			}
			if stall.Before(wake) {
				wake = stall
			}
		}
		if timer == nil {
			timer = time.NewTimer(wake.Sub(now))
		} else {
			timer.Reset(wake.Sub(now))
		}
		select {
		case <-timer.C:
		case <-p.grown:
		}
	}
}
