package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrReadOnly is returned by appends and other writes to a log opened with [OpenReadOnly].
var ErrReadOnly = errors.New("storage: log opened read-only")

// OpenReadOnly opens the log in dir for inspection without writing a byte: it works on a copy
// on read-only media and leaves evidence as it is. Where [Open] would repair (cut a torn tail,
// quarantine a damaged segment, rebuild an index or a damaged meta.db), it reports instead:
// [Log.Damage] says what Open would do, and a damaged meta.db leaves stream configs to be read
// from the stream folders, with cursors and gap records unknown ([Log.MetaRepair] says so).
// Appends fail with ErrReadOnly; Close releases the files.
func OpenReadOnly(dir string, opts *Options) (*Log, error) {
	o := opts.withDefaults()
	o.Fsync = FsyncGroup // nothing to sync at close
	if _, err := os.Stat(filepath.Join(dir, "streams")); err != nil {
		return nil, fmt.Errorf("open %s read-only: %w", dir, err)
	}
	l := &Log{dir: dir, opts: o, logger: o.Logger, streams: map[string]*Stream{}, cursors: map[string]int64{},
		required: map[string]bool{}, cancel: func() {}, readOnly: true}
	cfgs := map[string]StreamConfig{}
	meta, err := openMetaReadOnly(filepath.Join(dir, "meta.db"))
	if err == nil {
		l.meta = meta
		if err = l.loadCursors(); err == nil {
			cfgs, err = l.loadStreams()
		}
	}
	if err != nil {
		var damage *metaDamage
		if !errors.As(err, &damage) {
			if meta != nil {
				meta.Close()
			}
			return nil, err
		}
		if meta != nil {
			meta.Close()
		}
		// An empty stand-in, opened read-only like the real one would be: reads find nothing,
		// writes fail, and the data directory is not touched.
		if l.meta, l.metaTemp, err = emptyMetaReadOnly(); err != nil {
			return nil, err
		}
		l.metaRepair = &MetaRepair{Cause: damage.Error(), Lost: "read-only: meta.db is damaged and was left as it is; " +
			"stream configs come from the stream folders, cursors and gap records are unknown. " +
			"The node quarantines and rebuilds it at its next start"}
		l.cursors, l.required, cfgs = map[string]int64{}, map[string]bool{}, map[string]StreamConfig{}
	}
	if rebuilt, err := l.streamConfigsFromFolders(cfgs); err != nil {
		l.Close()
		return nil, err
	} else if l.metaRepair != nil {
		l.metaRepair.Rebuilt = rebuilt
	}
	for name, cfg := range cfgs {
		s := &Stream{name: name, cfg: cfg}
		for i := range cfg.Partitions {
			p, err := l.openPartitionReadOnly(name, i)
			if err != nil {
				l.streams[name] = s
				l.Close()
				return nil, fmt.Errorf("open stream %q partition %d read-only: %w", name, i, err)
			}
			s.partitions = append(s.partitions, p)
		}
		l.streams[name] = s
	}
	return l, nil
}

// openMetaReadOnly opens meta.db with a shared lock and checks it as openMeta does.
func openMetaReadOnly(path string) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, &metaDamage{fmt.Errorf("bbolt panicked opening the file: %v", r)}
		}
	}()
	db, err = bolt.Open(path, 0o444, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	switch {
	case err != nil && boltDamaged(err):
		return nil, &metaDamage{fmt.Errorf("open metadata %s: %w", path, err)}
	case err != nil && strings.Contains(err.Error(), "timeout"):
		return nil, fmt.Errorf("open metadata %s: the data directory is in use by a process that does not serve inspection; stop it or inspect a copy", path)
	case err != nil:
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	if err := checkMeta(db); err != nil {
		db.Close()
		return nil, err
	}
	if err := db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketStreams, bucketCursors, bucketRequired, bucketGaps} {
			if tx.Bucket(b) == nil {
				return &metaDamage{fmt.Errorf("bucket %s missing", b)}
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// streamConfigsFromFolders adds, in memory only, a config for each stream folder cfgs lacks.
func (l *Log) streamConfigsFromFolders(cfgs map[string]StreamConfig) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(l.dir, "streams"))
	if err != nil {
		return nil, err
	}
	var found []string
	for _, e := range entries {
		name := e.Name()
		if _, ok := cfgs[name]; ok || !e.IsDir() || !streamName.MatchString(name) {
			continue
		}
		n, err := partitionFolders(filepath.Join(l.dir, "streams", name))
		if err != nil {
			return nil, err
		}
		if n > 0 {
			cfgs[name] = StreamConfig{Partitions: n}
			found = append(found, fmt.Sprintf("%s (%d partitions)", name, n))
		}
	}
	sort.Strings(found)
	return found, nil
}

// openPartitionReadOnly lists a partition's segments as openPartition would keep them, reading
// files only. A torn tail stays on disk and is reported; a damaged sealed segment is reported and
// its range shown as a gap.
func (l *Log) openPartitionReadOnly(stream string, id int) (*Partition, error) {
	dir := l.partitionDir(stream, id)
	p := l.newPartition(stream, id, dir)
	p.failed = ErrReadOnly
	close(p.done) // no committer
	if l.meta != nil {
		gaps, err := l.loadGaps(stream, id)
		if err != nil {
			return nil, err
		}
		p.gaps = gaps
	}
	files, err := listSegmentFiles(dir, false)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	report := func(ce *CorruptionError) {
		ce.Stream, ce.Partition = stream, id
		l.damage = append(l.damage, ce)
	}
	var segs []segment
	for _, base := range files.bases {
		exts := files.exts[base]
		if exts[sealedExt] {
			ss, err := l.sealedReadOnly(dir, base)
			if err == nil {
				segs = append(segs, ss)
				continue
			}
			var ce *CorruptionError
			if !errors.As(err, &ce) {
				return nil, err
			}
			ce.Reason += " (left in place: read-only)"
			report(ce)
			if !exts[plainExt] {
				continue
			}
		}
		if !exts[plainExt] {
			continue
		}
		f, err := os.Open(filepath.Join(dir, segmentName(base, plainExt)))
		if err != nil {
			return nil, err
		}
		ps := newPlainSegment(f, base, time.Now())
		res, err := scanPlain(ps)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("scan segment %d: %w", base, err)
		}
		if res.damage != nil {
			report(&CorruptionError{Segment: base, Offset: res.next, Err: res.damage,
				Reason: fmt.Sprintf("torn or damaged tail: %d of %d bytes are whole batches; the node cuts the rest at its next start (left in place: read-only)", res.validSize, res.fileSize)})
		}
		segs = append(segs, ps)
	}
	// Holes between segments are lost ranges; shown as gaps here, recorded by the node at start.
	for i := 0; i+1 < len(segs); i++ {
		if n, b := segs[i].nextOffset(), segs[i+1].baseOffset(); n < b {
			if _, ok := p.gapAt(n, b); !ok {
				p.gaps = append(p.gaps, Gap{From: n, To: b, Records: b - n, Reason: GapCorrupt})
			}
		}
	}
	sort.Slice(p.gaps, func(i, j int) bool { return p.gaps[i].From < p.gaps[j].From })
	next := int64(0)
	if len(segs) > 0 {
		next = segs[len(segs)-1].nextOffset()
	}
	if len(segs) == 0 {
		// An empty partition whose active segment was never created: an empty stand-in.
		ps := &plainSegment{base: next, file: filepath.Join(dir, segmentName(next, plainExt))}
		ps.next.Store(next)
		ps.closeFn = func(bool) {}
		segs = append(segs, ps)
	}
	p.segments = segs
	if ps, ok := segs[len(segs)-1].(*plainSegment); ok {
		p.active = ps
	}
	p.end.Store(next)
	p.written.Store(next)
	return p, nil
}

// sealedReadOnly opens a sealed segment, taking its frames from the index or, when the index is
// missing or does not fit, from the frame descriptors (in memory; nothing is rewritten).
func (l *Log) sealedReadOnly(dir string, base int64) (*sealedSegment, error) {
	path := filepath.Join(dir, segmentName(base, sealedExt))
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	b, rerr := os.ReadFile(filepath.Join(dir, segmentName(base, indexExt)))
	ibase, inext, frames, ierr := decodeIndex(b)
	if rerr != nil || ierr != nil || ibase != base || !indexFits(frames, st.Size()) || frames[len(frames)-1].next() != inext {
		if frames, err = rebuildIndex(f, st.Size()); err != nil || len(frames) == 0 || frames[0].base != base {
			f.Close()
			return nil, &CorruptionError{Segment: base, Offset: -1, Reason: "frame descriptors damaged and no usable index", Err: err}
		}
		inext = frames[len(frames)-1].next()
	}
	if !l.opts.SkipVerifyOnOpen {
		if _, bad, err := verifyFrames(f, frames); err != nil {
			f.Close()
			ce := &CorruptionError{Segment: base, Offset: -1, Reason: "frame checksum mismatch", Err: err}
			if bad >= 0 {
				ce.Offset = frames[bad].base
			}
			return nil, ce
		}
	}
	return newSealedSegment(f, base, inext, frames, st.Size()), nil
}

// emptyMetaReadOnly makes an empty metadata file in the temporary directory and opens it read-only.
func emptyMetaReadOnly() (*bolt.DB, string, error) {
	tmp, err := os.MkdirTemp("", "tributary-inspect-")
	if err != nil {
		return nil, "", err
	}
	path := filepath.Join(tmp, "meta.db")
	db, err := openMeta(path)
	if err == nil {
		err = db.Close()
	}
	if err == nil {
		db, err = bolt.Open(path, 0o444, &bolt.Options{ReadOnly: true})
	}
	if err != nil {
		os.RemoveAll(tmp)
		return nil, "", fmt.Errorf("make empty metadata stand-in: %w", err)
	}
	return db, tmp, nil
}

// partitionFolders counts a stream folder's partitions: one past the highest partition folder.
func partitionFolders(dir string) (int, error) {
	parts, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range parts {
		if id, err := strconv.Atoi(p.Name()); err == nil && p.IsDir() && id >= 0 && id < 4096 {
			n = max(n, id+1)
		}
	}
	return n, nil
}
