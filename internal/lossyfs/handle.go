//go:build linux

package lossyfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// handle is an open file. It forwards to go-fuse's loopback file but deliberately does not offer
// its passthrough descriptor: with kernel FUSE passthrough, writes would bypass the bookkeeping.
type handle struct {
	lf  *fs.LoopbackFile
	fd  int
	id  uint64
	lfs *FS
}

var (
	_ fs.FileReader    = (*handle)(nil)
	_ fs.FileWriter    = (*handle)(nil)
	_ fs.FileFsyncer   = (*handle)(nil)
	_ fs.FileGetattrer = (*handle)(nil)
	_ fs.FileSetattrer = (*handle)(nil)
	_ fs.FileAllocater = (*handle)(nil)
	_ fs.FileLseeker   = (*handle)(nil)
	_ fs.FileFlusher   = (*handle)(nil)
	_ fs.FileReleaser  = (*handle)(nil)
)

// wrap turns the loopback handle of a just-opened file into ours. A file that did not exist
// before gets a new identity; O_TRUNC on an existing one is a pending change of the whole file.
func (f *FS) wrap(fh fs.FileHandle, existed bool, flags uint32) *handle {
	lf := fh.(*fs.LoopbackFile)
	fd, _ := lf.PassthroughFd()
	h := &handle{lf: lf, fd: fd, lfs: f}
	var st syscall.Stat_t
	if syscall.Fstat(fd, &st) == nil {
		f.mu.Lock()
		if existed {
			h.id = f.idOf(st.Ino)
		} else {
			h.id = f.newID(st.Ino)
		}
		f.mu.Unlock()
	}
	if existed && flags&syscall.O_TRUNC != 0 {
		f.noteWhole(h.id)
	}
	return h
}

func (h *handle) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return h.lf.Read(ctx, buf, off)
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if !h.lfs.enter() {
		return 0, syscall.EIO
	}
	n, errno := h.lf.Write(ctx, data, off)
	if n > 0 {
		h.lfs.noteWrite(h.id, off, data[:n])
	}
	if !h.lfs.leave(Event{Op: OpWrite, Path: h.path()}) {
		return 0, syscall.EIO
	}
	return n, errno
}

func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if !h.lfs.enter() {
		return syscall.EIO
	}
	errno := fs.ToErrno(h.lfs.syncFile(h.id, h.fd))
	if !h.lfs.leave(Event{Op: OpFsync, Path: h.path()}) {
		return syscall.EIO
	}
	return errno
}

func (h *handle) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	if !h.lfs.enter() {
		return syscall.EIO
	}
	errno := h.lf.Allocate(ctx, off, size, mode)
	if errno == 0 {
		h.lfs.noteWhole(h.id)
	}
	if !h.lfs.leave(Event{Op: OpTruncate, Path: h.path()}) {
		return syscall.EIO
	}
	return errno
}

func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.lf.Getattr(ctx, out)
}

// Setattr is reached through the node's Setattr, which does the bookkeeping.
func (h *handle) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return h.lf.Setattr(ctx, in, out)
}

func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return h.lf.Lseek(ctx, off, whence)
}

func (h *handle) Flush(ctx context.Context) syscall.Errno { return h.lf.Flush(ctx) }

func (h *handle) Release(ctx context.Context) syscall.Errno { return h.lf.Release(ctx) }

// path names the file for events: where its descriptor points now.
func (h *handle) path() string {
	if h.lfs.opts.Watch == nil {
		return ""
	}
	p, err := readlinkFd(h.fd)
	if err != nil {
		return ""
	}
	return h.lfs.rel(p)
}
