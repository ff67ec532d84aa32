package storage

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tributary-iot/tributary/storage/internal/fsutil"
)

// openPartition builds a partition from its directory and starts its committer. Recovery runs
// first and alone (see recover); the committer is the only goroutine that writes afterwards.
func (l *Log) openPartition(stream string, id int) (*Partition, error) {
	dir := l.partitionDir(stream, id)
	if err := fsutil.MkdirAll(dir, dirMode); err != nil {
		return nil, err
	}
	p := l.newPartition(stream, id, dir)
	gaps, err := l.loadGaps(stream, id)
	if err != nil {
		return nil, err
	}
	p.gaps = gaps
	if err := p.recover(); err != nil {
		return nil, err
	}
	go p.run()
	return p, nil
}

// newPartition returns a partition with no segments and no committer.
func (l *Log) newPartition(stream string, id int, dir string) *Partition {
	p := &Partition{log: l, stream: stream, id: id, dir: dir,
		kick: make(chan struct{}, 1), done: make(chan struct{}), notify: make(chan struct{})}
	p.space = sync.NewCond(&p.mu)
	p.groups = []*group{newGroup(0)}
	return p
}

// recover brings the partition's directory back to a state it can append to, in three steps: list
// the segment files (removing leftovers of interrupted seals), resolve each base offset to the
// segments it keeps (checking sealed segments, cutting a torn tail off a plain one), then choose
// the active segment at the first offset never handed out. On success the partition holds its
// segments; on failure every segment opened is closed again.
func (p *Partition) recover() error {
	files, err := listSegmentFiles(p.dir, true)
	if err != nil {
		return err
	}
	var segs []segment
	ok := false
	defer func() {
		if !ok {
			for _, seg := range segs {
				seg.retire(false)
			}
		}
	}()
	var lastPlain *plainSegment
	changed := false
	for i := range files.bases {
		kept, plain, ch, err := p.resolveBase(files, i)
		if err != nil {
			return err
		}
		segs = append(segs, kept...)
		if plain != nil {
			lastPlain = plain
		}
		changed = changed || ch
	}
	p.recordHoles(segs)
	next := p.firstFreeOffset(segs)
	segs, active, ch, err := p.chooseActive(segs, lastPlain, next)
	if err != nil {
		return err
	}
	changed = changed || ch
	if changed {
		if err := fsutil.SyncDir(p.dir); err != nil {
			return err
		}
	}
	// What the last process wrote may still be only in the page cache (fsync policies interval
	// and none, or a crash between write and fsync): make it durable before anyone reads it.
	if err := active.f.Sync(); err != nil {
		return fmt.Errorf("sync active segment %d: %w", active.base, err)
	}
	ok = true
	p.segments = segs
	p.active = active
	p.end.Store(active.nextOffset())
	p.written.Store(active.nextOffset())
	p.opened = active.nextOffset()
	for _, s := range segs {
		p.log.diskBytes.Add(s.storedBytes())
	}
	return nil
}

// segmentFiles is what a partition directory holds: the base offsets found, ascending, and for
// each the extensions present (plain segment, sealed segment, index).
type segmentFiles struct {
	bases []int64
	exts  map[int64]map[string]bool
}

// listSegmentFiles reads a partition directory. With removeTmp, leftovers of a seal that did not
// finish (*.tmp) are removed: the plain segment they came from is still there.
func listSegmentFiles(dir string, removeTmp bool) (segmentFiles, error) {
	files := segmentFiles{exts: map[int64]map[string]bool{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return files, err
	}
	for _, e := range entries {
		name := e.Name()
		if removeTmp && strings.HasSuffix(name, tmpExt) {
			os.Remove(filepath.Join(dir, name))
			continue
		}
		base, ext, ok := parseSegmentName(name)
		if !ok {
			continue
		}
		if files.exts[base] == nil {
			files.exts[base] = map[string]bool{}
			files.bases = append(files.bases, base)
		}
		files.exts[base][ext] = true
	}
	sort.Slice(files.bases, func(i, j int) bool { return files.bases[i] < files.bases[j] })
	return files, nil
}

// segmentAfter returns the base of the first segment (plain or sealed, not a lone index) after
// bases[i]. Segments are contiguous, so it is where the segment at bases[i] ended.
func (sf segmentFiles) segmentAfter(i int) (int64, bool) {
	for _, b := range sf.bases[i+1:] {
		if sf.exts[b][sealedExt] || sf.exts[b][plainExt] {
			return b, true
		}
	}
	return 0, false
}

// resolveBase decides what the files at files.bases[i] become: the sealed segment (or what salvage
// keeps of it), the plain segment it was sealed from when the seal is damaged, a plain segment
// cut back to its last whole batch, or nothing (a lone index, a quarantined segment whose range
// becomes a gap). plain is the plain segment kept, if any; changed reports files removed or
// rewritten, so the caller syncs the directory.
func (p *Partition) resolveBase(files segmentFiles, i int) (kept []segment, plain *plainSegment, changed bool, err error) {
	l, dir := p.log, p.dir
	base := files.bases[i]
	exts := files.exts[base]
	if exts[sealedExt] {
		// Good frames of a damaged segment are kept when nothing better exists (the plain
		// segment it was sealed from) and a later segment marks where it ended.
		_, later := files.segmentAfter(i)
		salvage := !exts[plainExt] && later
		sealed, err := l.openSealed(p, base, salvage)
		if err == nil {
			if exts[plainExt] {
				// The seal completed (renaming the .zst is its last step) and the sealed file
				// checks out, so the plain file is a leftover.
				os.Remove(filepath.Join(dir, segmentName(base, plainExt)))
				changed = true
			}
			if len(sealed) != 1 || sealed[0].base != base {
				changed = true // salvaged
			}
			for _, seg := range sealed {
				kept = append(kept, seg)
			}
			return kept, nil, changed, nil
		}
		var ce *CorruptionError
		if !errors.As(err, &ce) {
			return nil, nil, false, err
		}
		next := l.quarantine(p.stream, p.id, dir, base, ce)
		changed = true
		if !exts[plainExt] {
			// The next segment's base is where this one ended, which is exact even when the
			// damage hides the segment's own end.
			if b, ok := files.segmentAfter(i); ok {
				next = b
			}
			p.recordGapLocked(Gap{From: base, To: next, Reason: GapCorrupt})
			return nil, nil, changed, nil
		}
		// The plain segment the damaged seal was made from is still here: keep reading it.
		l.logger.Warn("damaged sealed segment replaced by the plain segment it was sealed from",
			"stream", p.stream, "partition", p.id, "segment", base)
	}
	if !exts[plainExt] {
		// An index without its segment: a seal that renamed the index but not the segment, or
		// retention that removed the segment but not yet its index.
		os.Remove(filepath.Join(dir, segmentName(base, indexExt)))
		return nil, nil, true, nil
	}
	if exts[indexExt] && !exts[sealedExt] {
		os.Remove(filepath.Join(dir, segmentName(base, indexExt)))
		changed = true
	}
	ps, err := l.recoverPlain(p, base)
	if err != nil {
		return nil, nil, false, err
	}
	return []segment{ps}, ps, changed, nil
}

// recordHoles makes sure every hole between segments, a range lost to damage, has a gap record.
func (p *Partition) recordHoles(segs []segment) {
	l := p.log
	for i := 0; i+1 < len(segs); i++ {
		if n, b := segs[i].nextOffset(), segs[i+1].baseOffset(); n < b {
			if !p.hasGapLocked(n, b) {
				ce := &CorruptionError{Stream: p.stream, Partition: p.id, Segment: segs[i].baseOffset(), Offset: n,
					Reason: fmt.Sprintf("segment ends at offset %d but the next one starts at %d: offsets %d-%d lost", n, b, n, b-1)}
				l.logger.Error("segment shorter than where the next one starts: the lost records are reported as a gap",
					"stream", p.stream, "partition", p.id, "err", ce)
				l.addDamage(ce)
			}
			p.recordGapLocked(Gap{From: n, To: b, Reason: GapCorrupt})
		}
	}
}

// firstFreeOffset returns the offset the next record gets. Offsets already handed out, and maybe
// acknowledged and forwarded, must never be reused: it is after every stored segment, every
// recorded gap and every cursor.
func (p *Partition) firstFreeOffset(segs []segment) int64 {
	l := p.log
	next := int64(0)
	if len(segs) > 0 {
		next = segs[len(segs)-1].nextOffset()
	}
	for _, g := range p.gaps {
		next = max(next, g.To)
	}
	// A cursor past the end means records that existed were cut off while the log was closed
	// (a truncated or emptied segment file, an older copy of the data dir): report it as damage
	// and never hand those offsets out again, since some were acknowledged and forwarded.
	if cursor, hw, ok := l.highestCursor(p.stream, p.id); ok && hw > next {
		base := int64(0)
		if len(segs) > 0 {
			base = segs[len(segs)-1].baseOffset()
		}
		ce := &CorruptionError{Stream: p.stream, Partition: p.id, Segment: base, Offset: next,
			Reason: fmt.Sprintf("partition ends at offset %d but cursor %q is at %d: offsets %d-%d were cut off while stopped", next, cursor, hw, next, hw-1)}
		l.logger.Error("partition truncated while stopped: the missing records are reported as a gap", "stream", p.stream, "partition", p.id, "err", ce)
		l.addDamage(ce)
		p.recordGapLocked(Gap{From: next, To: hw, Reason: GapTruncated})
		next = hw
	}
	return next
}

// chooseActive picks the segment new records go to: the last plain segment if it is last and
// continues at next; otherwise a new one starts at next (an empty last plain segment that ends
// before next is dropped for it). It returns segs with the active segment last.
func (p *Partition) chooseActive(segs []segment, lastPlain *plainSegment, next int64) ([]segment, *plainSegment, bool, error) {
	changed := false
	if lastPlain != nil && segs[len(segs)-1] == segment(lastPlain) && lastPlain.nextOffset() < next &&
		lastPlain.size.Load() == 0 {
		segs = segs[:len(segs)-1]
		lastPlain.retire(true)
		lastPlain = nil
		changed = true
	}
	if lastPlain != nil && segs[len(segs)-1] == segment(lastPlain) && lastPlain.nextOffset() >= next {
		return segs, lastPlain, changed, nil
	}
	f, err := os.OpenFile(filepath.Join(p.dir, segmentName(next, plainExt)), os.O_CREATE|os.O_RDWR, fileMode)
	if err != nil {
		return segs, nil, changed, err
	}
	active := newPlainSegment(f, next, time.Now())
	if _, err := scanPlain(active); err != nil {
		f.Close()
		return segs, nil, changed, err
	}
	return append(segs, active), active, true, nil
}

// recoverPlain opens a plain segment and cuts it back to its last whole, checked batch. When intact
// batches follow the damage, the damage is not a torn tail but lost records that may have been
// acknowledged: their offsets become a corrupt-segment gap (so they are never reused), the file
// goes to quarantine as evidence, and the damage is reported.
func (l *Log) recoverPlain(p *Partition, base int64) (*plainSegment, error) {
	path := filepath.Join(p.dir, segmentName(base, plainExt))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	ps := newPlainSegment(f, base, time.Now())
	res, err := scanPlain(ps)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("scan segment %d: %w", base, err)
	}
	if res.damage == nil {
		return ps, nil
	}
	if res.lostNext > res.next {
		ce := &CorruptionError{Offset: res.next, Reason: fmt.Sprintf("damaged batch in plain segment; offsets %d-%d lost", res.next, res.lostNext-1), Err: res.damage}
		l.quarantineCopy(p.stream, p.id, path, ce)
		l.logger.Error("plain segment damaged: copy moved to quarantine, lost records are reported as a gap",
			"stream", p.stream, "partition", p.id, "segment", base, "err", ce)
		p.recordGapLocked(Gap{From: res.next, To: res.lostNext, Reason: GapCorrupt})
	} else {
		l.logger.Warn("cut torn tail of segment", "stream", p.stream, "partition", p.id,
			"segment", base, "kept_bytes", res.validSize, "cut_bytes", res.fileSize-res.validSize,
			"next_offset", res.next, "reason", res.damage)
	}
	if err := f.Truncate(res.validSize); err != nil {
		f.Close()
		return nil, fmt.Errorf("truncate torn segment %d: %w", base, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("sync truncated segment %d: %w", base, err)
	}
	return ps, nil
}

// quarantineCopy keeps a copy of a damaged segment file in quarantine/ before recovery changes
// it (cuts, repairs or salvages it), and reports the damage; the caller logs what it does.
func (l *Log) quarantineCopy(stream string, id int, path string, ce *CorruptionError) {
	base, _, _ := parseSegmentName(filepath.Base(path))
	ce.Stream, ce.Partition, ce.Segment = stream, id, base
	if dst, err := l.quarantinePath(stream, id, filepath.Base(path)); err == nil {
		if err := copyFile(path, dst); err != nil {
			l.logger.Error("copy damaged segment to quarantine", "err", err)
		}
	}
	l.quarantined.Add(1)
	l.cursorMu.Lock()
	l.damage = append(l.damage, ce)
	l.cursorMu.Unlock()
}

// quarantinePath returns a free file name for name in the partition's quarantine folder; a segment
// damaged twice (same base offset) keeps both copies.
func (l *Log) quarantinePath(stream string, id int, name string) (string, error) {
	qdir := filepath.Join(l.dir, "quarantine", stream, fmt.Sprint(id))
	if err := fsutil.MkdirAll(qdir, dirMode); err != nil {
		return "", err
	}
	dst := filepath.Join(qdir, name)
	for i := 1; ; i++ {
		if _, err := os.Lstat(dst); os.IsNotExist(err) {
			return dst, nil
		}
		dst = filepath.Join(qdir, fmt.Sprintf("%s.%d", name, i))
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := createFile(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// recordGapLocked records the part of g that no recorded gap covers yet (as one or more gaps) and
// persists it.
func (p *Partition) recordGapLocked(g Gap) {
	if g.To <= g.From {
		return
	}
	for _, old := range p.gaps {
		if old.To <= g.From || old.From >= g.To {
			continue
		}
		if old.From > g.From {
			p.recordGapLocked(Gap{From: g.From, To: old.From, Reason: g.Reason, Time: g.Time})
		}
		if old.To < g.To {
			p.recordGapLocked(Gap{From: old.To, To: g.To, Reason: g.Reason, Time: g.Time})
		}
		return
	}
	if g.Time.IsZero() {
		g.Time = time.Now().UTC()
	}
	g.Records = g.To - g.From
	p.gaps = append(p.gaps, g)
	sort.Slice(p.gaps, func(i, j int) bool { return p.gaps[i].From < p.gaps[j].From })
	if err := p.log.saveGap(p.stream, p.id, g); err != nil {
		p.log.logger.Error("save gap record", "stream", p.stream, "partition", p.id, "err", err)
	}
	p.log.logger.Warn("records lost", "stream", p.stream, "partition", p.id, "from", g.From, "to", g.To, "reason", g.Reason)
}

// openSealed opens a sealed segment and its index, rebuilding a missing or damaged index from the
// frame descriptors and checking every frame's CRC unless told not to. With salvage, a segment
// some of whose frames fail their CRC is split into segments of the good frames and the bad ones
// become gaps (see salvageSealed); otherwise, and when nothing can be saved, the error is a
// *CorruptionError and the caller quarantines the segment whole.
func (l *Log) openSealed(p *Partition, base int64, salvage bool) ([]*sealedSegment, error) {
	stream, id, dir := p.stream, p.id, p.dir
	path := filepath.Join(dir, segmentName(base, sealedExt))
	corrupt := func(reason string, err error) error {
		return &CorruptionError{Stream: stream, Partition: id, Segment: base, Offset: -1, Reason: reason, Err: err}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	idxPath := filepath.Join(dir, segmentName(base, indexExt))
	var frames []frameInfo
	var next int64
	b, rerr := os.ReadFile(idxPath)
	ibase, inext, iframes, ierr := decodeIndex(b)
	if rerr == nil && ierr == nil && ibase == base && indexFits(iframes, st.Size()) && iframes[len(iframes)-1].next() == inext {
		frames, next = iframes, inext
	} else {
		why := ierr
		if rerr != nil {
			why = rerr
		} else if why == nil {
			why = errors.New("index does not match the segment file")
		}
		l.logger.Warn("rebuild index of sealed segment", "stream", stream, "partition", id, "segment", base, "reason", why)
		frames, err = rebuildIndex(f, st.Size())
		if err != nil {
			f.Close()
			ce := corrupt("frame descriptors damaged and no usable index", err).(*CorruptionError)
			if len(frames) > 0 {
				ce.Offset = frames[len(frames)-1].next()
			}
			return nil, ce
		}
		if len(frames) == 0 || frames[0].base != base {
			f.Close()
			return nil, corrupt("no frames", nil)
		}
		next = frames[len(frames)-1].next()
		tmp := idxPath + tmpExt
		if err := writeFileSync(tmp, encodeIndex(base, next, frames)); err != nil {
			f.Close()
			return nil, fmt.Errorf("write rebuilt index: %w", err)
		}
		if err := fsutil.ReplaceFile(tmp, idxPath); err != nil {
			f.Close()
			return nil, fmt.Errorf("write rebuilt index: %w", err)
		}
	}
	if !l.opts.SkipVerifyOnOpen {
		badDesc, bad, err := verifyFrames(f, frames)
		if err != nil {
			ce := corrupt("frame checksum mismatch", err).(*CorruptionError)
			if bad >= 0 {
				ce.Offset = frames[bad].base
			}
			if salvage && bad >= 0 {
				// At open nothing else runs: gaps go straight in.
				segs, err := l.salvageSealed(p, f, frames, ce, p.recordGapLocked)
				if err == nil {
					f.Close()
					return segs, nil
				}
				if !errors.Is(err, errNothingToSalvage) {
					// Open must not fail over damage: lose the segment whole instead.
					l.logger.Error("salvage damaged segment; quarantining it whole", "stream", stream,
						"partition", id, "segment", base, "err", err)
				}
			}
			f.Close()
			return nil, ce
		}
		if badDesc >= 0 {
			// Every frame checks out against the index; only a descriptor is damaged. Rewrite the
			// descriptors from the index (same positions, so the index stays valid) so that a later
			// index rebuild works, and keep the damaged file as evidence.
			f.Close()
			ce := &CorruptionError{Stream: stream, Partition: id, Segment: base, Offset: frames[badDesc].base,
				Reason: "frame descriptor damaged; rewritten from the index, no records lost"}
			if f, err = l.repairDescriptors(path, frames, ce); err != nil {
				return nil, fmt.Errorf("repair descriptors of segment %d: %w", base, err)
			}
		}
	}
	return []*sealedSegment{newSealedSegment(f, base, next, frames, st.Size())}, nil
}

var errNothingToSalvage = errors.New("no frame to keep apart from the damage")

// salvageSealed keeps what a damaged sealed segment still holds. f is the segment, frames its
// trusted index, at least one of which fails its CRC. Each run of good frames is written, frame
// by frame as it is on disk (the frames are independent zstd frames), to a sealed segment of its
// own named by its first offset, and each run of bad frames becomes a corrupt-segment gap: a flipped
// bit costs one frame (FrameBytes) instead of the whole segment. The damaged file is copied to
// quarantine/ first, as evidence.
//
// Order on disk: the copies are written under temporary names (a failure there leaves everything
// as it was, for whole quarantine), then the gaps are saved, then the copies are installed, the
// one at the segment's own base first (replacing the damaged file). A crash part way leaves a
// damaged file that the next open salvages again, or fewer good segments whose missing ranges
// the next open reports as gaps (the open-time caller salvages only when a later segment marks
// where this one ended). recordGap saves a gap record. f stays open: at run time readers may
// still be reading it.
func (l *Log) salvageSealed(p *Partition, f *os.File, frames []frameInfo, ce *CorruptionError, recordGap func(Gap)) ([]*sealedSegment, error) {
	base := frames[0].base
	bad := make([]bool, len(frames))
	nbad := 0
	var buf []byte
	for i, fi := range frames {
		buf = slices.Grow(buf[:0], int(fi.compLen))[:fi.compLen]
		if _, err := f.ReadAt(buf, fi.pos); err != nil || crc32.Checksum(buf, castagnoli) != fi.crc {
			bad[i] = true
			nbad++
		}
	}
	if nbad == 0 || nbad == len(frames) {
		// Every frame bad, or none (a batch damaged before it was compressed): no frame can be
		// told good from bad, so the whole segment goes.
		return nil, errNothingToSalvage
	}
	dir, path := p.dir, f.Name()
	type run struct {
		frames []frameInfo // positions in the new file
		size   int64
	}
	var runs []run
	var lost []Gap
	for i := 0; i < len(frames); {
		j := i
		for j < len(frames) && bad[j] == bad[i] {
			j++
		}
		if bad[i] {
			lost = append(lost, Gap{From: frames[i].base, To: frames[j-1].next(), Reason: GapCorrupt})
		} else {
			var r run
			for _, fi := range frames[i:j] {
				fi.pos = r.size + descriptorFrame
				r.size = fi.pos + int64(fi.compLen)
				r.frames = append(r.frames, fi)
			}
			runs = append(runs, r)
		}
		i = j
	}

	names := func(r run) (zst, idx string) {
		b := r.frames[0].base
		return filepath.Join(dir, segmentName(b, sealedExt)), filepath.Join(dir, segmentName(b, indexExt))
	}
	cleanup := func() {
		for _, r := range runs {
			zst, idx := names(r)
			os.Remove(zst + tmpExt)
			os.Remove(idx + tmpExt)
		}
	}
	for _, r := range runs {
		zst, idx := names(r)
		if err := writeFrames(zst+tmpExt, f, frames, r.frames); err != nil {
			cleanup()
			return nil, err
		}
		if err := writeFileSync(idx+tmpExt, encodeIndex(r.frames[0].base, r.frames[len(r.frames)-1].next(), r.frames)); err != nil {
			cleanup()
			return nil, err
		}
	}
	// The copies are written: from here on the good frames are kept, so report the damage and
	// save the gaps before any file the log reads changes.
	ce.Reason = fmt.Sprintf("%s; %d of %d frames lost, the rest kept", ce.Reason, nbad, len(frames))
	l.logger.Error("sealed segment damaged: good frames kept, damaged ones reported as gaps",
		"stream", p.stream, "partition", p.id, "segment", base, "frames", len(frames), "damaged", nbad, "err", ce)
	l.quarantineCopy(p.stream, p.id, path, ce)

	for _, g := range lost {
		recordGap(g)
	}
	if runs[0].frames[0].base != base {
		os.Remove(path)
		os.Remove(filepath.Join(dir, segmentName(base, indexExt)))
	}
	for _, r := range runs {
		zst, idx := names(r)
		if err := os.Rename(idx+tmpExt, idx); err != nil {
			return nil, err
		}
		if err := os.Rename(zst+tmpExt, zst); err != nil {
			return nil, err
		}
	}
	if err := fsutil.SyncDir(dir); err != nil {
		return nil, err
	}
	segs := make([]*sealedSegment, 0, len(runs))
	for _, r := range runs {
		zst, _ := names(r)
		nf, err := os.Open(zst)
		if err != nil {
			for _, s := range segs {
				s.retire(false)
			}
			return nil, err
		}
		segs = append(segs, newSealedSegment(nf, r.frames[0].base, r.frames[len(r.frames)-1].next(), r.frames, r.size))
	}
	return segs, nil
}

// writeFrames writes the frames picked (with their new positions) from src, whose index is
// frames, to a new file at path with fresh descriptors, and fsyncs it.
func writeFrames(path string, src *os.File, frames, picked []frameInfo) error {
	out, err := createFile(path)
	if err != nil {
		return err
	}
	var desc [descriptorFrame]byte
	old := map[int64]frameInfo{}
	for _, fi := range frames {
		old[fi.base] = fi
	}
	for _, fi := range picked {
		putDescriptor(desc[:], fi)
		if _, err = out.Write(desc[:]); err != nil {
			break
		}
		o := old[fi.base]
		if _, err = io.Copy(out, io.NewSectionReader(src, o.pos, int64(o.compLen))); err != nil {
			break
		}
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// repairDescriptors rewrites a sealed file with descriptors made from its index, atomically, after
// copying the damaged file to quarantine, and returns the repaired file opened for reading.
func (l *Log) repairDescriptors(path string, frames []frameInfo, ce *CorruptionError) (*os.File, error) {
	l.logger.Error("sealed segment frame descriptor damaged: repaired from its index", "err", ce)
	l.quarantineCopy(ce.Stream, ce.Partition, path, ce)
	src, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	err = writeFrames(path+tmpExt, src, frames, frames) // same positions: the index stays valid
	if err == nil {
		err = fsutil.ReplaceFile(path+tmpExt, path)
	}
	if err != nil {
		os.Remove(path + tmpExt)
		return nil, err
	}
	return os.Open(path)
}

func newSealedSegment(f *os.File, base, next int64, frames []frameInfo, size int64) *sealedSegment {
	s := &sealedSegment{base: base, next: next, file: f.Name(), f: f, frames: frames, size: size}
	for _, fi := range frames {
		s.raw += int64(fi.rawLen)
		if fi.maxTS > s.maxTS {
			s.maxTS = fi.maxTS
		}
	}
	s.closeFn = func(remove bool) {
		s.f.Close()
		if remove {
			os.Remove(s.file)
			os.Remove(strings.TrimSuffix(s.file, sealedExt) + indexExt)
			syncRemoval(s.file)
		}
	}
	return s
}

// indexFits checks that an index describes a file of the given size, frame after frame.
func indexFits(frames []frameInfo, size int64) bool {
	pos := int64(0)
	for i, fi := range frames {
		if fi.pos != pos+descriptorFrame || (i > 0 && frames[i-1].next() != fi.base) {
			return false
		}
		pos = fi.pos + int64(fi.compLen)
	}
	return pos == size && len(frames) > 0
}

// quarantine moves a damaged sealed segment aside and returns the offset after its last record,
// as far as it can be told.
func (l *Log) quarantine(stream string, id int, dir string, base int64, ce *CorruptionError) int64 {
	l.quarantined.Add(1)
	l.logger.Error("sealed segment damaged: moved to quarantine, its records are reported as a gap",
		"stream", stream, "partition", id, "segment", base, "err", ce)
	next := base
	if b, err := os.ReadFile(filepath.Join(dir, segmentName(base, indexExt))); err == nil {
		if _, n, _, err := decodeIndex(b); err == nil {
			next = n
		}
	}
	if next == base {
		if f, err := os.Open(filepath.Join(dir, segmentName(base, sealedExt))); err == nil {
			if st, err := f.Stat(); err == nil {
				if frames, _ := rebuildIndex(f, st.Size()); len(frames) > 0 {
					next = frames[len(frames)-1].next()
				}
			}
			f.Close()
		}
	}
	for _, ext := range []string{sealedExt, indexExt} {
		name := segmentName(base, ext)
		src := filepath.Join(dir, name)
		if _, err := os.Lstat(src); err != nil {
			continue
		}
		dst, err := l.quarantinePath(stream, id, name)
		if err == nil {
			err = os.Rename(src, dst)
		}
		if err != nil {
			// The damaged file must leave the partition either way, or the next open finds it again.
			l.logger.Error("move damaged file to quarantine; removing it", "file", name, "err", err)
			os.Remove(src)
		}
	}
	ce.Stream, ce.Partition, ce.Segment = stream, id, base
	l.addDamage(ce)
	return next
}

func (l *Log) addDamage(ce *CorruptionError) {
	l.cursorMu.Lock()
	l.damage = append(l.damage, ce)
	l.cursorMu.Unlock()
}

// hasGapLocked reports whether a recorded gap covers [from, to) already (a hole found again at a
// later open).
func (p *Partition) hasGapLocked(from, to int64) bool {
	for _, g := range p.gaps {
		if g.From <= from && g.To >= to {
			return true
		}
	}
	return false
}

// Damage lists the corruption found since Open: at recovery and by readers.
func (l *Log) Damage() []*CorruptionError {
	l.cursorMu.Lock()
	defer l.cursorMu.Unlock()
	return append([]*CorruptionError(nil), l.damage...)
}

func writeFileSync(path string, b []byte) error {
	f, err := createFile(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
