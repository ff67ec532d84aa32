// Package lossyfs is a FUSE file system for power-cut tests: a passthrough mount over a backing
// folder that remembers what was made durable and, at a simulated power cut, forgets the rest.
//
// A SIGKILL proves nothing about fsync: the kernel keeps the page cache, so a writer that never
// syncs survives it. A power cut does not. This package plays the disk of a machine that loses
// power, in the spirit of LazyFS (used by Jepsen and etcd's robustness tests).
//
// # Model of a disk
//
// Every inode (file, folder, symlink) gets an identity of its own when it is created through the
// mount, independent of the backing file system's inode numbers (which are reused).
//
//   - File contents. A file's durable content is what it held at its last fsync or fdatasync
//     (both are treated the same: fdatasync also makes the size durable, as on Linux). Writes,
//     truncations and fallocate since then are pending. A file that was never synced is durable
//     as an empty file.
//   - Folder entries. A folder's durable entries are the names (and which inode each name points
//     to) it held at its last fsync. Creates, renames (either side), unlinks, hard links and
//     mkdirs since then are pending, as POSIX allows and ext4 without a journal commit shows.
//     Syncing a file does not make its name durable, and syncing a folder does not sync the
//     files in it. A folder created since its parent's last sync is lost with everything in it.
//   - Metadata other than names and sizes (times, owners) is not modelled; a file's mode is kept
//     as it was when its folder was last synced.
//
// [FS.Cut] is a power cut: it kills the given processes with SIGKILL, unmounts, rebuilds the
// backing folder from the durable state alone and mounts it again. What a process wrote but did
// not sync is gone: contents and sizes go back to the last sync, pending folder changes are
// undone (a renamed file is back under its old name, a removed one is back, a created one is
// gone). With [Options.TearWrites], the last pending write of each file is torn instead of
// dropped: a prefix of it ending at a 512-byte sector boundary (possibly empty) lands on the
// durable content, as a disk that lost power mid-write leaves it.
//
// Files the calling process itself still holds open on the mount are closed by a cut, as power
// loss closes every file.
//
// A cut can be aimed: [Options.Watch] sees every mutating operation after it happened and before
// the caller is answered; returning true freezes the file system there (that operation and every
// later one never answer) until the next [FS.Cut]. So "power fails right after the rename of a
// seal" is one predicate.
//
// # Limits
//
// Reads are served from the backing folder, mmap included (direct I/O is off, so the kernel page
// cache serves mmap readers such as bbolt), and flock and fcntl locks are kept by the kernel for
// the mount: fine for processes on one machine. Writes through a writable shared mmap reach the
// file system as ordinary writes when the kernel writes the pages back. O_TMPFILE is refused.
// The processes under test must be other processes than the one serving the mount: a page fault
// on the mount from the serving process can deadlock with the Go runtime.
// The durable copies live in a shadow folder beside the backing one; the mount itself never
// syncs the backing folder, so it is fast and its own durability is not part of the model.
package lossyfs
