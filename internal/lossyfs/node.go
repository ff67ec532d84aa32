//go:build linux

package lossyfs

import (
	"context"
	"path/filepath"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node is a passthrough node that reports what it does to its FS. It embeds go-fuse's loopback
// node for everything that does not change the disk.
type node struct {
	*fs.LoopbackNode
	lfs *FS
}

var (
	_ fs.NodeWrapChilder    = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
)

// WrapChild makes every node the loopback creates one of ours.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), lfs: n.lfs}
}

// backingPath is the node's path in the backing folder.
func (n *node) backingPath() string {
	return filepath.Join(n.lfs.backing, n.Path(nil))
}

func (n *node) child(name string) string { return filepath.Join(n.backingPath(), name) }

func (n *node) answer(ev Event, errno syscall.Errno) syscall.Errno {
	if !n.lfs.leave(ev) {
		return syscall.EIO
	}
	return errno
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if !n.lfs.enter() {
		return nil, nil, 0, syscall.EIO
	}
	p := n.child(name)
	var before syscall.Stat_t
	existed := syscall.Lstat(p, &before) == nil
	ino, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	var h *handle
	if errno == 0 {
		h = n.lfs.wrap(fh, existed, flags)
	}
	ev := Event{Op: OpCreate, Path: n.lfs.rel(p)}
	if errno = n.answer(ev, errno); errno != 0 {
		if h != nil {
			h.Release(ctx)
		}
		return nil, nil, 0, errno
	}
	return ino, h, fuseFlags, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	if flags&syscall.O_TRUNC != 0 {
		if !n.lfs.enter() {
			fh.(fs.FileReleaser).Release(ctx)
			return nil, 0, syscall.EIO
		}
		h := n.lfs.wrap(fh, true, flags)
		if errno := n.answer(Event{Op: OpTruncate, Path: n.lfs.rel(n.backingPath())}, 0); errno != 0 {
			h.Release(ctx)
			return nil, 0, errno
		}
		return h, fuseFlags, 0
	}
	return n.lfs.wrap(fh, true, flags), fuseFlags, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.makeNode(ctx, name, func() (*fs.Inode, syscall.Errno) { return n.LoopbackNode.Mkdir(ctx, name, mode, out) })
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.makeNode(ctx, name, func() (*fs.Inode, syscall.Errno) { return n.LoopbackNode.Mknod(ctx, name, mode, rdev, out) })
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.makeNode(ctx, name, func() (*fs.Inode, syscall.Errno) { return n.LoopbackNode.Symlink(ctx, target, name, out) })
}

func (n *node) makeNode(ctx context.Context, name string, mk func() (*fs.Inode, syscall.Errno)) (*fs.Inode, syscall.Errno) {
	if !n.lfs.enter() {
		return nil, syscall.EIO
	}
	ino, errno := mk()
	if errno == 0 {
		n.lfs.created(n.child(name))
	}
	if errno = n.answer(Event{Op: OpCreate, Path: n.lfs.rel(n.child(name))}, errno); errno != 0 {
		return nil, errno
	}
	return ino, 0
}

// Tmpfile is refused: an unnamed file that is linked in later would need its own model.
func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if !n.lfs.enter() {
		return nil, syscall.EIO
	}
	ino, errno := n.LoopbackNode.Link(ctx, target, name, out)
	from := filepath.Join(n.lfs.backing, target.EmbeddedInode().Path(nil))
	if errno = n.answer(Event{Op: OpLink, Path: n.lfs.rel(from), To: n.lfs.rel(n.child(name))}, errno); errno != 0 {
		return nil, errno
	}
	return ino, 0
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if !n.lfs.enter() {
		return syscall.EIO
	}
	errno := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
	to := filepath.Join(n.lfs.backing, newParent.EmbeddedInode().Path(nil), newName)
	return n.answer(Event{Op: OpRename, Path: n.lfs.rel(n.child(name)), To: n.lfs.rel(to)}, errno)
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if !n.lfs.enter() {
		return syscall.EIO
	}
	errno := n.LoopbackNode.Unlink(ctx, name)
	return n.answer(Event{Op: OpRemove, Path: n.lfs.rel(n.child(name))}, errno)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if !n.lfs.enter() {
		return syscall.EIO
	}
	errno := n.LoopbackNode.Rmdir(ctx, name)
	return n.answer(Event{Op: OpRemove, Path: n.lfs.rel(n.child(name))}, errno)
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	_, sized := in.GetSize()
	if !sized {
		return n.LoopbackNode.Setattr(ctx, unwrap(f), in, out)
	}
	if !n.lfs.enter() {
		return syscall.EIO
	}
	errno := n.LoopbackNode.Setattr(ctx, unwrap(f), in, out)
	if errno == 0 {
		if h, ok := f.(*handle); ok {
			n.lfs.noteWhole(h.id)
		} else if id, err := n.lfs.idOfPath(n.backingPath()); err == nil {
			n.lfs.noteWhole(id)
		}
	}
	return n.answer(Event{Op: OpTruncate, Path: n.lfs.rel(n.backingPath())}, errno)
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.LoopbackNode.Getattr(ctx, unwrap(f), out)
}

// Fsync is reached for folders opened without a handle of ours; files sync through their handle.
func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	if h, ok := f.(*handle); ok {
		return h.Fsync(ctx, flags)
	}
	if d, ok := f.(*dirHandle); ok {
		return d.Fsyncdir(ctx, flags)
	}
	return syscall.ENOTSUP
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &dirHandle{inner: fh, n: n}, fuseFlags, 0
}

// dirHandle is an open folder: reads pass through, fsync makes its entries durable.
type dirHandle struct {
	inner fs.FileHandle
	n     *node
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	return d.inner.(fs.FileReaddirenter).Readdirent(ctx)
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if s, ok := d.inner.(fs.FileSeekdirer); ok {
		return s.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	if r, ok := d.inner.(fs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
	}
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if !d.n.lfs.enter() {
		return syscall.EIO
	}
	p := d.n.backingPath()
	errno := fs.ToErrno(d.n.lfs.syncDir(p))
	return d.n.answer(Event{Op: OpSyncDir, Path: d.n.lfs.rel(p)}, errno)
}

// unwrap gives the loopback node the loopback handle inside ours.
func unwrap(f fs.FileHandle) fs.FileHandle {
	if h, ok := f.(*handle); ok {
		return h.lf
	}
	return f
}
