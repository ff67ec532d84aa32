package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tributary-iot/tributary/storage/internal/fsutil"
)

// A partition stops at a failed write or fsync (see Partition.commit): letting a later group
// succeed could store a writer's record N+1 while N failed. It does not have to stay stopped until
// a restart, though. Everything below the active segment's published size was written (and, under
// the group policy, fsynced) before the failure; what the failed commit wrote past it was never
// acknowledged. So recovery cuts the segment back to that size and fsyncs it: once both succeed
// the file is exactly what was acknowledged, on disk, and appends resume. That is what a restart
// would do, without losing every connection; it is also stricter than a restart after a failed
// fsync, which would keep the unsynced bytes that the page cache still shows.

// recoverEvery spaces recovery attempts of a stopped partition; attempts are cheap (a statfs,
// and a truncate and fsync only once there is room), so a full disk that is cleared is noticed
// within about this long.
const recoverEvery = time.Second

// recoverHeadroom is the free space, beyond the failed write, an attempt waits for: resuming
// with a few bytes free would only fail the next group again.
const recoverHeadroom = 64 << 10

// PartitionFailure describes a stopped partition, for readiness checks and status pages.
type PartitionFailure struct {
	Stream    string
	Partition int
	Err       error
	Since     time.Time
	// NoSpace tells the operator what to do: free disk space. Other errors (EIO) point at the
	// storage device; the partition still retries.
	NoSpace bool
}

// Failure returns why the partition stopped accepting appends, or nil while it accepts them.
func (p *Partition) Failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

// Failures lists the partitions that are stopped now; each retries by itself (see
// [ErrPartitionFailed]), so an empty list after a disk was cleared means every one resumed.
func (l *Log) Failures() []PartitionFailure {
	var out []PartitionFailure
	if l.readOnly {
		return nil // refusing appends is what a read-only log is for
	}
	for _, p := range l.allPartitions() {
		p.mu.Lock()
		if p.failed != nil {
			out = append(out, PartitionFailure{Stream: p.stream, Partition: p.id, Err: p.failed,
				Since: p.failedAt, NoSpace: errors.Is(p.failed, syscall.ENOSPC)})
		}
		p.mu.Unlock()
	}
	return out
}

// kickFailed wakes the committers of stopped partitions so they try to recover even when no
// append arrives.
func (l *Log) kickFailed() {
	for _, p := range l.allPartitions() {
		p.mu.Lock()
		failed := p.failed != nil && !p.closing
		p.mu.Unlock()
		if failed {
			p.kickCommitter()
		}
	}
}

// recoverIfDue runs on the committer goroutine: it tries to resume a stopped partition at most
// once per recoverEvery.
func (p *Partition) recoverIfDue() {
	p.mu.Lock()
	due := p.failed != nil && !p.closing && time.Since(p.lastRecovery) >= recoverEvery
	if due {
		p.lastRecovery = time.Now()
	}
	cause, need := p.failed, p.failedBytes
	p.mu.Unlock()
	if !due {
		return
	}
	if free, ok := fsutil.FreeBytes(p.dir); ok && free < need+recoverHeadroom {
		return // still full: try again later
	}
	if err := p.resume(); err != nil {
		p.mu.Lock()
		report := time.Since(p.lastRecoveryLog) >= time.Minute
		if report {
			p.lastRecoveryLog = time.Now()
		}
		p.mu.Unlock()
		if report {
			p.log.logger.Warn("partition still stopped; retrying", "stream", p.stream, "partition", p.id,
				"cause", cause, "err", err)
		}
		return
	}
	p.mu.Lock()
	since := p.failedAt
	p.failed = nil
	p.failedBytes = 0
	p.space.Broadcast()
	p.mu.Unlock()
	p.log.logger.Info("partition resumed after a write error; nothing acknowledged was lost",
		"stream", p.stream, "partition", p.id, "stopped_for", time.Since(since).Round(time.Millisecond),
		"next_offset", p.written.Load(), "cause", cause)
}

// resume cuts the active segment back to what was acknowledged and makes that durable. A roll
// that failed after creating the next segment's file leaves that file empty and unlisted; it goes.
func (p *Partition) resume() error {
	seg := p.active
	if err := seg.f.Truncate(seg.size.Load()); err != nil {
		return fmt.Errorf("cut segment %d back to %d bytes: %w", seg.base, seg.size.Load(), err)
	}
	if err := p.log.syncInTurn(seg.f); err != nil {
		return fmt.Errorf("fsync segment %d: %w", seg.base, err)
	}
	stray := filepath.Join(p.dir, segmentName(p.written.Load(), plainExt))
	if stray != seg.file {
		if st, err := os.Stat(stray); err == nil && st.Size() == 0 {
			if err := os.Remove(stray); err != nil {
				return fmt.Errorf("remove unfinished segment: %w", err)
			}
			if err := fsutil.SyncDir(p.dir); err != nil {
				return err
			}
		}
	}
	return nil
}
