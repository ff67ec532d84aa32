package storage

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// FsyncPolicy says when appended records are flushed to stable storage and acknowledged.
type FsyncPolicy int

const (
	// FsyncGroup acknowledges an append only after an fdatasync that covers it. Appends that arrive
	// while one fsync runs share the next one. The default, and the only policy under which an ack
	// means durable.
	FsyncGroup FsyncPolicy = iota
	// FsyncInterval acknowledges after the write reaches the page cache and fsyncs every
	// Options.FsyncInterval. A power loss or kernel crash loses up to one interval of acknowledged
	// records; a crash of the process alone loses nothing. Readers see a record only once an
	// fsync covered it, so nothing is forwarded that a power cut could take back.
	FsyncInterval
	// FsyncNone never fsyncs the active segment (sealed segments are still fsynced, and the active
	// one at open and roll). Readers see records once written. For tests and for data that can be
	// lost.
	FsyncNone
)

func (p FsyncPolicy) String() string {
	switch p {
	case FsyncGroup:
		return "group"
	case FsyncInterval:
		return "interval"
	case FsyncNone:
		return "none"
	}
	return fmt.Sprintf("FsyncPolicy(%d)", int(p))
}

// ParseFsyncPolicy reads "group", "interval" or "none".
func ParseFsyncPolicy(s string) (FsyncPolicy, error) {
	switch strings.ToLower(s) {
	case "", "group":
		return FsyncGroup, nil
	case "interval":
		return FsyncInterval, nil
	case "none":
		return FsyncNone, nil
	}
	return 0, fmt.Errorf("unknown fsync policy %q: use group, interval or none", s)
}

// QuotaPolicy says what happens when the log reaches Options.QuotaBytes.
type QuotaPolicy int

const (
	// Backpressure keeps every unforwarded record: appends fail with ErrFull until space is freed.
	// A record counts as forwarded only once every required cursor (Log.RequireCursor) has passed
	// it; a log without one (an edge that forwards nowhere) keeps everything.
	Backpressure QuotaPolicy = iota
	// DropOldest deletes the oldest sealed segments, forwarded or not, and records each dropped range
	// as a Gap that readers receive in order, counts it in Stats.DroppedRecords and logs it.
	DropOldest
)

func (p QuotaPolicy) String() string {
	if p == DropOldest {
		return "drop-oldest"
	}
	return "backpressure"
}

// ParseQuotaPolicy reads "backpressure" or "drop-oldest".
func ParseQuotaPolicy(s string) (QuotaPolicy, error) {
	switch strings.ToLower(s) {
	case "", "backpressure":
		return Backpressure, nil
	case "drop-oldest", "drop_oldest":
		return DropOldest, nil
	}
	return 0, fmt.Errorf("unknown quota policy %q: use backpressure or drop-oldest", s)
}

// Options configures a Log. A nil *Options, and every zero field, means the default.
type Options struct {
	Logger        *slog.Logger // nil discards logs
	Fsync         FsyncPolicy
	FsyncInterval time.Duration // FsyncInterval policy; default 1s

	SegmentBytes int64         // roll the active segment at this size; default 16 MiB
	SegmentAge   time.Duration // roll a non-empty active segment at this age; default 1h
	FrameBytes   int           // raw bytes per compressed frame in sealed segments; default 256 KiB

	RetentionAge   time.Duration // delete sealed segments whose newest record is older; 0 keeps forever
	RetentionBytes int64         // per partition: delete oldest sealed segments above this; 0 no limit
	QuotaBytes     int64         // whole log on disk; 0 no quota
	QuotaPolicy    QuotaPolicy

	// GroupLinger makes a committer wait this long before writing a small group, so appends that
	// arrive meanwhile share its fsync: fewer fsyncs (less CPU, less flash wear) for up to this
	// much more latency per append. 0, the default, writes at once. A gateway with many slow
	// devices is the case for it: each device waits for its ack, so without a linger a group holds
	// only the few readings that arrived during the previous fsync.
	GroupLinger time.Duration

	// CommitBudget turns on adaptive group commit (when GroupLinger is 0): the time an append may
	// wait for its group's write and fsync, of which the committer spends up to half gathering.
	// Each partition's committer then commits no more often than once per CommitBudget/2, and
	// holds the oldest waiting append at most CommitBudget/2 minus the disk's measured fsync
	// latency before it writes. At low rates this gathers the few readings of several devices into
	// one fsync instead of one fsync each; at high rates a group fills while the previous fsync
	// runs, and once fsyncs take CommitBudget/2 or longer the committer never waits at all. A
	// partition fsyncs at most 2/CommitBudget times a second (100 with 20ms). 0, the default,
	// commits at once.
	CommitBudget time.Duration

	// MaintenanceInterval is how often age rolls, retention and quota run; default 1s.
	MaintenanceInterval time.Duration
	// SkipVerifyOnOpen skips checking the CRC of every sealed frame when opening; damaged frames
	// are still caught when read.
	SkipVerifyOnOpen bool
	// OnFsync, when set, is called after every fsync of a segment with its duration (for metrics).
	OnFsync func(time.Duration)
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	if r.FsyncInterval <= 0 {
		r.FsyncInterval = time.Second
	}
	if r.SegmentBytes <= 0 {
		r.SegmentBytes = 16 << 20
	}
	if r.SegmentAge == 0 {
		r.SegmentAge = time.Hour
	}
	if r.FrameBytes <= 0 {
		r.FrameBytes = 256 << 10
	}
	if r.MaintenanceInterval <= 0 {
		r.MaintenanceInterval = time.Second
	}
	return r
}

// StreamConfig is fixed when a stream is created.
type StreamConfig struct {
	Partitions int `json:"partitions"`
}

// Gap reports offsets that will never be read: dropped by the quota policy or quarantined because
// their segment was damaged. Readers receive it in order, in place of the missing records.
type Gap struct {
	From    int64     `json:"from"` // first missing offset
	To      int64     `json:"to"`   // offset after the last missing one
	Records int64     `json:"records"`
	Reason  string    `json:"reason"`
	Time    time.Time `json:"time"`
}

// Gap reasons.
const (
	GapQuotaDropped = "quota-drop-oldest"
	GapCorrupt      = "corrupt-segment"
	// GapTruncated: recovery found the partition ending below an offset a cursor had already
	// passed, so records were cut off while the log was closed (a truncated segment file).
	GapTruncated = "truncated-while-stopped"
)

// Stats are counters since the log was opened.
type Stats struct {
	Fsyncs          int64
	BytesWritten    int64 // to active segments
	RecordsAppended int64
	DiskBytes       int64 // all segments, as stored
	SealedSegments  int64 // sealed since open
	SealedRawBytes  int64 // raw bytes of those segments
	SealedBytes     int64 // compressed bytes of those segments
	DroppedRecords  int64 // by the quota policy
	Quarantined     int64 // segments moved aside as damaged
}
