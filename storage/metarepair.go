package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/tributary-iot/tributary/storage/internal/fsutil"
)

// GapMetaRebuilt marks offsets below a partition's first segment after meta.db was rebuilt: the
// records were either forwarded and removed by retention or dropped, and the gap record that
// would say which was in the damaged file.
const GapMetaRebuilt = "meta-rebuilt"

// MetaRepair reports a damaged meta.db that Open moved to quarantine and replaced, and what the
// new one holds. Records are in the segment files, not in meta.db: none is lost with it.
type MetaRepair struct {
	Cause       string   `json:"cause"`       // why the file was judged damaged
	Quarantined string   `json:"quarantined"` // where the damaged file is now
	Salvaged    int      `json:"salvaged"`    // keys copied from the damaged file into the new one
	Rebuilt     []string `json:"rebuilt"`     // streams whose config was rebuilt from their folders
	// Lost says what the damaged file held that the new one may lack.
	Lost string `json:"lost"`
}

// MetaRepair returns what Open did about a damaged meta.db, or nil when the file was sound.
func (l *Log) MetaRepair() *MetaRepair { return l.metaRepair }

// metaDamage marks an open or check failure that means the file is damaged, not merely in use
// or unreadable for permissions.
type metaDamage struct{ err error }

func (e *metaDamage) Error() string { return e.err.Error() }
func (e *metaDamage) Unwrap() error { return e.err }

// boltDamaged tells damage apart from other open errors (permissions, a full disk, EIO).
func boltDamaged(err error) bool {
	return errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrChecksum) ||
		errors.Is(err, bolterrors.ErrVersionMismatch) || errors.Is(err, bolterrors.ErrInvalidMapping) ||
		strings.Contains(err.Error(), "file size too small")
}

// checkMeta walks every page (bbolt's consistency check) and decodes every record the log reads
// at open, so damage is found before anything is written to the file.
func checkMeta(db *bolt.DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &metaDamage{fmt.Errorf("bbolt panicked reading the file: %v", r)}
		}
	}()
	return db.View(func(tx *bolt.Tx) error {
		for cerr := range tx.Check() {
			return &metaDamage{fmt.Errorf("consistency check: %w", cerr)}
		}
		if b := tx.Bucket(bucketStreams); b != nil {
			if err := b.ForEach(func(k, v []byte) error {
				var cfg StreamConfig
				if err := json.Unmarshal(v, &cfg); err != nil || cfg.Partitions < 1 {
					return &metaDamage{fmt.Errorf("stream %q config %q unreadable", k, v)}
				}
				return nil
			}); err != nil {
				return err
			}
		}
		if b := tx.Bucket(bucketGaps); b != nil {
			return b.ForEach(func(k, v []byte) error {
				var g Gap
				if err := json.Unmarshal(v, &g); err != nil {
					return &metaDamage{fmt.Errorf("gap record %q unreadable", v)}
				}
				return nil
			})
		}
		return nil
	})
}

// openMetaRepairing opens dir/meta.db; a damaged file is moved to quarantine/ and replaced by a
// new one holding what could be read from it. Open then rebuilds stream configs from the stream
// folders (finishMetaRepair).
func openMetaRepairing(dir string, logger *slog.Logger) (*bolt.DB, *MetaRepair, error) {
	path := filepath.Join(dir, "meta.db")
	db, err := openMetaGuarded(path)
	var damage *metaDamage
	if !errors.As(err, &damage) {
		return db, nil, err
	}
	qdir := filepath.Join(dir, "quarantine")
	if err := os.MkdirAll(qdir, dirMode); err != nil {
		return nil, nil, fmt.Errorf("quarantine damaged metadata (%v): %w", damage, err)
	}
	dst := filepath.Join(qdir, "meta.db."+time.Now().UTC().Format("20060102T150405.000Z"))
	if err := os.Rename(path, dst); err != nil {
		return nil, nil, fmt.Errorf("quarantine damaged metadata (%v): %w", damage, err)
	}
	if err := fsutil.SyncDir(dir); err != nil {
		return nil, nil, err
	}
	db, err = openMeta(path)
	if err != nil {
		return nil, nil, fmt.Errorf("create new metadata after quarantining the damaged one: %w", err)
	}
	rep := &MetaRepair{Cause: damage.Error(), Quarantined: dst}
	rep.Salvaged = salvageMeta(dst, db, logger)
	return db, rep, nil
}

// openMetaGuarded is openMeta with bbolt's panics on damaged pages turned into damage.
func openMetaGuarded(path string) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, &metaDamage{fmt.Errorf("bbolt panicked opening the file: %v", r)}
		}
	}()
	return openMeta(path)
}

// salvageMeta copies every key it can read from the damaged file at src into db, bucket by
// bucket; a bucket that cannot be read whole is skipped. It returns the keys copied.
func salvageMeta(src string, db *bolt.DB, logger *slog.Logger) (copied int) {
	defer func() {
		if r := recover(); r != nil {
			logger.Warn("salvage of the damaged metadata file stopped", "file", src, "err", r)
		}
	}()
	old, err := bolt.Open(src, 0o444, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		logger.Warn("nothing salvageable in the damaged metadata file", "file", src, "err", err)
		return 0
	}
	defer old.Close()
	for _, name := range [][]byte{bucketStreams, bucketCursors, bucketRequired, bucketGaps, bucketKV} {
		n, err := salvageBucket(old, db, name)
		if err != nil {
			logger.Warn("metadata bucket not salvaged", "bucket", string(name), "err", err)
			continue
		}
		copied += n
	}
	return copied
}

type kv struct {
	path [][]byte
	k, v []byte
}

func salvageBucket(old, db *bolt.DB, name []byte) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = 0, fmt.Errorf("bbolt panicked: %v", r)
		}
	}()
	var items []kv
	err = old.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(name)
		if b == nil {
			return nil
		}
		return collect(b, nil, &items)
	})
	if err != nil {
		return 0, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, it := range items {
			b := tx.Bucket(name)
			for _, sub := range it.path {
				if b, err = b.CreateBucketIfNotExists(sub); err != nil {
					return err
				}
			}
			if !salvageable(name, it.v) {
				continue
			}
			if err := b.Put(it.k, it.v); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

func collect(b *bolt.Bucket, path [][]byte, out *[]kv) error {
	return b.ForEach(func(k, v []byte) error {
		k = append([]byte(nil), k...)
		if v == nil {
			if sub := b.Bucket(k); sub != nil {
				return collect(sub, append(append([][]byte(nil), path...), k), out)
			}
			return nil
		}
		*out = append(*out, kv{path, k, append([]byte(nil), v...)})
		return nil
	})
}

// salvageable keeps what the log would refuse at open out of the new file.
func salvageable(bucket, v []byte) bool {
	switch string(bucket) {
	case string(bucketStreams):
		var cfg StreamConfig
		return json.Unmarshal(v, &cfg) == nil && cfg.Partitions >= 1
	case string(bucketGaps):
		var g Gap
		return json.Unmarshal(v, &g) == nil
	case string(bucketCursors):
		return len(v) == 8
	}
	return true
}

// rebuildStreamConfigs adds a config for every stream folder meta.db does not know, with as many
// partitions as the folder has partition folders.
func (l *Log) rebuildStreamConfigs(cfgs map[string]StreamConfig) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(l.dir, "streams"))
	if err != nil {
		return nil, err
	}
	var rebuilt []string
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !streamName.MatchString(name) {
			continue
		}
		if _, ok := cfgs[name]; ok {
			continue
		}
		n, err := partitionFolders(filepath.Join(l.dir, "streams", name))
		if err != nil {
			return nil, err
		}
		if n == 0 {
			continue
		}
		cfg := StreamConfig{Partitions: n}
		if err := l.saveStream(name, cfg); err != nil {
			return nil, fmt.Errorf("save rebuilt config of stream %q: %w", name, err)
		}
		cfgs[name] = cfg
		rebuilt = append(rebuilt, fmt.Sprintf("%s (%d partitions)", name, n))
	}
	sort.Strings(rebuilt)
	return rebuilt, nil
}

// finishMetaRepair runs once the streams are open: a partition whose records start past offset 0
// gets a gap for the range below, unless a salvaged required cursor shows it was consumed, and
// the repair is reported.
func (l *Log) finishMetaRepair() {
	rep := l.metaRepair
	for _, s := range l.Streams() {
		for _, p := range s.partitions {
			start := p.StartOffset()
			if start == 0 || l.consumedBelow(p.stream, p.id, start) {
				continue
			}
			p.mu.Lock()
			p.recordGapLocked(Gap{From: 0, To: start, Reason: GapMetaRebuilt})
			p.mu.Unlock()
		}
	}
	rep.Lost = "cursors, gap records and other packages' key/values that were not salvaged; " +
		"records are in the segment files and were not touched"
	l.logger.Error("metadata file meta.db was damaged: moved to quarantine and replaced; the log opens",
		"cause", rep.Cause, "quarantined", rep.Quarantined, "salvaged_keys", rep.Salvaged,
		"streams_rebuilt_from_folders", strings.Join(rep.Rebuilt, ", "), "lost", rep.Lost)
}

// consumedBelow reports whether a known required cursor of the partition is at or past offset.
func (l *Log) consumedBelow(stream string, partition int, offset int64) bool {
	l.cursorMu.Lock()
	defer l.cursorMu.Unlock()
	found := false
	for name := range l.required {
		off, ok := l.cursors[string(cursorKey(name, stream, partition))]
		if !ok || off < offset {
			return false
		}
		found = true
	}
	return found
}
