package storage

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	// bbolt keeps the log's metadata (stream configs, cursors, gaps, small key/values): a few writes
	// per second at most, never one transaction per record, since each commit costs two fdatasyncs.
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var (
	bucketStreams  = []byte("streams")
	bucketCursors  = []byte("cursors")
	bucketRequired = []byte("required")
	bucketGaps     = []byte("gaps")
	bucketKV       = []byte("kv")
)

func openMeta(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, fileMode, &bolt.Options{Timeout: 2 * time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open metadata %s: the data directory is in use by another process; stop it or use another directory", path)
	}
	if err != nil && boltDamaged(err) {
		return nil, &metaDamage{fmt.Errorf("open metadata %s: %w", path, err)}
	}
	if err != nil {
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	if err := checkMeta(db); err != nil {
		db.Close()
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketStreams, bucketCursors, bucketRequired, bucketGaps, bucketKV} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init metadata: %w", err)
	}
	return db, nil
}

func cursorKey(name, stream string, partition int) []byte {
	k := make([]byte, 0, len(name)+len(stream)+6)
	k = append(k, name...)
	k = append(k, 0)
	k = append(k, stream...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint32(k, uint32(partition))
}

func gapKey(stream string, partition int, from int64) []byte {
	k := make([]byte, 0, len(stream)+13)
	k = append(k, stream...)
	k = append(k, 0)
	k = binary.BigEndian.AppendUint32(k, uint32(partition))
	return binary.BigEndian.AppendUint64(k, uint64(from))
}

// SetCursor stores a named cursor: the offset after the last record its owner has finished with.
// It is one bbolt transaction; callers commit cursors periodically, not per record.
func (l *Log) SetCursor(name, stream string, partition int, offset int64) error {
	return l.SetCursors(name, stream, map[int]int64{partition: offset})
}

// SetCursors stores several partitions' cursors of one name and stream in one transaction.
func (l *Log) SetCursors(name, stream string, offsets map[int]int64) error {
	err := l.meta.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCursors)
		for p, off := range offsets {
			if err := b.Put(cursorKey(name, stream, p), binary.BigEndian.AppendUint64(nil, uint64(off))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set cursor %q: %w", name, err)
	}
	l.cursorMu.Lock()
	for p, off := range offsets {
		l.cursors[string(cursorKey(name, stream, p))] = off
	}
	required := l.required[name]
	l.cursorMu.Unlock()
	if required && (l.opts.QuotaBytes > 0 || l.opts.RetentionAge > 0 || l.opts.RetentionBytes > 0) {
		// A required cursor moving may free space: let retention run now rather than at the
		// next tick, so a log refusing appends under backpressure recovers quickly.
		l.kickMaintenance()
	}
	return nil
}

// Cursor returns a named cursor, and false when it was never set.
func (l *Log) Cursor(name, stream string, partition int) (int64, bool) {
	l.cursorMu.Lock()
	defer l.cursorMu.Unlock()
	off, ok := l.cursors[string(cursorKey(name, stream, partition))]
	return off, ok
}

// CursorInfo is one stored cursor.
type CursorInfo struct {
	Name      string `json:"name"`
	Stream    string `json:"stream"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	Required  bool   `json:"required"`
}

// Cursors lists every stored cursor.
func (l *Log) Cursors() []CursorInfo {
	l.cursorMu.Lock()
	defer l.cursorMu.Unlock()
	var out []CursorInfo
	for k, off := range l.cursors {
		name, stream, p := splitCursorKey([]byte(k))
		out = append(out, CursorInfo{name, stream, p, off, l.required[name]})
	}
	return out
}

func splitCursorKey(k []byte) (name, stream string, partition int) {
	i := indexByte(k, 0)
	name, k = string(k[:i]), k[i+1:]
	j := indexByte(k, 0)
	return name, string(k[:j]), int(binary.BigEndian.Uint32(k[j+1:]))
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return len(b)
}

// RequireCursor marks a cursor name as required: retention and the forwarded-first part of the
// quota never delete records at or past it. The edge's forwarder cursor is required.
func (l *Log) RequireCursor(name string) error {
	err := l.meta.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketRequired).Put([]byte(name), []byte{1}) })
	if err != nil {
		return fmt.Errorf("require cursor %q: %w", name, err)
	}
	l.cursorMu.Lock()
	l.required[name] = true
	l.cursorMu.Unlock()
	return nil
}

// requiredFloor returns the lowest required cursor of a partition; records below it were consumed
// by every required owner. With no required cursor every record counts as consumed.
func (l *Log) requiredFloor(stream string, partition int) int64 {
	l.cursorMu.Lock()
	defer l.cursorMu.Unlock()
	floor := int64(-1)
	for name := range l.required {
		off := l.cursors[string(cursorKey(name, stream, partition))] // unset means 0
		if floor < 0 || off < floor {
			floor = off
		}
	}
	if floor < 0 {
		return 1<<63 - 1
	}
	return floor
}

// forwardedFloor is requiredFloor for the quota: records below it count as forwarded. Without a
// required cursor nothing has been forwarded (an edge with no central, a central with no sink),
// so the quota may drop nothing under backpressure and records every drop as a gap under
// drop-oldest. Retention, which the operator configures by age or size, uses requiredFloor.
func (l *Log) forwardedFloor(stream string, partition int) int64 {
	l.cursorMu.Lock()
	none := len(l.required) == 0
	l.cursorMu.Unlock()
	if none {
		return 0
	}
	return l.requiredFloor(stream, partition)
}

// highestCursor returns the required cursor of a partition that is furthest on, and its name:
// every offset below it existed once. Only required cursors count (the forwarder's, the Kafka
// sink's): their owners set them to offsets they read; a consumer group's may be set by anyone.
// ok is false when no required cursor is set for the partition.
func (l *Log) highestCursor(stream string, partition int) (name string, offset int64, ok bool) {
	suffix := string(cursorKey("", stream, partition))
	l.cursorMu.Lock()
	defer l.cursorMu.Unlock()
	for k, off := range l.cursors {
		n, found := strings.CutSuffix(k, suffix)
		if !found || strings.IndexByte(n, 0) >= 0 || !l.required[n] {
			continue
		}
		if !ok || off > offset {
			name, offset, ok = n, off, true
		}
	}
	return name, offset, ok
}

func (l *Log) loadCursors() error {
	return l.meta.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketCursors).ForEach(func(k, v []byte) error {
			if len(v) == 8 {
				l.cursors[string(k)] = int64(binary.BigEndian.Uint64(v))
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketRequired).ForEach(func(k, _ []byte) error {
			l.required[string(k)] = true
			return nil
		})
	})
}

func (l *Log) saveGap(stream string, partition int, g Gap) error {
	v, _ := json.Marshal(g)
	return l.meta.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketGaps).Put(gapKey(stream, partition, g.From), v) })
}

func (l *Log) loadGaps(stream string, partition int) ([]Gap, error) {
	var gaps []Gap
	prefix := gapKey(stream, partition, 0)
	prefix = prefix[:len(prefix)-8]
	err := l.meta.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketGaps).Cursor()
		for k, v := c.Seek(prefix); k != nil && len(k) == len(prefix)+8 && string(k[:len(prefix)]) == string(prefix); k, v = c.Next() {
			var g Gap
			if err := json.Unmarshal(v, &g); err != nil {
				return fmt.Errorf("gap record: %w", err)
			}
			gaps = append(gaps, g)
		}
		return nil
	})
	return gaps, err
}

func (l *Log) saveStream(name string, cfg StreamConfig) error {
	v, _ := json.Marshal(cfg)
	return l.meta.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketStreams).Put([]byte(name), v) })
}

func (l *Log) loadStreams() (map[string]StreamConfig, error) {
	out := map[string]StreamConfig{}
	err := l.meta.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketStreams).ForEach(func(k, v []byte) error {
			var cfg StreamConfig
			if err := json.Unmarshal(v, &cfg); err != nil {
				return fmt.Errorf("stream %q config: %w", k, err)
			}
			out[string(k)] = cfg
			return nil
		})
	})
	return out, err
}

// SetMeta stores a small value under namespace/key for other packages (edge registry, dedupe
// checkpoints). Like cursors, it is one transaction: use it for state that changes rarely.
func (l *Log) SetMeta(namespace, key string, value []byte) error {
	return l.meta.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketKV).CreateBucketIfNotExists([]byte(namespace))
		if err != nil {
			return err
		}
		if value == nil {
			return b.Delete([]byte(key))
		}
		return b.Put([]byte(key), value)
	})
}

// Meta returns a value stored with SetMeta, or nil.
func (l *Log) Meta(namespace, key string) ([]byte, error) {
	var out []byte
	err := l.meta.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketKV).Bucket([]byte(namespace)); b != nil {
			if v := b.Get([]byte(key)); v != nil {
				out = append([]byte(nil), v...)
			}
		}
		return nil
	})
	return out, err
}

// ScanMeta calls fn for every key of a namespace in key order.
func (l *Log) ScanMeta(namespace string, fn func(key string, value []byte) error) error {
	return l.meta.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKV).Bucket([]byte(namespace))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error { return fn(string(k), v) })
	})
}
