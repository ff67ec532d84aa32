package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tributary-iot/tributary/storage/internal/fsutil"
)

// Partition is one ordered, append-only sequence of records with dense offsets.
//
// Appends from any number of goroutines are queued into a pending group; one committer goroutine per
// partition writes every pending group with one write and one fdatasync (group commit), then
// completes them all. Readers only see records whose group has completed.
type Partition struct {
	log    *Log
	stream string
	id     int
	dir    string

	mu       sync.Mutex
	space    *sync.Cond // signalled when pending bytes drop, for pipelining writers
	segments []segment  // by base offset; the last one is the active plain segment
	groups   []*group   // pending, oldest first; the last one takes new records
	pending  int        // encoded bytes in groups
	failed   error
	closing  bool
	// Set with failed; see failure.go for how a stopped partition resumes.
	failedAt, lastRecovery, lastRecoveryLog time.Time
	failedBytes                             int64 // size of the write that failed
	gaps                                    []Gap
	dirtySync                               bool // written since the last fsync (interval and none policies)

	active *plainSegment // written only by the committer; swapped under mu
	spare  []byte        // buffer of a completed group, for the next one; under mu
	// callbacksHint is how many callbacks the newest group with any has; under mu. A group's
	// callback slice starts at the previous group's count instead of growing from nothing, which
	// cost seven allocations per commit of fifty appends.
	callbacksHint int

	end     atomic.Int64 // offset after the last readable record (durable, except under FsyncNone)
	opened  int64        // end when the log was opened (0 for a partition created since)
	written atomic.Int64 // offset after the last written record; the committer's
	rollReq atomic.Bool
	kick    chan struct{}
	done    chan struct{}

	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced whenever end advances

	// removeMu orders the two ways a sealed segment leaves at run time: dropped (retention, quota)
	// or found damaged (quarantined or salvaged), so a salvage never races a deletion of the file
	// it is replacing.
	removeMu sync.Mutex
}

// group is the unit of group commit: records queued between two commits, written as one batch.
type group struct {
	buf       []byte // batch header space followed by encoded records
	count     int
	baseTS    int64
	maxTS     int64
	hasTS     bool
	callbacks []groupCallback
	done      chan struct{}
	base      int64
	err       error
	queuedAt  time.Time // when its first record was queued; set under the adaptive commit only
}

type groupCallback struct {
	index int
	fn    func(offset int64, err error)
}

const (
	// maxGroupBytes closes a group so that one batch stays a bounded write and frame size.
	maxGroupBytes = 1 << 20
	// maxPendingBytes bounds queued, unwritten records per partition; AppendAsync blocks above it.
	maxPendingBytes = 16 << 20
	// pendingFlushBytes of pending records are written without lingering or gathering.
	pendingFlushBytes = maxGroupBytes / 4
)

// newGroup starts a group sized like the last one (sizeHint bytes), so a gateway committing one
// small reading per fsync does not allocate kilobytes per reading, and a busy log does not regrow
// its buffer many times per commit.
func newGroup(sizeHint int) *group {
	return &group{buf: make([]byte, batchHeaderSize, min(max(sizeHint, 512), maxGroupBytes)), done: make(chan struct{})}
}

// ID is the partition number within its stream.
func (p *Partition) ID() int { return p.id }

// Stream is the name of the stream the partition belongs to.
func (p *Partition) Stream() string { return p.stream }

// EndOffset is the offset the next record will get; every record below it is readable (durable
// under the group fsync policy).
func (p *Partition) EndOffset() int64 { return p.end.Load() }

// OpenedEndOffset is the end offset recovery found when the log was opened (0 for a partition
// created since): every offset at or past it was written by this process. Sync compares it with
// what central already holds to tell a log that went backwards (an older copy, a cut file).
func (p *Partition) OpenedEndOffset() int64 { return p.opened }

// StartOffset is the first offset still stored.
func (p *Partition) StartOffset() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.segments[0].baseOffset()
}

// Gaps returns the recorded ranges that were dropped or quarantined, oldest first.
func (p *Partition) Gaps() []Gap {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Gap(nil), p.gaps...)
}

// Append stores rec and returns its offset once the fsync policy is satisfied: under FsyncGroup
// that means durable. If ctx ends first the record may still be stored; its offset is then unknown.
func (p *Partition) Append(ctx context.Context, rec Record) (int64, error) {
	g, idx, err := p.enqueue(&rec, nil, false)
	if err != nil {
		return -1, err
	}
	select {
	case <-g.done:
		if g.err != nil {
			return -1, g.err
		}
		return g.base + int64(idx), nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// AppendAsync queues rec and calls done with its offset, or the error, once the fsync policy is
// satisfied. Callbacks run on the partition's committer goroutine in offset order and must not
// block. AppendAsync blocks only while too many bytes are queued, which paces a pipelining writer
// to the disk. rec's bytes are copied before AppendAsync returns: the caller may reuse them.
func (p *Partition) AppendAsync(rec Record, done func(offset int64, err error)) {
	if _, _, err := p.enqueue(&rec, done, true); err != nil {
		done(-1, err)
	}
}

func (p *Partition) enqueue(rec *Record, cb func(int64, error), wait bool) (*group, int, error) {
	if encodedRecordSize(rec) > MaxRecordSize {
		return nil, 0, fmt.Errorf("append %d-byte value: %w (limit %d bytes)", len(rec.Value), ErrRecordTooLarge, MaxRecordSize)
	}
	if err := p.log.checkQuota(); err != nil {
		return nil, 0, err
	}
	p.mu.Lock()
	for wait && p.pending >= maxPendingBytes && p.failed == nil && !p.closing {
		p.space.Wait()
	}
	if p.closing {
		p.mu.Unlock()
		return nil, 0, ErrClosed
	}
	if p.failed != nil {
		err := p.failed
		p.mu.Unlock()
		p.kickCommitter() // a writer waiting on a stopped partition: time to see if it can resume
		return nil, 0, err
	}
	g := p.groups[len(p.groups)-1]
	if len(g.buf) >= maxGroupBytes {
		g = newGroup(maxGroupBytes)
		p.groups = append(p.groups, g)
	}
	ts := millis(rec.Timestamp)
	if !g.hasTS {
		g.baseTS, g.maxTS, g.hasTS = ts, ts, true
	}
	if ts > g.maxTS {
		g.maxTS = ts
	}
	if g.count == 0 && p.log.opts.CommitBudget > 0 {
		g.queuedAt = time.Now()
	}
	before := len(g.buf)
	g.buf = appendRecord(g.buf, rec, g.baseTS)
	p.pending += len(g.buf) - before
	idx := g.count
	g.count++
	if cb != nil {
		if g.callbacks == nil {
			g.callbacks = make([]groupCallback, 0, max(p.callbacksHint, 8))
		}
		g.callbacks = append(g.callbacks, groupCallback{idx, cb})
		p.callbacksHint = len(g.callbacks)
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
	return g, idx, nil
}

// run is the committer: the only goroutine that writes to the active segment.
func (p *Partition) run() {
	defer close(p.done)
	takeTurn := p.log.opts.Fsync == FsyncGroup
	linger, budget := p.log.opts.GroupLinger, p.log.opts.CommitBudget
	var lastStart time.Time // of the previous commit, for the adaptive pacing (pacing.go)
	for range p.kick {
		p.recoverIfDue()
		if linger > 0 {
			p.mu.Lock()
			wait := !p.closing && p.pending < pendingFlushBytes
			p.mu.Unlock()
			if wait {
				// Let more appends join this group: one fsync for all of them.
				time.Sleep(linger)
			}
		} else if budget > 0 {
			p.gather(budget, lastStart)
		}
		if takeTurn {
			// Fsyncs take turns across the log's partitions: each goroutine blocked in
			// fdatasync holds a P until the runtime's monitor takes it back (up to
			// milliseconds once it has backed off), so with several partitions syncing at once
			// a 2-core gateway had no P left for the writers that fill the next group, and
			// groups shrank to a few records. The turn is taken before the pending groups, so
			// records that arrive while other partitions sync join this commit.
			p.log.syncMu.Lock()
		}
		p.mu.Lock()
		groups := p.groups
		if groups[len(groups)-1].count == 0 {
			groups = groups[:len(groups)-1]
		}
		if len(groups) > 0 {
			g := newGroup(0)
			if hint := len(groups[len(groups)-1].buf); cap(p.spare) >= hint {
				// Reuse the buffer of a completed group: its bytes are on disk and nobody reads
				// it again, and a fresh zeroed megabyte per commit cost central a tenth of its CPU.
				g.buf, p.spare = p.spare[:batchHeaderSize], nil
			} else {
				g.buf = make([]byte, batchHeaderSize, min(max(hint, 512), maxGroupBytes))
			}
			p.groups = []*group{g}
			p.pending = 0
			p.space.Broadcast()
		}
		closing := p.closing
		p.mu.Unlock()

		var commitErr error
		if len(groups) > 0 {
			if budget > 0 {
				lastStart = time.Now()
			}
			commitErr = p.commit(groups)
		} else if p.rollReq.Swap(false) {
			p.mu.Lock()
			failed := p.failed
			p.mu.Unlock()
			if failed == nil && p.active.size.Load() > 0 {
				if err := p.roll(p.written.Load()); err != nil {
					p.log.logger.Error("roll segment by age", "stream", p.stream, "partition", p.id, "err", err)
				}
			}
		}
		if takeTurn {
			p.log.syncMu.Unlock()
		}
		if len(groups) > 0 {
			p.complete(groups, commitErr)
			p.mu.Lock()
			if b := groups[0].buf; cap(b) > cap(p.spare) {
				p.spare = b
			}
			p.mu.Unlock()
		}
		if closing {
			if len(groups) == 0 {
				return
			}
			// Drain what was queued before Close without waiting for another append.
			select {
			case p.kick <- struct{}{}:
			default:
			}
		}
	}
}

// commit writes and syncs groups and returns the outcome; the caller completes the groups after
// giving up its fsync turn, so callbacks never delay another partition's fsync.
func (p *Partition) commit(groups []*group) error {
	p.mu.Lock()
	failed := p.failed
	p.mu.Unlock()
	if failed != nil {
		return failed
	}
	opts := &p.log.opts
	next := p.written.Load()
	var total int
	for _, g := range groups {
		total += len(g.buf)
	}
	if p.active.size.Load() > 0 && (p.active.size.Load()+int64(total) > opts.SegmentBytes || p.rollReq.Swap(false)) {
		if err := p.roll(next); err != nil {
			p.fail(fmt.Errorf("roll segment: %w", err))
			return p.failedErr()
		}
	}
	seg := p.active
	start := seg.size.Load()
	pos := start
	buf := groups[0].buf
	if len(groups) > 1 {
		buf = make([]byte, 0, total)
	}
	for _, g := range groups {
		g.base = next
		putBatchHeader(g.buf, next, g.count, g.baseTS, g.maxTS)
		if len(groups) > 1 {
			buf = append(buf, g.buf...)
		}
		next += int64(g.count)
	}
	if _, err := seg.f.WriteAt(buf, pos); err != nil {
		// Cut back what may have been written so the file ends on a whole batch, then stop the
		// partition: letting a later group succeed would store a writer's record N+1 while N
		// failed, and its resend of N would land out of order. Reopening recovers.
		werr := fmt.Errorf("write %d bytes to segment %d: %w", len(buf), seg.base, err)
		seg.f.Truncate(start)
		p.mu.Lock()
		p.failedBytes = int64(len(buf))
		p.mu.Unlock()
		p.fail(werr)
		return p.failedErr()
	}
	p.log.bytesWritten.Add(int64(len(buf)))
	p.log.diskBytes.Add(int64(len(buf)))
	if opts.Fsync == FsyncGroup {
		if err := p.log.fdatasync(seg.f); err != nil {
			// After a failed fsync the kernel may have dropped the dirty pages: the file's state is
			// unknown, so stop the partition (as etcd and Prometheus do) and let a reopen recover.
			p.fail(fmt.Errorf("fsync segment %d: %w", seg.base, err))
			return p.failedErr()
		}
	} else {
		p.mu.Lock()
		p.dirtySync = true
		p.mu.Unlock()
	}
	for _, g := range groups {
		seg.noteBatch(g.base, pos, g.maxTS)
		pos += int64(len(g.buf))
	}
	seg.publish(pos, next)
	p.written.Store(next)
	p.log.recordsAppended.Add(next - groups[0].base)
	if opts.Fsync != FsyncInterval {
		p.advanceEnd(next)
	}
	// Under FsyncInterval readers wait for the periodic fsync (syncIfDirty): a record forwarded
	// before it was durable could be lost in a power cut and its offset handed out again, and
	// central would then drop the new record as already seen.
	return nil
}

func (p *Partition) complete(groups []*group, err error) {
	for _, g := range groups {
		g.err = err
		close(g.done)
		for _, cb := range g.callbacks {
			if err != nil {
				cb.fn(-1, err)
			} else {
				cb.fn(g.base+int64(cb.index), nil)
			}
		}
	}
}

// kickCommitter wakes the committer without blocking. A full kick buffer means a wake-up is
// already pending; a blocking send could wait forever on a committer that saw closing, exited,
// and left a late append's kick in the buffer.
func (p *Partition) kickCommitter() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *Partition) failedErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

func (p *Partition) fail(err error) {
	p.mu.Lock()
	if p.failed == nil {
		p.failed = fmt.Errorf("%w: %w", ErrPartitionFailed, err)
		p.failedAt = time.Now()
		p.lastRecovery = p.failedAt
	}
	p.space.Broadcast()
	p.mu.Unlock()
	p.log.logger.Error("partition stopped", "stream", p.stream, "partition", p.id, "err", err)
}

func (p *Partition) wake() {
	p.notifyMu.Lock()
	close(p.notify)
	p.notify = make(chan struct{})
	p.notifyMu.Unlock()
}

func (p *Partition) waitChan() <-chan struct{} {
	p.notifyMu.Lock()
	defer p.notifyMu.Unlock()
	return p.notify
}

// roll closes the active segment to writes and starts a new one at offset next. The old segment
// is queued for sealing.
func (p *Partition) roll(next int64) error {
	old := p.active
	if err := p.log.fdatasync(old.f); err != nil {
		return err
	}
	p.advanceEnd(next) // everything written so far is in old, now durable
	f, err := os.OpenFile(filepath.Join(p.dir, segmentName(next, plainExt)), os.O_CREATE|os.O_EXCL|os.O_RDWR, fileMode)
	if err != nil {
		return err
	}
	if err := fsutil.SyncDir(p.dir); err != nil {
		f.Close()
		return err
	}
	ns := newPlainSegment(f, next, time.Now())
	p.mu.Lock()
	p.segments = append(p.segments, ns)
	p.active = ns
	p.dirtySync = false
	p.mu.Unlock()
	p.log.queueSeal(p, old)
	return nil
}

// syncIfDirty fsyncs the active segment under the interval policy.
// It then lets readers see what the fsync covered. The written end is read before the active
// segment: every record below it is either in that segment or in an older one, which its roll
// fsynced.
func (p *Partition) syncIfDirty() {
	target := p.written.Load()
	p.mu.Lock()
	dirty := p.dirtySync
	p.dirtySync = false
	seg := p.active
	p.mu.Unlock()
	if dirty {
		if err := p.log.syncInTurn(seg.f); err != nil {
			if !errors.Is(err, os.ErrClosed) {
				p.fail(fmt.Errorf("fsync segment %d: %w", seg.base, err))
			}
			return
		}
	}
	p.advanceEnd(target)
}

// advanceEnd makes records below end readable and wakes following readers.
func (p *Partition) advanceEnd(end int64) {
	for {
		cur := p.end.Load()
		if end <= cur {
			return
		}
		if p.end.CompareAndSwap(cur, end) {
			p.wake()
			return
		}
	}
}

// snapshot returns the current segments; callers acquire a segment before reading it.
func (p *Partition) snapshot() []segment {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]segment(nil), p.segments...)
}

// segmentFor returns the first segment holding offsets at or after offset, acquired, or nil once
// the log is closing (its segments are retired then, and acquiring them would never succeed).
func (p *Partition) segmentFor(offset int64) segment {
	for {
		p.mu.Lock()
		if p.closing {
			p.mu.Unlock()
			return nil
		}
		var s segment
		for _, seg := range p.segments {
			if seg.nextOffset() > offset || seg == segment(p.active) {
				s = seg
				break
			}
		}
		p.mu.Unlock()
		if s == nil || s.acquire() {
			return s
		}
		// Sealing or retention replaced it between lookup and acquire; look again.
	}
}

// replaceSegment swaps old for repl (nil removes it) in the segment list.
func (p *Partition) replaceSegment(old, repl segment) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, s := range p.segments {
		if s == old {
			if repl == nil {
				p.segments = append(p.segments[:i:i], p.segments[i+1:]...)
			} else {
				p.segments[i] = repl
			}
			return true
		}
	}
	return false
}
