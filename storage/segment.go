package storage

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tributary-iot/tributary/storage/internal/fsutil"
)

// Segment files are named by the base offset of their first record, zero padded so that a
// directory listing sorts in offset order.
const (
	plainExt  = ".log"
	sealedExt = ".zst"
	indexExt  = ".idx"
	tmpExt    = ".tmp"
)

// Modes of what the log creates: readings are the owner's alone (the process's user). Existing
// files and folders keep theirs; packaging creates the data dir itself.
const (
	dirMode  = 0o700
	fileMode = 0o600
)

// createFile is os.Create with fileMode.
func createFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, fileMode)
}

func segmentName(base int64, ext string) string { return fmt.Sprintf("%020d%s", base, ext) }

func parseSegmentName(name string) (base int64, ext string, ok bool) {
	ext = filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	if len(stem) != 20 {
		return 0, "", false
	}
	base, err := strconv.ParseInt(stem, 10, 64)
	if err != nil || base < 0 {
		return 0, "", false
	}
	return base, ext, true
}

// segment is one file of a partition: plain (the active one, or rolled and waiting to be sealed) or
// sealed (zstd frames). Readers hold a reference while they read, so sealing and retention can
// replace or delete a segment under them without a failed read.
type segment interface {
	baseOffset() int64
	nextOffset() int64
	// readBatches returns whole raw batches: the first one holds offset, the rest follow it, up to
	// about maxBytes (at least one batch). It returns io.EOF when offset is at the durable end.
	readBatches(offset int64, maxBytes int) ([]byte, error)
	storedBytes() int64
	rawBytes() int64
	maxTimestamp() int64
	sealed() bool
	acquire() bool
	release()
	// retire marks the segment as no longer part of the partition; its file is closed (and removed
	// when remove is true) once the last reader releases it.
	retire(remove bool)
	path() string
}

// refs implements reference counting shared by both segment kinds.
type refs struct {
	mu      sync.Mutex
	n       int
	retired bool
	remove  bool
	closeFn func(remove bool)
}

func (r *refs) acquire() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.retired {
		return false
	}
	r.n++
	return true
}

func (r *refs) release() {
	r.mu.Lock()
	r.n--
	done := r.retired && r.n == 0
	r.mu.Unlock()
	if done {
		r.closeFn(r.remove)
	}
}

func (r *refs) retire(remove bool) {
	r.mu.Lock()
	if r.retired {
		r.mu.Unlock()
		return
	}
	r.retired, r.remove = true, remove
	done := r.n == 0
	r.mu.Unlock()
	if done {
		r.closeFn(remove)
	}
}

// indexEntry maps an offset to the file position of the batch that starts with it.
type indexEntry struct {
	offset int64
	pos    int64
}

// plainIndexStride keeps the in-memory index of a plain segment sparse: one entry per this many
// bytes, so RAM stays small on gateways while a seek reads at most this much extra.
const plainIndexStride = 4096

// plainSegment is an uncompressed segment. Only the partition's committer writes to it; readers read
// below the durable size, which the committer publishes after each write (and fsync, by policy).
type plainSegment struct {
	refs
	base    int64
	file    string
	f       *os.File
	created time.Time

	size    atomic.Int64 // bytes readers may read
	next    atomic.Int64 // offset after the last readable record
	maxTS   atomic.Int64
	mu      sync.RWMutex // guards index
	index   []indexEntry
	lastPos int64 // position of the last index entry (committer only)
}

func newPlainSegment(f *os.File, base int64, created time.Time) *plainSegment {
	s := &plainSegment{base: base, file: f.Name(), f: f, created: created}
	s.next.Store(base)
	s.closeFn = func(remove bool) {
		s.f.Close()
		if remove {
			os.Remove(s.file)
			syncRemoval(s.file)
		}
	}
	return s
}

func (s *plainSegment) baseOffset() int64   { return s.base }
func (s *plainSegment) nextOffset() int64   { return s.next.Load() }
func (s *plainSegment) storedBytes() int64  { return s.size.Load() }
func (s *plainSegment) rawBytes() int64     { return s.size.Load() }
func (s *plainSegment) maxTimestamp() int64 { return s.maxTS.Load() }
func (s *plainSegment) sealed() bool        { return false }
func (s *plainSegment) path() string        { return s.file }

// noteBatch records a batch written at pos so readers can seek to it. Called by the committer
// before it publishes the new size.
func (s *plainSegment) noteBatch(offset, pos int64, maxTS int64) {
	if len(s.index) == 0 || pos-s.lastPos >= plainIndexStride {
		s.mu.Lock()
		s.index = append(s.index, indexEntry{offset, pos})
		s.mu.Unlock()
		s.lastPos = pos
	}
	if maxTS > s.maxTS.Load() {
		s.maxTS.Store(maxTS)
	}
}

// publish makes bytes up to size and offsets below next visible to readers.
func (s *plainSegment) publish(size, next int64) {
	s.size.Store(size)
	s.next.Store(next)
}

func (s *plainSegment) seek(offset int64) int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	lo, hi := 0, len(s.index)
	for lo < hi {
		m := (lo + hi) / 2
		if s.index[m].offset <= offset {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return 0
	}
	return s.index[lo-1].pos
}

func (s *plainSegment) readBatches(offset int64, maxBytes int) ([]byte, error) {
	return s.readBatchesInto(offset, maxBytes, nil)
}

// scanResult describes what recovery found in a plain segment file.
type scanResult struct {
	validSize int64 // bytes of whole, checked, consecutive batches from the start
	next      int64 // offset after the last valid record
	fileSize  int64
	maxTS     int64
	damage    error // why scanning stopped before fileSize, if it did
	// lostNext, when above next, is the offset after the last intact batch found past the damage:
	// offsets below it were handed out and must not be reused.
	lostNext int64
}

// scanPlain checks every batch of a plain segment from the start and rebuilds its index. It stops
// at the first batch that is torn, zero-filled, fails its checksum or does not continue the offsets.
func scanPlain(s *plainSegment) (scanResult, error) {
	st, err := s.f.Stat()
	if err != nil {
		return scanResult{}, err
	}
	res := scanResult{next: s.base, fileSize: st.Size()}
	data, err := io.ReadAll(io.NewSectionReader(s.f, 0, st.Size()))
	if err != nil {
		return res, fmt.Errorf("read segment: %w", err)
	}
	pos := int64(0)
	for pos < int64(len(data)) {
		h, err := checkBatch(data[pos:])
		if err == nil && h.BaseOffset != res.next {
			err = fmt.Errorf("batch at %d starts at offset %d, want %d", pos, h.BaseOffset, res.next)
		}
		if err != nil {
			res.damage = fmt.Errorf("at byte %d: %w", pos, err)
			res.lostNext = intactAfter(data, int(pos), res.next)
			break
		}
		s.noteBatch(h.BaseOffset, pos, h.MaxTimestamp)
		if h.MaxTimestamp > res.maxTS {
			res.maxTS = h.MaxTimestamp
		}
		pos += int64(h.Length)
		res.next = h.NextOffset()
	}
	res.validSize = pos
	s.publish(pos, res.next)
	return res, nil
}

// intactAfter looks past damage at byte from for intact batches that continue the offsets, and
// returns the offset after the last one found (or next if none). A candidate must pass its CRC and
// carry a plausible offset: each record takes at least 4 bytes, so the damaged bytes before it
// cannot hold more records than that.
func intactAfter(data []byte, from int, next int64) int64 {
	last := next
	for i := from + 1; i+batchHeaderSize <= len(data); i++ {
		h, err := parseBatchHeader(data[i:])
		if err != nil || h.BaseOffset < last || h.BaseOffset-last > int64(i-from)/4+1 || int(h.Length) > len(data)-i {
			continue
		}
		if _, err := checkBatch(data[i:]); err != nil {
			continue
		}
		last = h.NextOffset()
		from = i + int(h.Length) - 1
		i = from
	}
	return last
}

// syncRemoval fsyncs the folder of a segment file just removed: a removal is a folder change, and
// without the sync a power cut brings the file back beside the start offset or gap that says it is
// gone. A failure is not fatal, as the removal's is not: recovery copes with a segment below the
// start offset.
func syncRemoval(file string) { _ = fsutil.SyncDir(filepath.Dir(file)) }
