//go:build linux

package lossyfs

import (
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
)

// The durable state: for each folder identity its durable entries (f.durable), and for each file
// identity its durable content in the shadow folder, named by the identity (absent: empty).

func (f *FS) shadowPath(id uint64) string {
	return filepath.Join(f.shadow, strconv.FormatUint(id, 10))
}

// newID gives a freshly created inode its identity. Call with f.mu held.
func (f *FS) newID(ino uint64) uint64 {
	id := f.nextID
	f.nextID++
	f.byIno[ino] = id
	return id
}

// idOf returns the identity of the backing inode ino, making one if it has none (an inode the
// mount did not see created). Call with f.mu held.
func (f *FS) idOf(ino uint64) uint64 {
	if id, ok := f.byIno[ino]; ok {
		return id
	}
	return f.newID(ino)
}

func (f *FS) idOfPath(p string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.idOf(st.Ino), nil
}

func (f *FS) created(p string) {
	var st syscall.Stat_t
	if syscall.Lstat(p, &st) != nil {
		return
	}
	f.mu.Lock()
	f.newID(st.Ino)
	f.mu.Unlock()
}

func (f *FS) pendingOf(id uint64) *pendingFile {
	pf := f.pending[id]
	if pf == nil {
		pf = &pendingFile{}
		f.pending[id] = pf
	}
	return pf
}

// noteWrite records a write that has reached the backing file. Recording after the write keeps a
// concurrent sync correct: either it copies the new bytes or the range stays dirty.
func (f *FS) noteWrite(id uint64, off int64, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.Writes++
	pf := f.pendingOf(id)
	end := off + int64(len(data))
	if n := len(pf.dirty); n > 0 && pf.dirty[n-1].end == off {
		pf.dirty[n-1].end = end // appends, the usual case, extend one range
	} else if n >= maxExtents {
		lo, hi := off, end
		for _, e := range pf.dirty {
			lo, hi = min(lo, e.off), max(hi, e.end)
		}
		pf.dirty = append(pf.dirty[:0], extent{lo, hi})
	} else {
		pf.dirty = append(pf.dirty, extent{off, end})
	}
	if f.opts.TearWrites && len(data) <= maxTornBytes {
		pf.last = &lastWrite{off: off, data: slices.Clone(data)}
	} else {
		pf.last = nil
	}
}

// noteWhole records a change the extents cannot describe (truncate, fallocate, O_TRUNC).
func (f *FS) noteWhole(id uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	pf := f.pendingOf(id)
	pf.whole, pf.dirty, pf.last = true, nil, nil
}

func (f *FS) syncLock(id uint64) *sync.Mutex {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.syncLocks[id]
	if l == nil {
		l = &sync.Mutex{}
		f.syncLocks[id] = l
	}
	return l
}

// syncFile makes the content of the open file fd (identity id) durable: the pending ranges are
// copied into its shadow, which is then cut to the file's size. fd may be write-only, so the
// copy reads through a descriptor of its own, opened by way of /proc (unlinked files included).
func (f *FS) syncFile(id uint64, wfd int) error {
	l := f.syncLock(id)
	l.Lock()
	defer l.Unlock()
	f.mu.Lock()
	pf := f.pending[id]
	delete(f.pending, id)
	f.stats.FileSyncs++
	f.mu.Unlock()
	if pf == nil {
		return nil
	}
	fd, err := syscall.Open("/proc/self/fd/"+strconv.Itoa(wfd), syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	dst, err := os.OpenFile(f.shadowPath(id), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer dst.Close()
	ranges := pf.dirty
	if pf.whole {
		ranges = []extent{{0, st.Size}}
	}
	buf := make([]byte, 128<<10)
	for _, r := range ranges {
		for off := r.off; off < min(r.end, st.Size); {
			n, err := syscall.Pread(fd, buf[:min(int64(len(buf)), min(r.end, st.Size)-off)], off)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				return err
			}
			if n == 0 {
				break // the file shrank meanwhile: the truncate below settles it
			}
			if _, err := dst.WriteAt(buf[:n], off); err != nil {
				return err
			}
			off += int64(n)
		}
	}
	return dst.Truncate(st.Size)
}

// syncDir makes the entries of the backing folder dir durable as they are now.
func (f *FS) syncDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil {
		return err
	}
	type named struct {
		name string
		st   syscall.Stat_t
		link string
	}
	var list []named
	for _, e := range ents {
		n := named{name: e.Name()}
		p := filepath.Join(dir, e.Name())
		if syscall.Lstat(p, &n.st) != nil {
			continue // removed meanwhile
		}
		if n.st.Mode&syscall.S_IFMT == syscall.S_IFLNK {
			n.link, _ = os.Readlink(p)
		}
		list = append(list, n)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.DirSyncs++
	dirID := uint64(rootID)
	if dir != f.backing {
		dirID = f.idOf(st.Ino)
	}
	entries := make(map[string]entry, len(list))
	for _, n := range list {
		id := f.idOf(n.st.Ino)
		entries[n.name] = entry{id: id, mode: n.st.Mode, target: n.link}
		if n.st.Mode&syscall.S_IFMT == syscall.S_IFDIR && f.durable[id] == nil {
			f.durable[id] = map[string]entry{} // a new folder is durable empty
		}
	}
	f.durable[dirID] = entries
	return nil
}

// adopt takes what the backing folder holds as durable: identities for every inode, shadows of
// every file, every folder's entries. Call with no operation running.
func (f *FS) adopt() error {
	f.byIno = make(map[uint64]uint64)
	f.pending = make(map[uint64]*pendingFile)
	f.durable = make(map[uint64]map[string]entry)
	var st syscall.Stat_t
	if err := syscall.Lstat(f.backing, &st); err != nil {
		return fmt.Errorf("stat backing folder: %w", err)
	}
	f.byIno[st.Ino] = rootID
	var walk func(dir string) error
	walk = func(dir string) error {
		if err := f.syncDir(dir); err != nil {
			return fmt.Errorf("adopt %s: %w", f.rel(dir), err)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			switch {
			case e.IsDir():
				if err := walk(p); err != nil {
					return err
				}
			case e.Type().IsRegular():
				id, err := f.idOfPath(p)
				if err != nil {
					return err
				}
				if err := copyFile(p, f.shadowPath(id)); err != nil {
					return fmt.Errorf("adopt %s: %w", f.rel(p), err)
				}
			}
		}
		return nil
	}
	if err := walk(f.backing); err != nil {
		return err
	}
	f.stats.DirSyncs, f.stats.FileSyncs = 0, 0
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// rebuild replaces the backing folder with its durable state, counting what is lost into rep.
// Call with f.mu held, unmounted.
func (f *FS) rebuild(rep *CutReport) error {
	f.countReverted(rep)
	if f.opts.TearWrites {
		for _, id := range slices.Sorted(maps.Keys(f.pending)) {
			if pf := f.pending[id]; pf.last != nil && f.tear(id, pf.last) {
				rep.TornWrites++
			}
		}
	}
	ents, err := os.ReadDir(f.backing)
	if err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(f.backing, e.Name())); err != nil {
			return fmt.Errorf("rebuild: %w", err)
		}
	}
	made := map[uint64]string{rootID: f.backing}
	if err := f.materialize(rootID, f.backing, made); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	// Identities survive the cut; inode numbers do not.
	f.byIno = make(map[uint64]uint64, len(made))
	for id, p := range made {
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return fmt.Errorf("rebuild: %w", err)
		}
		f.byIno[st.Ino] = id
	}
	for id := range f.durable {
		if _, ok := made[id]; !ok {
			delete(f.durable, id)
		}
	}
	shadows, err := os.ReadDir(f.shadow)
	if err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	for _, s := range shadows {
		id, err := strconv.ParseUint(s.Name(), 10, 64)
		if _, ok := made[id]; err != nil || !ok {
			os.Remove(filepath.Join(f.shadow, s.Name()))
		}
	}
	f.pending = make(map[uint64]*pendingFile)
	f.syncLocks = make(map[uint64]*sync.Mutex)
	return nil
}

// countReverted compares the live tree with the durable one before it is thrown away.
func (f *FS) countReverted(rep *CutReport) {
	rep.FilesReverted = len(f.pending)
	var walk func(dir string, id uint64)
	walk = func(dir string, id uint64) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return
		}
		durable := f.durable[id]
		differs := len(ents) != len(durable)
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			var st syscall.Stat_t
			if syscall.Lstat(p, &st) != nil {
				continue
			}
			cid, ok := f.byIno[st.Ino]
			if d, has := durable[e.Name()]; !has || !ok || d.id != cid {
				differs = true
			}
			if e.IsDir() && ok {
				walk(p, cid)
			}
		}
		if differs {
			rep.DirsReverted++
		}
	}
	walk(f.backing, rootID)
}

// tear puts a prefix of w, ending at a 512-byte boundary of the file, onto id's durable content.
// It reports whether any byte was kept.
func (f *FS) tear(id uint64, w *lastWrite) bool {
	const sector = 512
	end := w.off + int64(len(w.data))
	var cuts []int64 // possible ends of the kept prefix, short of the whole write
	for b := (w.off/sector + 1) * sector; b < end; b += sector {
		cuts = append(cuts, b)
	}
	if len(cuts) == 0 {
		return false
	}
	keep := cuts[f.rng.IntN(len(cuts))] - w.off
	if f.rng.IntN(4) == 0 {
		return false // sometimes the whole write is lost, as with no tearing
	}
	out, err := os.OpenFile(f.shadowPath(id), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return false
	}
	defer out.Close()
	_, err = out.WriteAt(w.data[:keep], w.off)
	return err == nil
}

// materialize recreates folder id at path from its durable entries.
func (f *FS) materialize(id uint64, path string, made map[uint64]string) error {
	entries := f.durable[id]
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		e := entries[name]
		p := filepath.Join(path, name)
		perm := os.FileMode(e.mode & 0o7777)
		switch e.mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			if _, ok := made[e.id]; ok {
				continue // a folder moved between two synced parents: keep the first
			}
			if err := os.Mkdir(p, perm); err != nil {
				return err
			}
			made[e.id] = p
			if err := f.materialize(e.id, p, made); err != nil {
				return err
			}
		case syscall.S_IFLNK:
			if err := os.Symlink(e.target, p); err != nil {
				return err
			}
			made[e.id] = p
		case syscall.S_IFREG:
			if first, ok := made[e.id]; ok {
				if err := os.Link(first, p); err != nil {
					return err
				}
				continue
			}
			if err := copyFile(f.shadowPath(e.id), p); err != nil {
				if !os.IsNotExist(err) {
					return err
				}
				if err := os.WriteFile(p, nil, perm); err != nil {
					return err
				}
			}
			if err := os.Chmod(p, perm); err != nil {
				return err
			}
			made[e.id] = p
		default:
			// Device nodes, fifos and sockets: recreate the node, no content.
			if err := syscall.Mknod(p, e.mode, 0); err != nil {
				return err
			}
			made[e.id] = p
		}
	}
	return nil
}
