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
	// gatherStep is how often a gathering committer looks at its group.
	gatherStep = time.Millisecond
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
func (p *Partition) gather(budget time.Duration, lastStart time.Time) {
	half := budget / 2
	hold := half - time.Duration(p.log.fsyncNanos.Load())
	if hold <= 0 {
		return // the disk alone takes the budget: gathering would only add latency
	}
	p.mu.Lock()
	g := p.groups[0]
	count, queued := g.count, g.queuedAt
	big := p.closing || p.pending >= pendingFlushBytes
	p.mu.Unlock()
	if count == 0 || big {
		return
	}
	until := lastStart.Add(half)
	if t := queued.Add(hold); t.After(until) {
		until = t
	}
	for {
		wait := time.Until(until)
		if wait <= 0 {
			return
		}
		time.Sleep(min(wait, gatherStep))
		p.mu.Lock()
		n := 0
		for _, g := range p.groups {
			n += g.count
		}
		big = p.closing || p.pending >= pendingFlushBytes
		p.mu.Unlock()
		if big || (n >= stallRecords && n == count) {
			return
		}
		count = n
	}
}
