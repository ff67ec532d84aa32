package storage

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by operations on a closed log, or appends pending when it closed.
	ErrClosed = errors.New("storage: log closed")
	// ErrFull is returned by appends when the disk quota is reached under the backpressure policy.
	// Nothing was written; the caller should not acknowledge the record and may retry later.
	ErrFull = errors.New("storage: disk quota reached (policy backpressure): records are kept until forwarded")
	// ErrNoStream is returned when a stream does not exist.
	ErrNoStream = errors.New("storage: no such stream")
	// ErrRecordTooLarge is returned when one record cannot fit in a batch.
	ErrRecordTooLarge = errors.New("storage: record too large")
	// ErrPartitionFailed is returned while a write or fsync error keeps a partition stopped. The
	// partition retries by itself about once a second: once the disk takes writes again (space
	// freed) it cuts back to the last acknowledged record and resumes. [Log.Failures] lists the
	// stopped partitions.
	ErrPartitionFailed = errors.New("storage: partition stopped after a write error; it resumes by itself once the disk takes writes again (free disk space)")
)

// CorruptionError reports damaged data: where it is and what is wrong.
// Recovery code reads it with errors.As.
type CorruptionError struct {
	Stream    string
	Partition int
	Segment   int64 // base offset of the damaged segment
	Offset    int64 // first offset affected, or -1 when unknown
	Reason    string
	Err       error
}

func (e *CorruptionError) Error() string {
	s := fmt.Sprintf("storage: corruption in stream %q partition %d segment %d", e.Stream, e.Partition, e.Segment)
	if e.Offset >= 0 {
		s += fmt.Sprintf(" at offset %d", e.Offset)
	}
	s += ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *CorruptionError) Unwrap() error { return e.Err }
