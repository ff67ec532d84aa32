package receive

import "sync/atomic"

// countdown counts completions whose total is known only once they have all been started: the
// records of one apply handed to storage, whose callbacks may run (on a committer goroutine)
// before the last record is queued. While armed it holds a guard far above any real count, so
// early completions cannot bring it to zero; seal swaps the guard for the real total. Exactly one
// call, done or seal, sees it reach zero and returns true. One atomic add per completion is all
// a storage callback costs.
type countdown struct{ n atomic.Int64 }

// countdownGuard is above any count of records or partitions one apply can reach.
const countdownGuard = 1 << 40

// arm starts the count: completions may come before the total is known.
func (c *countdown) arm() { c.n.Store(countdownGuard) }

// add counts k more completions to come, while armed.
func (c *countdown) add(k int64) { c.n.Add(k) }

// done counts one completion; true when it was the last and the count is sealed.
func (c *countdown) done() bool { return c.n.Add(-1) == 0 }

// seal adds total completions (beyond those added) and removes the guard; true when all of them
// had already completed.
func (c *countdown) seal(total int64) bool { return c.n.Add(total-countdownGuard) == 0 }

// zero reports whether every completion has come and the count is sealed.
func (c *countdown) zero() bool { return c.n.Load() == 0 }
