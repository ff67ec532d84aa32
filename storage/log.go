package storage

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tributary-iot/tributary/storage/internal/fsutil"
)

// Log is a set of named streams, each split into partitions, stored under one directory.
// It is safe for concurrent use.
type Log struct {
	dir    string
	opts   Options
	logger *slog.Logger
	meta   *bolt.DB
	// metaRepair is set when Open found meta.db damaged and replaced it.
	metaRepair *MetaRepair
	readOnly   bool   // OpenReadOnly: no meta writes, no committers, no background work
	metaTemp   string // OpenReadOnly over a damaged meta.db: the empty stand-in's folder

	mu      sync.RWMutex
	streams map[string]*Stream
	closed  bool

	cursorMu sync.Mutex
	cursors  map[string]int64
	required map[string]bool

	fsyncs, bytesWritten, recordsAppended, diskBytes atomic.Int64
	sealedSegments, sealedRaw, sealedBytes           atomic.Int64
	droppedRecords, quarantined                      atomic.Int64
	damage                                           []*CorruptionError

	retentionMu sync.Mutex // one retention pass at a time
	syncMu      sync.Mutex // one fsync at a time; see Partition.run
	// fsyncNanos is a moving average of fdatasync's duration, for the adaptive group commit.
	fsyncNanos atomic.Int64

	sealQueue chan sealJob
	kickMaint chan struct{}
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// Stream is a named, partitioned log.
type Stream struct {
	name       string
	cfg        StreamConfig
	partitions []*Partition
}

// Name of the stream.
func (s *Stream) Name() string { return s.name }

// Partitions is the fixed partition count.
func (s *Stream) Partitions() int { return len(s.partitions) }

// Partition returns partition i; it panics if i is out of range, like a slice index.
func (s *Stream) Partition(i int) *Partition { return s.partitions[i] }

// PartitionFor is the partition a key belongs to (Kafka's default partitioner).
func (s *Stream) PartitionFor(key []byte) int { return PartitionFor(key, len(s.partitions)) }

// Append stores rec in the partition of its key and waits as Partition.Append does.
func (s *Stream) Append(ctx context.Context, rec Record) (partition int, offset int64, err error) {
	partition = s.PartitionFor(rec.Key)
	offset, err = s.partitions[partition].Append(ctx, rec)
	return partition, offset, err
}

// AppendAsync stores rec in the partition of its key and calls done as Partition.AppendAsync does.
func (s *Stream) AppendAsync(rec Record, done func(partition int, offset int64, err error)) {
	partition := s.PartitionFor(rec.Key)
	s.partitions[partition].AppendAsync(rec, func(off int64, err error) { done(partition, off, err) })
}

var streamName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

type sealJob struct {
	p   *Partition
	seg *plainSegment
}

// Open opens or creates the log in dir. Recovery never refuses to start: a torn tail of an active
// segment is cut back to the last whole batch, and a damaged sealed segment is moved aside into
// quarantine/, reported in the log and as a Gap, while the log opens.
func Open(dir string, opts *Options) (*Log, error) {
	o := opts.withDefaults()
	// Readings and tokens' hashes live here: only the owner may read them (dirMode).
	if err := fsutil.MkdirAll(filepath.Join(dir, "streams"), dirMode); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	meta, repair, err := openMetaRepairing(dir, o.Logger)
	if err != nil {
		return nil, err
	}
	// bbolt syncs its file but not the folder entry of a file it creates: without this a power
	// cut can lose meta.db (cursors, gaps, stream configs) as a whole.
	if err := fsutil.SyncDir(dir); err != nil {
		meta.Close()
		return nil, err
	}
	l := &Log{
		dir: dir, opts: o, logger: o.Logger, meta: meta, metaRepair: repair,
		streams:   map[string]*Stream{},
		cursors:   map[string]int64{},
		required:  map[string]bool{},
		sealQueue: make(chan sealJob, 1024),
		kickMaint: make(chan struct{}, 1),
	}
	if err := l.loadCursors(); err != nil {
		meta.Close()
		return nil, fmt.Errorf("load cursors: %w", err)
	}
	cfgs, err := l.loadStreams()
	if err != nil {
		meta.Close()
		return nil, err
	}
	if repair != nil {
		if repair.Rebuilt, err = l.rebuildStreamConfigs(cfgs); err != nil {
			meta.Close()
			return nil, fmt.Errorf("rebuild stream configs after replacing damaged metadata: %w", err)
		}
	}
	names := make([]string, 0, len(cfgs))
	for n := range cfgs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		s, err := l.openStream(name, cfgs[name])
		if err != nil {
			l.closeStreams()
			meta.Close()
			return nil, err
		}
		l.streams[name] = s
	}
	if repair != nil {
		l.finishMetaRepair()
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.wg.Add(2)
	go l.sealer(ctx)
	go l.maintain(ctx)
	// Segments that were rolled but not sealed before the last stop.
	for _, name := range names {
		for _, p := range l.streams[name].partitions {
			for _, seg := range p.snapshot() {
				if ps, ok := seg.(*plainSegment); ok && ps != p.active {
					l.queueSeal(p, ps)
				}
			}
		}
	}
	return l, nil
}

// CreateStream creates a stream, or returns the existing one when its partition count matches.
func (l *Log) CreateStream(name string, cfg StreamConfig) (*Stream, error) {
	if !streamName.MatchString(name) {
		return nil, fmt.Errorf("create stream %q: name must be 1-64 of a-z 0-9 . _ - starting with a letter or digit", name)
	}
	if cfg.Partitions < 1 || cfg.Partitions > 4096 {
		return nil, fmt.Errorf("create stream %q: partitions must be 1..4096, got %d", name, cfg.Partitions)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if l.readOnly {
		return nil, ErrReadOnly
	}
	if s, ok := l.streams[name]; ok {
		if s.cfg.Partitions != cfg.Partitions {
			return nil, fmt.Errorf("create stream %q: exists with %d partitions, not %d (partition counts cannot change: keys would move)", name, s.cfg.Partitions, cfg.Partitions)
		}
		return s, nil
	}
	if err := l.saveStream(name, cfg); err != nil {
		return nil, fmt.Errorf("create stream %q: %w", name, err)
	}
	s, err := l.openStream(name, cfg)
	if err != nil {
		return nil, err
	}
	l.streams[name] = s
	return s, nil
}

// Stream returns a stream by name, or ErrNoStream.
func (l *Log) Stream(name string) (*Stream, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if s, ok := l.streams[name]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrNoStream, name)
}

// Streams returns every stream, by name.
func (l *Log) Streams() []*Stream {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]*Stream, 0, len(l.streams))
	for _, s := range l.streams {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// Dir is the directory the log lives in.
func (l *Log) Dir() string { return l.dir }

// Stats returns counters since Open.
func (l *Log) Stats() Stats {
	return Stats{
		Fsyncs: l.fsyncs.Load(), BytesWritten: l.bytesWritten.Load(), RecordsAppended: l.recordsAppended.Load(),
		DiskBytes: l.diskBytes.Load(), SealedSegments: l.sealedSegments.Load(), SealedRawBytes: l.sealedRaw.Load(),
		SealedBytes: l.sealedBytes.Load(), DroppedRecords: l.droppedRecords.Load(), Quarantined: l.quarantined.Load(),
	}
}

// Close completes pending appends, stops background work and closes every file. Appends after
// Close fail with ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
	err := l.closeStreams()
	if merr := l.meta.Close(); err == nil {
		err = merr
	}
	if l.metaTemp != "" {
		os.RemoveAll(l.metaTemp)
	}
	return err
}

func (l *Log) closeStreams() error {
	var err error
	for _, s := range l.streams {
		for _, p := range s.partitions {
			p.mu.Lock()
			p.closing = true
			p.space.Broadcast()
			p.mu.Unlock()
			p.wake() // following readers return ErrClosed instead of waiting for their ctx
			p.kickCommitter()
			<-p.done
			if l.opts.Fsync != FsyncGroup {
				if serr := l.syncInTurn(p.active.f); serr != nil && err == nil {
					err = serr
				}
			}
			for _, seg := range p.snapshot() {
				seg.retire(false)
			}
		}
	}
	return err
}

// fdatasync syncs a segment file and counts it. Group-commit committers call it during their
// turn (see Partition.run); other callers use syncInTurn.
func (l *Log) fdatasync(f *os.File) error {
	start := time.Now()
	err := fsutil.Fdatasync(f)
	l.fsyncs.Add(1)
	l.noteFsync(time.Since(start))
	if l.opts.OnFsync != nil {
		l.opts.OnFsync(time.Since(start))
	}
	return err
}

// syncInTurn is fdatasync for callers outside a committer's turn.
func (l *Log) syncInTurn(f *os.File) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	return l.fdatasync(f)
}

func (l *Log) checkQuota() error {
	if l.opts.QuotaBytes > 0 && l.opts.QuotaPolicy == Backpressure && l.diskBytes.Load() >= l.opts.QuotaBytes {
		l.kickMaintenance()
		return ErrFull
	}
	return nil
}

func (l *Log) queueSeal(p *Partition, seg *plainSegment) {
	select {
	case l.sealQueue <- sealJob{p, seg}:
	default:
		// The queue is full only if sealing fell far behind; the segment stays plain and is
		// sealed at the next open. Readers are unaffected.
		l.logger.Warn("seal queue full; segment stays uncompressed until restart", "stream", p.stream, "partition", p.id, "segment", seg.base)
	}
}

func (l *Log) partitionDir(stream string, partition int) string {
	return filepath.Join(l.dir, "streams", stream, strconv.Itoa(partition))
}

func (l *Log) openStream(name string, cfg StreamConfig) (*Stream, error) {
	s := &Stream{name: name, cfg: cfg}
	for i := 0; i < cfg.Partitions; i++ {
		p, err := l.openPartition(name, i)
		if err != nil {
			for _, q := range s.partitions {
				q.mu.Lock()
				q.closing = true
				q.mu.Unlock()
				q.kickCommitter()
				<-q.done
				for _, seg := range q.snapshot() {
					seg.retire(false)
				}
			}
			return nil, fmt.Errorf("open stream %q partition %d: %w", name, i, err)
		}
		s.partitions = append(s.partitions, p)
	}
	return s, nil
}
